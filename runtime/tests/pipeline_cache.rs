//! The pipeline cache on disk: written when a context ends, read by the next one, and a damaged
//! file is ignored (then replaced), never trusted.

use kiln_runtime::testing::SKIP_VAR;
use kiln_runtime::{Context, Defines, DeviceOptions, Shader};

const SHADER: Shader = Shader {
    name: "argmax",
    parts: &[include_str!("../../shaders/argmax.wgsl")],
};

fn context(dir: &std::path::Path) -> Option<Context> {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        return None;
    }
    let mut options = DeviceOptions::from_env().unwrap();
    options.pipeline_cache = Some(dir.to_path_buf());
    options.pipeline_cache_on_cpu = true;
    let ctx = Context::new(&options).unwrap();
    let defines = Defines::new().set("WG", 256);
    ctx.pipeline(&SHADER, "argmax", &defines).unwrap();
    Some(ctx)
}

#[test]
fn pipelines_are_kept_on_disk_and_a_damaged_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let Some(first) = context(dir.path()) else {
        return;
    };
    assert!(!first.pipeline_cache_loaded());
    let Some(file) = first.pipeline_cache_file().map(|f| f.to_path_buf()) else {
        // wgpu keeps pipeline caches on Vulkan only.
        assert_ne!(first.info.backend, kiln_runtime::wgpu::Backend::Vulkan);
        return;
    };
    drop(first);
    let written = std::fs::read(&file).unwrap();
    assert!(written.len() > 4, "{} bytes", written.len());

    let second = context(dir.path()).unwrap();
    assert!(second.pipeline_cache_loaded());
    drop(second);

    // One flipped bit fails the checksum: the data is not handed to the driver, the pipeline
    // still compiles, and the file is rewritten whole.
    let mut damaged = written.clone();
    *damaged.last_mut().unwrap() ^= 1;
    std::fs::write(&file, &damaged).unwrap();
    let third = context(dir.path()).unwrap();
    assert!(!third.pipeline_cache_loaded());
    drop(third);
    assert!(context(dir.path()).unwrap().pipeline_cache_loaded());

    // Too short to hold a checksum.
    std::fs::write(&file, [7u8, 7]).unwrap();
    assert!(!context(dir.path()).unwrap().pipeline_cache_loaded());
    // Nothing but the cache file is left in the directory (no temporary files).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [file.file_name().unwrap().to_owned()]);
}
