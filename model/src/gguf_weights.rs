//! GGUF tensors onto the device: matrices keep their block format (dequantized in the kernels),
//! vectors (norm weights, biases) become f32. Shared by every architecture read from GGUF.

use kiln_kernels::{HostWeights, WeightFormat, Weights};
use kiln_runtime::{Context, DType, Tensor};

use crate::error::{ModelError, Result};
use crate::gguf::{GgmlType, GgufFile};
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
    let format = match t.ggml_type {
        GgmlType::F32 => WeightFormat::F32,
        GgmlType::F16 => WeightFormat::F16,
        GgmlType::Q8_0 => WeightFormat::Q8_0,
        GgmlType::Q4_0 => WeightFormat::Q4_0,
        GgmlType::Q4_1 => WeightFormat::Q4_1,
        other => {
            return Err(ModelError::UnsupportedTensorType {
                path: g.path.clone(),
                tensor: name.into(),
                ggml_type: other.to_string(),
            });
        }
    };
    // A block format needs whole blocks per row.
    format.check_k(k)?;
    let data = g.tensor_data(t)?;
    Ok(quant.apply(HostWeights::new(format, n, k, data.to_vec())?)?)
}

/// An f32 vector of `n` values (norm weights, biases), converting F16.
pub(crate) fn vector_values(g: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>> {
    let t = g.tensor(name)?;
    g.check_dims(t, &[n as u64])?;
    let data = g.tensor_data(t)?;
    match t.ggml_type {
        GgmlType::F32 => Ok(bytemuck::pod_collect_to_vec(data)),
        GgmlType::F16 => Ok(data
            .chunks(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        other => Err(ModelError::UnsupportedTensorType {
            path: g.path.clone(),
            tensor: name.into(),
            ggml_type: other.to_string(),
        }),
    }
}

/// Uploads an f32 vector of `n` values.
pub(crate) fn vector(ctx: &Context, g: &GgufFile, name: &str, n: usize) -> Result<Tensor> {
    Ok(ctx.upload(&vector_values(g, name, n)?, DType::F32, &[n])?)
}
