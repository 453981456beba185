//! GGUF bytes written by the tests: a small file with metadata of several types, a tensor of a
//! type Kiln does not read, an f32 vector and Q8_0 blocks.
#![allow(dead_code)]

/// Writes GGUF v3 bytes: metadata (key, type, payload) and tensors (name, dims, type, data).
pub fn gguf_bytes(
    kv: &[(&str, u32, Vec<u8>)],
    tensors: &[(&str, Vec<u64>, u32, Vec<u8>)],
) -> Vec<u8> {
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

pub fn string(text: &str) -> Vec<u8> {
    let mut b = (text.len() as u64).to_le_bytes().to_vec();
    b.extend(text.as_bytes());
    b
}

pub fn sample() -> Vec<u8> {
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
            ("odd.weight", vec![4], 20, vec![0; 4]),
            ("norm.weight", vec![6], 0, f32s),
            ("tok.weight", vec![32, 2], 8, q8),
        ],
    )
}
