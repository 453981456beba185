//! Compiled pipelines kept on disk between runs (wgpu's `PipelineCache`, Vulkan only), so a warm
//! start skips the driver's shader compilation. One file per adapter, named by wgpu's adapter
//! key: a CRC32 of the data, then wgpu's data. A file that fails the check, or that wgpu finds
//! stale (another driver or wgpu version), is ignored and replaced when the context ends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`: where Kiln keeps what it
/// downloads or compiles.
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("KILN_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("kiln")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("kiln")))
        .unwrap_or_else(|| std::env::temp_dir().join("kiln-cache"))
}

pub(crate) struct DiskCache {
    pub(crate) cache: wgpu::PipelineCache,
    path: PathBuf,
    /// Whether the file held data wgpu was given (it may still have found it stale).
    pub(crate) loaded: bool,
    /// Pipelines compiled through the cache; nothing is written when none were.
    compiled: AtomicUsize,
}

impl DiskCache {
    /// The cache for `info`'s adapter in `dir`, or `None` where the backend keeps none.
    pub(crate) fn open(
        device: &wgpu::Device,
        info: &wgpu::AdapterInfo,
        dir: &Path,
    ) -> Option<Self> {
        let key = wgpu::util::pipeline_cache_key(info)?;
        let path = dir.join(format!("{key}.bin"));
        let data = read_checked(&path);
        // SAFETY: `data` is what `PipelineCache::get_data` returned for this adapter key (its CRC
        // matches what was written); wgpu checks its header against the adapter, driver and wgpu
        // version, and `fallback` starts an empty cache where that check fails.
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("kiln"),
                data: data.as_deref(),
                fallback: true,
            })
        };
        Some(Self {
            cache,
            path,
            loaded: data.is_some(),
            compiled: AtomicUsize::new(0),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn note_compiled(&self) {
        self.compiled.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the cache's data if any pipeline was compiled since it was opened: to a file of
    /// its own first, then renamed over the old one, so concurrent runs never see half a file.
    pub(crate) fn save(&self) -> std::io::Result<()> {
        if self.compiled.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let Some(data) = self.cache.get_data() else {
            return Ok(());
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        static WRITES: AtomicUsize = AtomicUsize::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .path
            .with_extension(format!("{}-{n}.tmp", std::process::id()));
        let mut bytes = crc32fast::hash(&data).to_le_bytes().to_vec();
        bytes.extend_from_slice(&data);
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &self.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

/// The data in `path` after its CRC32, if the file exists and the CRC matches.
fn read_checked(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let (crc, data) = bytes.split_first_chunk::<4>()?;
    if crc32fast::hash(data) != u32::from_le_bytes(*crc) {
        log::warn!(
            "pipeline cache {}: checksum mismatch, ignored",
            path.display()
        );
        return None;
    }
    Some(data.to_vec())
}
