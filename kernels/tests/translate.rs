//! Every shader variant a launcher can ask for is parsed and validated by naga, then translated to
//! SPIR-V (Vulkan), MSL (Metal) and HLSL (DX12), so breakage on any backend shows on Linux CI
//! without a GPU: the variants each family lists (the matrix and attention families enumerate
//! theirs through the same config function their launchers use), and every variant a run of the
//! suite really launched (recorded with `KILN_RECORD_VARIANTS`; `.ci/run` runs the suite under
//! both device plans, then this file's ignored test).

use std::collections::BTreeSet;

use kiln_runtime::Defines;
use kiln_runtime::shader::preprocess;

fn translate(name: &str, variant: &str, wgsl: &str, entries: &[&str]) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| e.emit_to_string(wgsl))?;
    for entry in entries {
        if !module.entry_points.iter().any(|e| e.name == *entry) {
            return Err(format!("no entry point {entry}"));
        }
    }
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string(wgsl))?;

    let spv = naga::back::spv::write_vec(&module, &info, &Default::default(), None)
        .map_err(|e| format!("SPIR-V: {e}"))?;
    assert!(spv.len() > 5, "{name} [{variant}]: empty SPIR-V");

    let msl_options = naga::back::msl::Options {
        lang_version: (2, 4),
        ..Default::default()
    };
    naga::back::msl::write_string(&module, &info, &msl_options, &Default::default())
        .map_err(|e| format!("MSL: {e}"))?;

    let hlsl_options = naga::back::hlsl::Options {
        shader_model: naga::back::hlsl::ShaderModel::V6_2,
        ..Default::default()
    };
    let pipeline_options = Default::default();
    let mut hlsl = String::new();
    naga::back::hlsl::Writer::new(&mut hlsl, &hlsl_options, &pipeline_options)
        .write(&module, &info, None)
        .map_err(|e| format!("HLSL: {e}"))?;
    Ok(())
}

#[test]
fn every_variant_translates_for_vulkan_metal_and_dx12() {
    let mut failures = Vec::new();
    let mut count = 0;
    for family in kiln_kernels::all_shader_variants() {
        assert!(
            !family.variants.is_empty(),
            "{} lists no variants",
            family.shader.name
        );
        for (defines, entries) in &family.variants {
            count += 1;
            let result = preprocess(&family.shader, defines)
                .map_err(|e| e.to_string())
                .and_then(|wgsl| {
                    translate(family.shader.name, &defines.to_string(), &wgsl, entries)
                });
            if let Err(e) = result {
                failures.push(format!("{} [{defines}]: {e}", family.shader.name));
            }
        }
    }
    eprintln!("translated {count} shader variants");
    assert!(
        failures.is_empty(),
        "{} of {count} variants failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Parses `Defines`' display form (`NAME=1,OTHER=64`, or `default`).
fn parse_defines(text: &str) -> Defines {
    let mut d = Defines::new();
    if text == "default" {
        return d;
    }
    for pair in text.split(',') {
        let (name, value) = pair.split_once('=').expect("NAME=VALUE");
        let name: &'static str = Box::leak(name.to_string().into_boxed_str());
        d = d.set(name, value.parse().expect("a u32 value"));
    }
    d
}

/// Every (shader, entry, defines) the suite launched, as recorded in `KILN_RECORD_VARIANTS`,
/// translates for every backend. Ignored in a plain `cargo test`: it needs the file a run of the
/// suite writes (`.ci/run` runs it after the suite with `--ignored`).
#[test]
#[ignore = "needs KILN_RECORD_VARIANTS written by a run of the suite (.ci/run)"]
fn every_launched_variant_translates() {
    let path = std::env::var("KILN_RECORD_VARIANTS").expect("KILN_RECORD_VARIANTS names the file");
    let text = std::fs::read_to_string(&path).expect("the recorded variants");
    let launched: BTreeSet<(String, String, String)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?.into(), f.next()?.into(), f.next()?.into()))
        })
        .collect();
    assert!(!launched.is_empty(), "{path} records no variant");
    let families = kiln_kernels::all_shader_variants();
    let (mut failures, mut unlisted) = (Vec::new(), 0);
    // Families whose launchers and lists derive their defines from one config function: every
    // variant they launch must be among those the lists enumerate.
    let derived = [
        "matmul",
        "matvec",
        "matvec_gpu",
        "outliers",
        "embedding",
        "probe",
        "attention",
        "attention_cpu",
    ];
    let mut missing = Vec::new();
    for (shader, entry, defines) in &launched {
        let family = families
            .iter()
            .find(|f| f.shader.name == shader)
            .unwrap_or_else(|| panic!("{shader} is not among kiln_kernels::all_shader_variants"));
        let d = parse_defines(defines);
        let listed = family
            .variants
            .iter()
            .any(|(v, entries)| *v == d && entries.contains(&entry.as_str()));
        unlisted += usize::from(!listed);
        if !listed && derived.contains(&shader.as_str()) {
            missing.push(format!("{shader}:{entry} [{defines}]"));
        }
        let entry: &'static str = Box::leak(entry.clone().into_boxed_str());
        let result = preprocess(&family.shader, &d)
            .map_err(|e| e.to_string())
            .and_then(|wgsl| translate(shader, defines, &wgsl, &[entry]));
        if let Err(e) = result {
            failures.push(format!("{shader}:{entry} [{defines}]: {e}"));
        }
    }
    eprintln!(
        "translated {} launched variants ({unlisted} not in the families' lists)",
        launched.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        missing.is_empty(),
        "launched but not enumerated by their config functions:\n{}",
        missing.join("\n")
    );
}
