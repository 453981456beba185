//! The GGUF reader on files written here: valid ones parse; truncated or corrupt ones, unknown
//! tensor types and missing or mistyped keys give errors that name the file, key or tensor.

use std::path::PathBuf;

use kiln_model::ModelError;
use kiln_model::gguf::{GgmlType, GgufFile, Value};

/// Writes GGUF v3 bytes: metadata (key, type, payload) and tensors (name, dims, type, data).
fn gguf_bytes(kv: &[(&str, u32, Vec<u8>)], tensors: &[(&str, Vec<u64>, u32, Vec<u8>)]) -> Vec<u8> {
    let s = |b: &mut Vec<u8>, text: &str| {
        b.extend((text.len() as u64).to_le_bytes());
        b.extend(text.as_bytes());
    };
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kv.len() as u64).to_le_bytes());
    for (key, ty, payload) in kv {
        s(&mut b, key);
        b.extend(ty.to_le_bytes());
        b.extend(payload);
    }
    let mut offset = 0u64;
    for (name, dims, ty, data) in tensors {
        s(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
        offset += (data.len() as u64).div_ceil(32) * 32;
    }
    b.resize(b.len().div_ceil(32) * 32, 0);
    for (_, _, _, data) in tensors {
        let start = b.len();
        b.extend(data);
        b.resize(start + data.len().div_ceil(32) * 32, 0);
    }
    b
}

fn string(text: &str) -> Vec<u8> {
    let mut b = (text.len() as u64).to_le_bytes().to_vec();
    b.extend(text.as_bytes());
    b
}

fn sample() -> Vec<u8> {
    let mut tokens = 8u32.to_le_bytes().to_vec(); // array of strings
    tokens.extend(2u64.to_le_bytes());
    tokens.extend(string("a"));
    tokens.extend(string("bc"));
    let f32s: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let q8: Vec<u8> = vec![7u8; 34 * 2];
    gguf_bytes(
        &[
            ("general.architecture", 8, string("llama")),
            ("llama.block_count", 4, 30u32.to_le_bytes().to_vec()),
            ("llama.rope.freq_base", 6, 1e4f32.to_le_bytes().to_vec()),
            ("tokenizer.ggml.add_bos_token", 7, vec![0]),
            ("tokenizer.ggml.tokens", 9, tokens),
        ],
        // The unknown-type tensor comes first: its size is unknown, so only known ones bound the file.
        &[
            ("odd.weight", vec![4], 12, vec![0; 4]),
            ("norm.weight", vec![6], 0, f32s),
            ("tok.weight", vec![32, 2], 8, q8),
        ],
    )
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn parses_metadata_and_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let f = GgufFile::open(write(&dir, "ok.gguf", &sample())).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.str("general.architecture").unwrap(), "llama");
    assert_eq!(f.u32("llama.block_count").unwrap(), 30);
    assert_eq!(f.f32("llama.rope.freq_base").unwrap(), 1e4);
    assert!(!f.bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(f.str_array("tokenizer.ggml.tokens").unwrap(), ["a", "bc"]);
    let norm = f.tensor("norm.weight").unwrap();
    assert_eq!((norm.ggml_type, norm.size), (GgmlType::F32, 24));
    let data: Vec<f32> = bytemuck::pod_collect_to_vec(f.tensor_data(norm).unwrap());
    assert_eq!(data, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let tok = f.tensor("tok.weight").unwrap();
    assert_eq!(
        (tok.ggml_type, tok.size, tok.dims.clone()),
        (GgmlType::Q8_0, 68, vec![32, 2])
    );
    assert_eq!(f.tensor_data(tok).unwrap(), &[7u8; 68][..]);
    assert_eq!(f.get("llama.block_count"), Some(&Value::U32(30)));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = sample();
    // The last 28 bytes are alignment padding after the 68 bytes of the last tensor.
    for len in 0..bytes.len() - 28 {
        let path = write(&dir, "cut.gguf", &bytes[..len]);
        match GgufFile::open(&path) {
            Err(
                ModelError::Gguf { path: p, .. } | ModelError::TensorOutOfBounds { path: p, .. },
            ) => assert_eq!(p, path),
            Err(other) => panic!("truncated at {len}: unexpected error {other}"),
            Ok(_) => panic!("truncated at {len} bytes parsed"),
        }
    }
}

#[test]
fn corrupt_headers_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = sample();
    bad[0] = b'X';
    let e = GgufFile::open(write(&dir, "magic.gguf", &bad))
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("magic") && e.to_string().contains("magic.gguf"),
        "{e}"
    );
    let mut bad = sample();
    bad[4] = 9;
    let e = GgufFile::open(write(&dir, "version.gguf", &bad))
        .err()
        .unwrap();
    assert!(e.to_string().contains("version 9"), "{e}");
    // A tensor count of 2^60 must not allocate; it cannot fit in the file.
    let mut bad = sample();
    bad[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(matches!(
        GgufFile::open(write(&dir, "count.gguf", &bad)),
        Err(ModelError::Gguf { .. })
    ));
    let e = GgufFile::open(dir.path().join("missing.gguf"))
        .err()
        .unwrap();
    assert!(matches!(e, ModelError::Io { .. }) && e.to_string().contains("missing.gguf"));
}

#[test]
fn tensors_past_the_end_and_unknown_types_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = gguf_bytes(&[], &[("big.weight", vec![1024], 0, vec![0; 64])]);
    match GgufFile::open(write(&dir, "short.gguf", &bytes)) {
        Err(ModelError::TensorOutOfBounds { tensor, end, .. }) => assert_eq!(
            (tensor.as_str(), end > bytes.len() as u64),
            ("big.weight", true)
        ),
        other => panic!("expected TensorOutOfBounds, got {:?}", other.err()),
    }
    let f = GgufFile::open(write(&dir, "ok.gguf", &sample())).unwrap();
    let odd = f.tensor("odd.weight").unwrap();
    match f.tensor_data(odd) {
        Err(ModelError::UnsupportedTensorType {
            tensor, ggml_type, ..
        }) => assert_eq!(
            (tensor.as_str(), ggml_type.as_str()),
            ("odd.weight", "ggml type 12")
        ),
        other => panic!("expected UnsupportedTensorType, got {other:?}"),
    }
    // Q8_0 rows must be whole blocks.
    let bytes = gguf_bytes(&[], &[("q.weight", vec![30, 1], 8, vec![0; 34])]);
    assert!(matches!(
        GgufFile::open(write(&dir, "rows.gguf", &bytes)),
        Err(ModelError::Gguf { .. })
    ));
}

#[test]
fn missing_and_mistyped_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let f = GgufFile::open(write(&dir, "ok.gguf", &sample())).unwrap();
    match f.u32("llama.embedding_length") {
        Err(ModelError::MissingKey { key, .. }) => assert_eq!(key, "llama.embedding_length"),
        other => panic!("{other:?}"),
    }
    match f.u32("general.architecture") {
        Err(ModelError::WrongType { key, found, .. }) => assert_eq!(
            (key.as_str(), found.as_str()),
            ("general.architecture", "string")
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        f.tensor("nope"),
        Err(ModelError::MissingTensor { .. })
    ));
}
