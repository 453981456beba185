//! Every GGUF tensor type Kiln reads, dequantized three ways that must agree bit for bit: by the
//! `gguf` Python package (ggml's reference, `kernels/reference/ggml_dequantize.py`), by the CPU
//! reference (`HostWeights::dequantize`) and by the shaders' `w_load4` (through the embedding
//! gather, which stores what it reads). Blocks cover every byte value in every field (block j <
//! 256 all bytes j) and then random ones, with valid f16 super-scales, subnormals among them.
//! Needs `python3 -m pip install numpy gguf`, as `.ci/run` does.

mod common;

use std::path::Path;

use common::*;
use kiln_kernels::embedding::embedding;
use kiln_kernels::{HostWeights, WeightFormat, Weights};
use kiln_runtime::DType;
use rand::Rng;

const TYPES: &[WeightFormat] = &[
    WeightFormat::Q8_0,
    WeightFormat::Q4_0,
    WeightFormat::Q4_1,
    WeightFormat::Q5_0,
    WeightFormat::Q5_1,
    WeightFormat::Q2_K,
    WeightFormat::Q3_K,
    WeightFormat::Q4_K,
    WeightFormat::Q5_K,
    WeightFormat::Q6_K,
    WeightFormat::BF16,
];

/// 64 rows of 5 blocks (k = 160, or 1280 for the K-quants); bf16: 408 rows of 161 values.
fn matrix(rng: &mut rand::rngs::StdRng, format: WeightFormat) -> HostWeights {
    if format == WeightFormat::BF16 {
        let (rows, k) = (408, 161);
        // Every finite bf16 (the others' exponent moved off all ones): subnormals, zeros and
        // both signs.
        let bytes = (0..rows * k)
            .flat_map(|i| {
                let bits: u16 = if i < 1 << 16 { i as u16 } else { rng.random() };
                let bits = if bits & 0x7f80 == 0x7f80 {
                    bits ^ 0x0100
                } else {
                    bits
                };
                bits.to_le_bytes()
            })
            .collect();
        return HostWeights::new(format, rows, k, bytes).unwrap();
    }
    let (rows, k) = (64, 5 * format.block_values());
    let data = blocks_of(rng, format, rows * 5, true);
    HostWeights::new(format, rows, k, data).unwrap()
}

/// What `gguf.quants.dequantize` makes of each matrix's bytes.
fn python_reference(mats: &[HostWeights]) -> Vec<Vec<f32>> {
    let dir = std::env::temp_dir().join(format!("kiln-ggml-types-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for w in mats {
        std::fs::write(dir.join(format!("{}.bin", w.format.name())), &w.data).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/ggml_dequantize.py");
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .status()
        .expect("running python3");
    assert!(
        status.success(),
        "{} failed: python3 -m pip install numpy gguf",
        script.display()
    );
    let out = mats
        .iter()
        .map(|w| {
            let bytes = std::fs::read(dir.join(format!("{}.f32", w.format.name()))).unwrap();
            bytes
                .chunks(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
        .collect();
    std::fs::remove_dir_all(&dir).ok();
    out
}

/// The first element whose bits differ, as (index, got, want).
fn first_difference(got: &[f32], want: &[f32]) -> Option<(usize, f32, f32)> {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .enumerate()
        .find(|(_, (g, w))| g.to_bits() != w.to_bits() && !(**g == 0.0 && **w == 0.0))
        .map(|(i, (g, w))| (i, *g, *w))
}

#[test]
fn cpu_and_shader_dequantization_equal_ggml_reference() {
    let mut rng = rng(21);
    let mats: Vec<HostWeights> = TYPES.iter().map(|&f| matrix(&mut rng, f)).collect();
    let want = python_reference(&mats);
    for (w, want) in mats.iter().zip(&want) {
        let cpu = w.dequantize();
        if let Some((i, g, r)) = first_difference(&cpu, want) {
            panic!(
                "{} CPU dequantization: element {i} is {g}, ggml says {r}",
                w.format.name()
            );
        }
    }
    let Some(ctx) = test_context() else { return };
    for (w, want) in mats.iter().zip(&want) {
        let table = Weights::upload(ctx, w).unwrap();
        let ids: Vec<u32> = (0..w.n as u32).collect();
        let it = ctx.upload(&ids, DType::U32, &[w.n]).unwrap();
        let out = ctx
            .upload_f32(&vec![f32::NAN; w.n * w.k], &[w.n, w.k])
            .unwrap();
        let mut rec = ctx.recorder();
        embedding(&mut rec, &it, &table, &out).unwrap();
        rec.submit().unwrap();
        let got = ctx.read::<f32>(&out).unwrap();
        if let Some((i, g, r)) = first_difference(&got, want) {
            panic!(
                "{} shader dequantization: element {i} is {g}, ggml says {r}",
                w.format.name()
            );
        }
    }
}
