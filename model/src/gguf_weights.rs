//! GGUF tensors onto the device: matrices keep their block format (dequantized in the kernels),
//! vectors (norm weights, biases) become f32. Shared by every architecture read from GGUF.

use kiln_kernels::{HostWeights, Weights};
use kiln_runtime::{Context, DType, Tensor};

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::matrix::Matrix;
use crate::quantize::Quant;

/// The vocabulary size: `ARCH.vocab_size`, or the token embedding's rows.
pub(crate) fn n_vocab(g: &GgufFile, arch: &str) -> Result<usize> {
    match g.u32(&format!("{arch}.vocab_size")) {
        Ok(v) => Ok(v as usize),
        Err(_) => Ok(g
            .tensor("token_embd.weight")?
            .dims
            .get(1)
            .copied()
            .unwrap_or(0) as usize),
    }
}

/// Uploads a `[n, k]` matrix (GGUF dims `[k, n]`) in its own format or converted to `quant`.
pub(crate) fn matrix(
    ctx: &Context,
    g: &GgufFile,
    name: &str,
    n: usize,
    k: usize,
    quant: Quant,
) -> Result<Weights> {
    Ok(Weights::upload(ctx, &host_matrix(g, name, n, k, quant)?)?)
}

/// The LM head `output.weight` (`[n_vocab, n_embd]`), or `None` where the file ties it to the
/// token embedding.
pub(crate) fn lm_head(
    ctx: &Context,
    g: &GgufFile,
    n_vocab: usize,
    n_embd: usize,
    quant: Quant,
) -> Result<Option<Matrix>> {
    if !g.has_tensor("output.weight") {
        return Ok(None);
    }
    let w = matrix(ctx, g, "output.weight", n_vocab, n_embd, quant)?;
    Ok(Some(Matrix::new(w)))
}

/// A `[n, k]` matrix (GGUF dims `[k, n]`) on the host, in its own format or converted to `quant`.
pub(crate) fn host_matrix(
    g: &GgufFile,
    name: &str,
    n: usize,
    k: usize,
    quant: Quant,
) -> Result<HostWeights> {
    let t = g.tensor(name)?;
    g.check_dims(t, &[k as u64, n as u64])?;
    let Some(format) = t.ggml_type.format() else {
        return Err(ModelError::UnsupportedTensorType {
            path: g.path.clone(),
            tensor: name.into(),
            ggml_type: t.ggml_type.to_string(),
        });
    };
    // A block format needs whole blocks per row.
    format.check_k(k)?;
    let data = g.tensor_data(t)?;
    Ok(quant.apply(HostWeights::new(format, n, k, data.to_vec())?)?)
}

/// An f32 vector of `n` values (norm weights, biases), dequantized from any type Kiln reads.
pub(crate) fn vector_values(g: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>> {
    let t = g.tensor(name)?;
    g.check_dims(t, &[n as u64])?;
    let data = g.tensor_data(t)?;
    let unsupported = || ModelError::UnsupportedTensorType {
        path: g.path.clone(),
        tensor: name.into(),
        ggml_type: t.ggml_type.to_string(),
    };
    let format = t.ggml_type.format().ok_or_else(unsupported)?;
    if format == kiln_kernels::WeightFormat::F32 {
        return Ok(bytemuck::pod_collect_to_vec(data));
    }
    Ok(HostWeights::new(format, 1, n, data.to_vec())?.row(0))
}

/// Uploads an f32 vector of `n` values.
pub(crate) fn vector(ctx: &Context, g: &GgufFile, name: &str, n: usize) -> Result<Tensor> {
    Ok(ctx.upload(&vector_values(g, name, n)?, DType::F32, &[n])?)
}
