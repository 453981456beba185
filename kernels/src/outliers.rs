//! Outlier columns kept in f32 beside a matrix's main part, and the calibration probe that finds
//! them: `shaders/outliers.wgsl`. The matrix kernels call [`finish`] after their main pass, so a
//! [`Weights`] with outlier columns or a probe works in every launch path.

use bytemuck::{Pod, Zeroable};
use kiln_runtime::{Binding, Context, DType, Defines, Dispatch, Recorder, Shader, Tensor};

use crate::outputs::{OUTPUTS_WGSL, Outputs};
use crate::weights::Weights;
use crate::{KernelError, Result, ShaderVariants, ensure, expect, groups_for};

pub const SHADER: Shader = Shader {
    name: "outliers",
    parts: &[OUTPUTS_WGSL, include_str!("../../shaders/outliers.wgsl")],
};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    c: u32,
    /// Columns of the whole product (`n`)
    ldy: u32,
    /// First columns of outputs 1 and 2 of a stacked matrix
    cut1: u32,
    cut2: u32,
    _pad: u32,
}

/// Input columns of a matrix held in f32: `values` is `[n, cols.len()]`.
pub struct Outliers {
    cols: Vec<u32>,
    cols_t: Tensor,
    values: Tensor,
}

impl Outliers {
    /// Columns `cols` (distinct, each below `k`) of an `[n, k]` matrix, their values `[n, c]`.
    pub fn upload(ctx: &Context, n: usize, k: usize, cols: &[u32], values: &[f32]) -> Result<Self> {
        let bad = |message: String| KernelError::Shape {
            kernel: "outliers",
            message,
        };
        if cols.is_empty() || values.len() != n * cols.len() {
            return Err(bad(format!(
                "{} outlier values for {n} rows of {} columns",
                values.len(),
                cols.len()
            )));
        }
        let mut seen = vec![false; k];
        for &c in cols {
            if c as usize >= k || std::mem::replace(&mut seen[c as usize], true) {
                return Err(bad(format!(
                    "outlier column {c} is repeated or outside 0..{k}"
                )));
            }
        }
        Ok(Self {
            cols: cols.to_vec(),
            cols_t: ctx.upload(cols, DType::U32, &[cols.len()])?,
            values: ctx.upload_f32(values, &[n, cols.len()])?,
        })
    }

    /// The input columns kept in f32.
    pub fn columns(&self) -> &[u32] {
        &self.cols
    }

    pub fn size_bytes(&self) -> u64 {
        self.cols_t.size_bytes() + self.values.size_bytes()
    }
}

/// Moves columns `cols` of `values` (`[n, k]`) out into an `[n, c]` matrix, leaving zeros.
pub fn split_columns(values: &mut [f32], n: usize, k: usize, cols: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * cols.len());
    for r in 0..n {
        for &c in cols {
            out.push(std::mem::take(&mut values[r * k + c as usize]));
        }
    }
    out
}

/// What every matrix kernel records after its main pass over `w`: the outlier columns' share of
/// `y`, and the calibration probe's column maxima of `x`.
pub(crate) fn finish(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Weights,
    ys: &Outputs<'_>,
) -> Result<()> {
    let m = x.len() / w.k;
    if let Some(o) = w.outliers() {
        let (cut1, cut2) = ys.cuts();
        let params = Params {
            m: m as u32,
            n: w.n as u32,
            k: w.k as u32,
            c: o.cols.len() as u32,
            ldy: w.n as u32,
            cut1,
            cut2,
            _pad: 0,
        };
        let mut bindings = vec![
            Binding::new(1, x),
            Binding::weight(0, &o.cols_t),
            Binding::weight(1, &o.values),
        ];
        bindings.extend(ys.bindings());
        rec.dispatch(&Dispatch {
            shader: &SHADER,
            entry: "outlier_add",
            defines: &ys.defines(Defines::new()),
            params: bytemuck::bytes_of(&params),
            bindings: &bindings,
            workgroups: groups_for(m * w.n, 256)?,
        })?;
    }
    if let Some(probe) = w.probe() {
        column_absmax(rec, x, w.k, probe)?;
    }
    Ok(())
}

/// `probe[c] = max(probe[c], max_m |x[m, c]|)` over the rows of `x` (`[M, K]`).
pub fn column_absmax(rec: &mut Recorder<'_>, x: &Tensor, k: usize, probe: &Tensor) -> Result<()> {
    ensure(
        x.dtype() == DType::F32 && k > 0 && x.len().is_multiple_of(k),
        "column_absmax",
        || format!("x must be f32 rows of {k} values, got {:?}", x.shape()),
    )?;
    expect(probe, "column_absmax", "probe", DType::F32, k)?;
    let params = Params {
        m: (x.len() / k) as u32,
        n: 0,
        k: k as u32,
        c: 0,
        ldy: 0,
        cut1: 0,
        cut2: 0,
        _pad: 0,
    };
    rec.dispatch(&Dispatch {
        shader: &SHADER,
        entry: "column_absmax",
        defines: &Defines::new(),
        params: bytemuck::bytes_of(&params),
        bindings: &[Binding::new(1, x), Binding::new(2, probe)],
        workgroups: groups_for(k, 256)?,
    })?;
    Ok(())
}

/// CPU reference of [`column_absmax`] from a zero probe.
pub fn column_absmax_ref(x: &[f32], k: usize) -> Vec<f32> {
    let mut out = vec![0f32; k];
    for row in x.chunks(k) {
        for (o, v) in out.iter_mut().zip(row) {
            *o = o.max(v.abs());
        }
    }
    out
}

pub fn shader_variants() -> ShaderVariants {
    ShaderVariants {
        shader: SHADER,
        variants: vec![
            (Defines::new(), vec!["outlier_add", "column_absmax"]),
            (Defines::new().flag("SPLIT_Y"), vec!["outlier_add"]),
            (
                Defines::new().flag("SPLIT_Y").flag("SPLIT_Y3"),
                vec!["outlier_add"],
            ),
        ],
    }
}
