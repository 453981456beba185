//! Weight quantization at load time: every matrix (embeddings and LM head included) converted from
//! its source format (f32, f16 or a GGUF block format, dequantized first) into int8, or into plain
//! f32 / f16. Norm weights and biases stay f32.
//!
//! int8 follows the usual absmax and zero-point schemes (Jacob et al. 2018; Dettmers et al.
//! 2022): a group of values `w` is stored as `q = round(w / s + z)` and read as `s · (q − z)`.
//! - symmetric (absmax): `s = max|w| / 127`, `z = 0`, `q ∈ [−127, 127]`;
//! - asymmetric (zero point): `s = (max w − min w) / 255`, `z = round(−128 − min w / s)`,
//!   `q ∈ [−128, 127]`, so the group's whole range is used and 0 stays exact.
//!
//! A group is the whole tensor, one output row (channel), or `g` consecutive values of a row.
//! Rounding to nearest bounds the error of every value by `s / 2`.

use std::fmt;
use std::str::FromStr;

use half::f16;
use kiln_kernels::{HostWeights, WeightFormat};

/// Which values share one int8 scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale for the whole matrix.
    Tensor,
    /// One scale per output row.
    Channel,
    /// One scale per `g` consecutive values of a row (`g` a multiple of 4).
    Group(usize),
}

/// An int8 scheme: granularity, and whether groups carry a zero point (asymmetric).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Int8Scheme {
    pub granularity: Granularity,
    pub zero_point: bool,
}

/// What the loader stores matrices as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Quant {
    /// The file's own format.
    #[default]
    None,
    /// Dequantized to f32.
    F32,
    /// Converted to f16.
    F16,
    Int8(Int8Scheme),
}

impl Quant {
    /// Every scheme the quality report compares, in its order.
    pub fn all() -> Vec<Quant> {
        let mut all = vec![Quant::None, Quant::F32, Quant::F16];
        for zero_point in [false, true] {
            for granularity in [
                Granularity::Tensor,
                Granularity::Channel,
                Granularity::Group(128),
                Granularity::Group(64),
                Granularity::Group(32),
            ] {
                all.push(Quant::Int8(Int8Scheme {
                    granularity,
                    zero_point,
                }));
            }
        }
        all
    }

    /// `host` in this format (unchanged for [`Quant::None`]).
    pub fn apply(self, host: HostWeights) -> kiln_kernels::Result<HostWeights> {
        let (n, k) = (host.n, host.k);
        match self {
            Quant::None => Ok(host),
            Quant::F32 if host.format == WeightFormat::F32 => Ok(host),
            Quant::F32 => HostWeights::f32(n, k, &host.dequantize()),
            Quant::F16 if host.format == WeightFormat::F16 => Ok(host),
            Quant::F16 => {
                let values: Vec<f16> = host.dequantize().into_iter().map(f16::from_f32).collect();
                HostWeights::f16(n, k, &values)
            }
            Quant::Int8(scheme) => quantize_int8(&host.dequantize(), n, k, scheme),
        }
    }
}

impl fmt::Display for Quant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quant::None => f.write_str("none"),
            Quant::F32 => f.write_str("f32"),
            Quant::F16 => f.write_str("f16"),
            Quant::Int8(s) => {
                f.write_str(if s.zero_point { "int8-zp-" } else { "int8-" })?;
                match s.granularity {
                    Granularity::Tensor => f.write_str("tensor"),
                    Granularity::Channel => f.write_str("channel"),
                    Granularity::Group(g) => write!(f, "g{g}"),
                }
            }
        }
    }
}

impl FromStr for Quant {
    type Err = String;

    /// `none`, `f32`, `f16`, or `int8-[zp-]{tensor,channel,gN}` (N a multiple of 4, e.g. 32, 64, 128).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "unknown quantization {s:?}: expected none, f32, f16, or int8-[zp-]{{tensor,channel,g32,g64,g128}}"
            )
        };
        match s {
            "none" => return Ok(Quant::None),
            "f32" => return Ok(Quant::F32),
            "f16" => return Ok(Quant::F16),
            _ => {}
        }
        let rest = s.strip_prefix("int8-").ok_or_else(bad)?;
        let (zero_point, rest) = match rest.strip_prefix("zp-") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let granularity = match rest {
            "tensor" => Granularity::Tensor,
            "channel" => Granularity::Channel,
            g => {
                let size: usize = g
                    .strip_prefix('g')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad)?;
                if size == 0 || !size.is_multiple_of(4) {
                    return Err(format!(
                        "int8 group size {size} must be a positive multiple of 4"
                    ));
                }
                Granularity::Group(size)
            }
        };
        Ok(Quant::Int8(Int8Scheme {
            granularity,
            zero_point,
        }))
    }
}

/// Scale and zero point of one group of values.
fn group_params(values: &[f32], zero_point: bool) -> (f32, f32) {
    if zero_point {
        let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let s = (hi - lo) / 255.0;
        if s > 0.0 {
            (s, (-128.0 - lo / s).round())
        } else {
            // A constant group: scale it like absmax so the constant is exact.
            (lo.abs().max(f32::MIN_POSITIVE) / 127.0, 0.0)
        }
    } else {
        let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        (if amax > 0.0 { amax / 127.0 } else { 1.0 }, 0.0)
    }
}

/// `values` (`[n, k]` row-major) quantized to int8 under `scheme`.
pub fn quantize_int8(
    values: &[f32],
    n: usize,
    k: usize,
    scheme: Int8Scheme,
) -> kiln_kernels::Result<HostWeights> {
    // The shader's group runs along a row; a per-tensor scale is a per-row scale repeated.
    let group = match scheme.granularity {
        Granularity::Tensor | Granularity::Channel => k,
        Granularity::Group(g) => g.min(k),
    };
    let groups_per_row = k.div_ceil(group);
    let tensor = (scheme.granularity == Granularity::Tensor)
        .then(|| group_params(values, scheme.zero_point));
    let (lo, hi) = if scheme.zero_point {
        (-128.0, 127.0)
    } else {
        (-127.0, 127.0)
    };
    let mut q = vec![0i8; n * k];
    let mut scales = Vec::with_capacity(n * groups_per_row);
    let mut zeros = Vec::with_capacity(n * groups_per_row);
    for r in 0..n {
        for g in 0..groups_per_row {
            let range = r * k + g * group..r * k + ((g + 1) * group).min(k);
            let (s, z) =
                tensor.unwrap_or_else(|| group_params(&values[range.clone()], scheme.zero_point));
            for i in range {
                q[i] = (values[i] / s + z).round().clamp(lo, hi) as i8;
            }
            scales.push(s);
            zeros.push(z);
        }
    }
    HostWeights::int8(n, k, group, &q, scales, scheme.zero_point.then_some(zeros))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, k: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // Mostly small values with a few large ones, as trained weights have.
        (0..n * k)
            .map(|_| {
                let v: f32 = rng.random_range(-0.05..0.05);
                if rng.random_range(0..100) == 0 {
                    v * 40.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// Every value comes back within half a step of its group's scale, where the step is what the
    /// scheme's formula gives for that group.
    #[test]
    fn round_trip_error_is_within_half_a_step() {
        for &(n, k) in &[(1, 1), (3, 7), (5, 64), (17, 96), (4, 576), (2, 1000)] {
            let values = random(n, k, (n * 1000 + k) as u64);
            for quant in Quant::all() {
                let Quant::Int8(scheme) = quant else { continue };
                let host = quantize_int8(&values, n, k, scheme).unwrap();
                let back = host.dequantize();
                let group = match scheme.granularity {
                    Granularity::Tensor | Granularity::Channel => k,
                    Granularity::Group(g) => g.min(k),
                };
                for (i, (&w, &d)) in values.iter().zip(&back).enumerate() {
                    let members: Vec<f32> = match scheme.granularity {
                        Granularity::Tensor => values.clone(),
                        _ => {
                            let (r, c) = (i / k, i % k);
                            let start = r * k + c / group * group;
                            values[start..(start + group).min(r * k + k)].to_vec()
                        }
                    };
                    let step = if scheme.zero_point {
                        let lo = members.iter().copied().fold(f32::INFINITY, f32::min);
                        let hi = members.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        (hi - lo) / 255.0
                    } else {
                        members.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0
                    };
                    let bound = step / 2.0 * (1.0 + 1e-5) + 1e-7;
                    assert!(
                        (w - d).abs() <= bound,
                        "{quant} [{n} x {k}] value {i}: {w} came back as {d} (bound {bound})"
                    );
                }
            }
        }
    }

    #[test]
    fn zero_point_keeps_zero_and_constants_exact() {
        let scheme = Int8Scheme {
            granularity: Granularity::Group(4),
            zero_point: true,
        };
        let values = [0.0, 0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0];
        let back = quantize_int8(&values, 1, 12, scheme).unwrap().dequantize();
        assert_eq!(back[0], 0.0);
        assert!(
            (back[4..8].iter().all(|&v| (v - 3.0).abs() < 1e-6)),
            "{back:?}"
        );
        assert!(back[8..].iter().all(|&v| v == 0.0), "{back:?}");
    }

    #[test]
    fn names_parse_and_print_back() {
        for quant in Quant::all() {
            assert_eq!(quant.to_string().parse::<Quant>().unwrap(), quant);
        }
        assert_eq!(
            "int8-zp-g64".parse::<Quant>().unwrap(),
            Quant::Int8(Int8Scheme {
                granularity: Granularity::Group(64),
                zero_point: true
            })
        );
        for bad in ["int4", "int8-g0", "int8-g6", "int8-zp", "int8-gx"] {
            assert!(bad.parse::<Quant>().is_err(), "{bad}");
        }
    }

    #[test]
    fn f32_and_f16_conversions_keep_values() {
        let values = random(3, 40, 1);
        let host = HostWeights::f32(3, 40, &values).unwrap();
        assert_eq!(Quant::F32.apply(host.clone()).unwrap().dequantize(), values);
        let half = Quant::F16.apply(host).unwrap();
        assert_eq!(half.format, WeightFormat::F16);
        for (a, b) in half.dequantize().iter().zip(&values) {
            assert!((a - b).abs() <= b.abs() * 1e-3);
        }
    }
}
