//! The GGUF reader on files written here: valid ones parse; truncated or corrupt ones, unknown
//! tensor types and missing or mistyped keys give errors that name the file, key or tensor.

use std::path::PathBuf;

mod common;

use common::{gguf_bytes, sample};
use kiln_model::ModelError;
use kiln_model::gguf::{GgmlType, GgufFile, Value};

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
            ("odd.weight", "IQ4_NL")
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
