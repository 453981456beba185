//! LLM.int8()-style outlier decomposition (Dettmers et al. 2022) with a static calibration:
//! a calibration text runs through the model in its source format while every matrix records
//! the largest |input| of each column; columns over a threshold (6 in the paper) are moved out of
//! the matrix into an f32 side table before the rest is quantized to int8. The kernels add the
//! f32 columns' share in a second launch beside each matrix product (`kiln_kernels::linear`).
//!
//! The paper picks the columns per batch at run time, which needs the f16 weights of every
//! column kept; fixing them from calibration keeps only the chosen ones. Tables that are also
//! gathered from (token and position embeddings, a tied LM head) are quantized without outliers,
//! as bitsandbytes leaves the LM head out of the decomposition.

use kiln_kernels::weights::split_columns;
use kiln_kernels::{HostWeights, Weights};
use kiln_runtime::{Context, DType, Tensor};

use crate::architecture::Architecture;
use crate::error::Result;
use crate::matrix::NamedMatrix;
use crate::quantize::{Int8Scheme, quantize_int8};
use crate::session::Session;
use crate::step::Output;
use crate::tokenizer::Tokenizer;

/// The paper's activation threshold.
pub const DEFAULT_THRESHOLD: f32 = 6.0;
/// The default calibration text: the public-domain text in `docs/text` (its last tokens, away
/// from the first ones the quality report scores).
pub const CALIBRATION_TEXT: &str = include_str!("../../docs/text/founding-documents.txt");
/// Tokens of calibration text.
pub const CALIBRATION_TOKENS: usize = 256;
/// Rows per calibration step.
const CHUNK: usize = 64;

/// The largest |input| seen by each column of one matrix.
pub struct ColumnMaxima {
    pub name: String,
    pub absmax: Vec<f32>,
}

/// What the decomposition kept in f32 for one matrix.
#[derive(Clone, Debug)]
pub struct Kept {
    pub name: String,
    /// Input columns of the matrix.
    pub k: usize,
    /// The columns kept in f32, ascending.
    pub columns: Vec<u32>,
}

/// The whole model's decomposition.
#[derive(Clone, Debug)]
pub struct Decomposition {
    pub threshold: f32,
    /// Every matrix eligible for outliers (those never gathered from), in model order.
    pub matrices: Vec<Kept>,
}

impl Decomposition {
    /// (columns kept, columns of all eligible matrices).
    pub fn totals(&self) -> (usize, usize) {
        self.matrices
            .iter()
            .fold((0, 0), |(c, k), m| (c + m.columns.len(), k + m.k))
    }

    /// Matrices with at least one column kept.
    pub fn matrices_with_outliers(&self) -> usize {
        self.matrices
            .iter()
            .filter(|m| !m.columns.is_empty())
            .count()
    }

    /// Columns kept per matrix kind (the name without its `blk.N.` prefix), in first-seen order:
    /// (kind, matrices, columns kept, largest count in one matrix).
    pub fn by_kind(&self) -> Vec<(String, usize, usize, usize)> {
        let mut out: Vec<(String, usize, usize, usize)> = Vec::new();
        for m in &self.matrices {
            let kind = m.name.rsplit('.').next().unwrap_or(&m.name).to_string();
            let c = m.columns.len();
            match out.iter_mut().find(|e| e.0 == kind) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += c;
                    e.3 = e.3.max(c);
                }
                None => out.push((kind, 1, c, c)),
            }
        }
        out
    }

    /// One line for logs: columns kept, of how many, in how many matrices.
    pub fn summary(&self) -> String {
        let (kept, total) = self.totals();
        format!(
            "outlier decomposition at |x| > {}: {kept} of {total} input columns kept in f32 ({:.2}%), in {} of {} matrices",
            self.threshold,
            100.0 * kept as f64 / total.max(1) as f64,
            self.matrices_with_outliers(),
            self.matrices.len()
        )
    }
}

/// Runs `ids` through the model (prefill in chunks, every row through the LM head) and returns
/// the column maxima of every matrix that is never gathered from.
pub fn calibrate(
    ctx: &Context,
    model: &mut dyn Architecture,
    ids: &[u32],
) -> Result<Vec<ColumnMaxima>> {
    let mut probes: Vec<(String, Tensor)> = Vec::new();
    for m in model.matrices_mut() {
        if !m.gathered {
            let probe = ctx.zeros(DType::F32, &[m.matrix.k])?;
            m.matrix.set_probe(Some(probe.clone()));
            probes.push((m.name, probe));
        }
    }
    let run = (|| {
        let model: &dyn Architecture = model;
        let mut session = Session::new(ctx, model, 1, ids.len().max(1), CHUNK)?;
        for chunk in ids.chunks(CHUNK) {
            let rows: Vec<(usize, u32)> = chunk.iter().map(|&t| (0, t)).collect();
            let select: Vec<usize> = (0..rows.len()).collect();
            session.step(ctx, model, &rows, &select, Output::Argmax)?;
        }
        probes
            .iter()
            .map(|(name, probe)| {
                Ok(ColumnMaxima {
                    name: name.clone(),
                    absmax: ctx.read::<f32>(probe)?,
                })
            })
            .collect::<Result<Vec<_>>>()
    })();
    for m in model.matrices_mut() {
        m.matrix.set_probe(None);
    }
    run
}

/// Quantizes every matrix of the model to int8 under `scheme`, first moving the columns whose
/// calibration maximum exceeds `threshold` into f32 (matrices never gathered from only).
pub fn decompose(
    ctx: &Context,
    model: &mut dyn Architecture,
    scheme: Int8Scheme,
    threshold: f32,
    maxima: &[ColumnMaxima],
) -> Result<Decomposition> {
    let mut matrices = Vec::new();
    for matrix in model.matrices_mut() {
        let parts = matrix.quant_parts();
        let NamedMatrix {
            name,
            matrix,
            gathered,
            ..
        } = matrix;
        let (host, bias) = matrix.download(ctx)?;
        let (n, k) = (host.n, host.k);
        let columns: Vec<u32> = match maxima.iter().find(|m| m.name == name) {
            Some(m) if !gathered => (0..k as u32)
                .filter(|&c| m.absmax[c as usize] > threshold)
                .collect(),
            _ => Vec::new(),
        };
        let mut values = host.dequantize();
        let kept = (!columns.is_empty()).then(|| split_columns(&mut values, n, k, &columns));
        // Each stacked projection gets its own scales, as it would loaded on its own.
        let main = parts
            .iter()
            .map(|rows| quantize_int8(&values[rows.start * k..rows.end * k], rows.len(), k, scheme))
            .collect::<kiln_kernels::Result<Vec<_>>>()?;
        let mut next = Weights::upload(ctx, &HostWeights::stack(&main)?)?;
        if let Some(kept) = kept {
            next = next.with_outliers(ctx, &columns, &kept)?;
        }
        if let Some(b) = bias {
            next = next.with_bias(ctx, &b)?;
        }
        matrix.weights = next;
        if !gathered {
            matrices.push(Kept { name, k, columns });
        }
    }
    Ok(Decomposition {
        threshold,
        matrices,
    })
}

/// The last [`CALIBRATION_TOKENS`] tokens of [`CALIBRATION_TEXT`] (fewer if the model's context
/// of `n_ctx` positions is shorter).
pub fn calibration_ids(tokenizer: &Tokenizer, n_ctx: usize) -> Result<Vec<u32>> {
    let ids = tokenizer.encode(CALIBRATION_TEXT)?;
    let n = CALIBRATION_TOKENS.min(n_ctx).min(ids.len());
    Ok(ids[ids.len() - n..].to_vec())
}

/// Calibrates a model in its source format on `ids` ([`calibration_ids`]) and decomposes it.
pub fn apply(
    ctx: &Context,
    model: &mut dyn Architecture,
    ids: &[u32],
    scheme: Int8Scheme,
    threshold: f32,
) -> Result<Decomposition> {
    let maxima = calibrate(ctx, model, ids)?;
    decompose(ctx, model, scheme, threshold, &maxima)
}
