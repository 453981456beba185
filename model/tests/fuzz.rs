//! GGUF headers and safetensors headers mutated at a fixed seed (bytes flipped, words
//! overwritten with large or boundary values, runs cut out or repeated, files truncated): every
//! case opens to a model or a typed error, never a panic or a hang, and never allocates more
//! than a bounded multiple of the file's size while parsing (counted by this binary's allocator).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::sample;
use kiln_model::gguf::GgufFile;
use kiln_model::hf_folder::HfFolder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Counts the bytes live and their peak since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Most bytes a parse may hold beyond what was live before it: a parsed value (a metadata entry,
/// a tensor record, a JSON node) costs a few dozen bytes for each byte of the header it came
/// from at worst, plus a fixed allowance.
fn allowance(file_len: usize) -> usize {
    64 * file_len + (256 << 10)
}

/// `base` with 1 to 4 random mutations.
fn mutate(rng: &mut StdRng, base: &[u8], header_end: usize) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if b.is_empty() {
            break;
        }
        // Mostly inside the header, where the parser reads.
        let at = rng.random_range(0..header_end.min(b.len()).max(1));
        match rng.random_range(0..7) {
            0 => b[at] ^= 1 << rng.random_range(0..8),
            1 => b[at] = rng.random(),
            2 => {
                let v: u64 = match rng.random_range(0..4) {
                    0 => u64::MAX,
                    1 => 1 << rng.random_range(16..63),
                    2 => rng.random_range(0..64),
                    _ => rng.random(),
                };
                let end = (at + 8).min(b.len());
                b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            }
            3 => {
                let end = (at + rng.random_range(1..16)).min(b.len());
                b.drain(at..end);
            }
            4 => {
                let end = (at + rng.random_range(1..16)).min(b.len());
                let run = b[at..end].to_vec();
                b.splice(at..at, run);
            }
            5 => b.truncate(rng.random_range(0..b.len())),
            // A digit of a JSON header changed: shapes, offsets and sizes that still parse.
            _ => {
                if let Some(d) = b[at..].iter().position(u8::is_ascii_digit) {
                    b[at + d] = b'0' + rng.random_range(0..10u8);
                }
            }
        }
    }
    b
}

/// Runs `open` on `bytes` written to `path`, checking time and allocation (one check at a time:
/// the counters are the whole process's).
fn check(path: &std::path::Path, bytes: &[u8], case: usize, open: impl FnOnce()) {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::write(path, bytes).unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let start = Instant::now();
    open();
    let grew = PEAK.load(Ordering::Relaxed) - before;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "case {case}: took {:?}",
        start.elapsed()
    );
    assert!(
        grew <= allowance(bytes.len()),
        "case {case}: parsing {} bytes allocated {grew}",
        bytes.len()
    );
}

#[test]
fn mutated_gguf_headers_open_or_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.gguf");
    let base = sample();
    let mut rng = StdRng::seed_from_u64(2121);
    let (mut ok, mut failed) = (0, 0);
    for case in 0..3000 {
        let bytes = mutate(&mut rng, &base, base.len() - 96);
        check(&path, &bytes, case, || match GgufFile::open(&path) {
            Ok(f) => {
                ok += 1;
                // Every tensor the header names reads as bytes or a typed error.
                for t in &f.tensors {
                    let _ = f.tensor_data(t);
                }
            }
            Err(e) => {
                failed += 1;
                assert!(e.to_string().contains("fuzz.gguf"), "case {case}: {e}");
            }
        });
    }
    eprintln!("GGUF: {ok} opened, {failed} refused");
    assert!(
        ok > 0 && failed > 0,
        "the mutations should both keep and break files"
    );
}

/// A safetensors file of three small tensors (bf16, f16, f32).
fn safetensors_sample() -> Vec<u8> {
    let header = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"F16","shape":[4],"data_offsets":[12,20]},"c":{"dtype":"F32","shape":[2],"data_offsets":[20,28]}}"#;
    let mut head = header.as_bytes().to_vec();
    head.resize(head.len().div_ceil(8) * 8, b' ');
    let mut b = (head.len() as u64).to_le_bytes().to_vec();
    b.extend(head);
    b.extend((0..28u8).map(|i| i.wrapping_mul(37)));
    b
}

#[test]
fn mutated_safetensors_headers_open_or_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let base = safetensors_sample();
    let mut rng = StdRng::seed_from_u64(2122);
    let (mut ok, mut failed) = (0, 0);
    for case in 0..3000 {
        let bytes = mutate(&mut rng, &base, base.len() - 28);
        check(&path, &bytes, case, || match HfFolder::open(dir.path()) {
            Ok(folder) => {
                ok += 1;
                for name in ["a", "b", "c"] {
                    if let Ok(t) = folder.tensor(name) {
                        let _ = t.data.iter().map(|&x| x as u64).sum::<u64>();
                    }
                }
            }
            Err(e) => {
                failed += 1;
                assert!(
                    e.to_string().contains("model.safetensors"),
                    "case {case}: {e}"
                );
            }
        });
    }
    eprintln!("safetensors: {ok} opened, {failed} refused");
    assert!(
        ok > 0 && failed > 0,
        "the mutations should both keep and break files"
    );
}
