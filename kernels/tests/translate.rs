//! Every shader variant a launcher can ask for is parsed and validated by naga, then translated to
//! SPIR-V (Vulkan), MSL (Metal) and HLSL (DX12), so breakage on any backend shows on Linux CI
//! without a GPU.

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
