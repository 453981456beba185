//! A [`Profile`] read by kernel and weight format: the launchers know which defines name a
//! weight format, the runtime does not.

use kiln_runtime::Profile;

use crate::weights::format::WeightFormat;

/// One kernel's launches over the weights of one format (or of none).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelRow {
    /// `shader:entry`
    pub kernel: String,
    /// The weight format the launches read ([`weight_format_name`]), "" for kernels without
    /// weights.
    pub weights: &'static str,
    pub launches: usize,
    pub seconds: f64,
}

/// The profile's kernels summed over variants that differ in anything but the weight format,
/// the most time first.
pub fn by_kernel(profile: &Profile) -> Vec<KernelRow> {
    let mut rows: Vec<KernelRow> = Vec::new();
    for k in &profile.kernels {
        let weights = weight_format_name(&k.variant).unwrap_or("");
        match rows
            .iter_mut()
            .find(|r| r.kernel == k.kernel && r.weights == weights)
        {
            Some(r) => {
                r.launches += k.launches;
                r.seconds += k.seconds;
            }
            None => rows.push(KernelRow {
                kernel: k.kernel.clone(),
                weights,
                launches: k.launches,
                seconds: k.seconds,
            }),
        }
    }
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    rows
}

/// The weight format a pipeline variant reads, from its defines as a profile records them
/// (`NAME=value,...`): "f32", "f16", "q8_0", "q4_0", "q4_1" or "int8".
pub fn weight_format_name(variant: &str) -> Option<&'static str> {
    let on: Vec<&str> = variant
        .split(',')
        .filter_map(|d| d.strip_suffix("=1"))
        .collect();
    [
        (WeightFormat::F32, "f32"),
        (WeightFormat::F16, "f16"),
        (WeightFormat::Q8_0, "q8_0"),
        (WeightFormat::Q4_0, "q4_0"),
        (WeightFormat::Q4_1, "q4_1"),
        (
            WeightFormat::Int8 {
                group: 0,
                zero_point: false,
            },
            "int8",
        ),
    ]
    .into_iter()
    .find(|(format, _)| on.contains(&format.flag()))
    .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_runtime::KernelTime;

    #[test]
    fn variants_are_summed_by_kernel_and_weight_format() {
        let profile = Profile {
            kernels: vec![
                KernelTime::new("matvec:matvec", "BATCH=1,W_Q4_1=1", 3, 0.3),
                KernelTime::new("norm:rms_norm", "default", 2, 0.1),
                KernelTime::new("matvec:matvec", "BATCH=1,W_Q4_1=1,X_GLU=1", 1, 0.2),
                KernelTime::new("matvec:matvec", "BATCH=1,W_Q8_0=1,W_U64=1", 1, 0.4),
            ],
            unmeasured: 0,
        };
        let rows = by_kernel(&profile);
        let got: Vec<(&str, &str, usize)> = rows
            .iter()
            .map(|r| (r.kernel.as_str(), r.weights, r.launches))
            .collect();
        assert_eq!(
            got,
            [
                ("matvec:matvec", "q4_1", 4),
                ("matvec:matvec", "q8_0", 1),
                ("norm:rms_norm", "", 2),
            ]
        );
        assert!((rows[0].seconds - 0.5).abs() < 1e-12);
        assert_eq!(weight_format_name("W_I8=1,W_ZP=1"), Some("int8"));
        assert_eq!(weight_format_name("W_F16=1,F16_QUADS=1"), Some("f16"));
        assert_eq!(weight_format_name("default"), None);
    }
}
