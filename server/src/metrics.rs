//! Counters the engine and the routes update, rendered as Prometheus text for `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::heap;

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests_ok: AtomicU64,
    pub requests_error: AtomicU64,
    pub requests_cancelled: AtomicU64,
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens whose KV was already cached in the slot a request took.
    pub prefix_cached_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub running: AtomicU64,
    pub waiting: AtomicU64,
    pub slots_total: AtomicU64,
    pub slots_used: AtomicU64,
    /// KV positions held by running sequences, and the cache's positions in all.
    pub kv_positions_used: AtomicU64,
    pub kv_positions_total: AtomicU64,
    pub kv_bytes: AtomicU64,
    pub kv_block_size: AtomicU64,
    pub kv_contiguous_positions: AtomicU64,
    pub kv_blocks_total: AtomicU64,
    pub kv_blocks_used: AtomicU64,
    pub kv_blocks_cached: AtomicU64,
    pub preemptions: AtomicU64,
    pub steps: AtomicU64,
    pub step_rows: AtomicU64,
    pub step_micros: AtomicU64,
    /// Bind groups the engine's session keeps for reuse (bounded; see kiln_runtime::bind_cache).
    pub bind_groups: AtomicU64,
    /// Kernel variants compiled so far (each on first use: a new batch shape compiles more).
    pub pipelines: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Relaxed);
    }

    pub fn set(gauge: &AtomicU64, n: usize) {
        gauge.store(n as u64, Relaxed);
    }

    /// The Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Relaxed);
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP kiln_{name} {help}\n# TYPE kiln_{name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "kiln_{name}{labels} {v}");
            }
        };
        put(
            "requests_total",
            "counter",
            "Requests answered, by outcome.",
            &[
                ("{outcome=\"ok\"}", g(&self.requests_ok) as f64),
                ("{outcome=\"error\"}", g(&self.requests_error) as f64),
                (
                    "{outcome=\"cancelled\"}",
                    g(&self.requests_cancelled) as f64,
                ),
            ],
        );
        let prompt = g(&self.prompt_tokens);
        let cached = g(&self.prefix_cached_tokens);
        for (name, help, v) in [
            (
                "prompt_tokens_total",
                "Prompt tokens of admitted requests.",
                prompt,
            ),
            (
                "prefix_cached_tokens_total",
                "Prompt tokens found in the KV cache and not recomputed.",
                cached,
            ),
            (
                "generation_tokens_total",
                "Tokens generated.",
                g(&self.generation_tokens),
            ),
            ("steps_total", "Model steps run.", g(&self.steps)),
            (
                "preemptions_total",
                "Running requests sent back to the queue for want of KV blocks (recomputed later).",
                g(&self.preemptions),
            ),
            (
                "step_rows_total",
                "Token rows run in all steps.",
                g(&self.step_rows),
            ),
        ] {
            put(name, "counter", help, &[("", v as f64)]);
        }
        put(
            "step_seconds_total",
            "counter",
            "Time spent in model steps.",
            &[("", g(&self.step_micros) as f64 / 1e6)],
        );
        put(
            "prefix_cache_hit_ratio",
            "gauge",
            "Share of prompt tokens served from the KV cache.",
            &[(
                "",
                if prompt == 0 {
                    0.0
                } else {
                    cached as f64 / prompt as f64
                },
            )],
        );
        for (name, help, v) in [
            (
                "running_sequences",
                "Sequences in the running batch.",
                g(&self.running),
            ),
            (
                "queued_requests",
                "Requests waiting for a slot.",
                g(&self.waiting),
            ),
            (
                "kv_slots_total",
                "Sequences the KV cache holds at once.",
                g(&self.slots_total),
            ),
            (
                "kv_slots_used",
                "KV slots held by running sequences.",
                g(&self.slots_used),
            ),
            (
                "kv_slots_free",
                "KV slots free.",
                g(&self.slots_total).saturating_sub(g(&self.slots_used)),
            ),
            (
                "kv_positions_used",
                "KV positions held by running sequences.",
                g(&self.kv_positions_used),
            ),
            (
                "kv_positions_total",
                "KV positions the pool holds (blocks times block size).",
                g(&self.kv_positions_total),
            ),
            (
                "kv_contiguous_positions",
                "KV positions a contiguous cache would reserve: every slot's whole context.",
                g(&self.kv_contiguous_positions),
            ),
            (
                "kv_block_size",
                "Positions per KV block.",
                g(&self.kv_block_size),
            ),
            (
                "kv_blocks_total",
                "Blocks in the KV pool.",
                g(&self.kv_blocks_total),
            ),
            (
                "kv_blocks_used",
                "KV blocks held by running sequences (a shared block counts once).",
                g(&self.kv_blocks_used),
            ),
            (
                "kv_blocks_cached",
                "KV blocks no sequence holds that keep a prefix for reuse until needed.",
                g(&self.kv_blocks_cached),
            ),
            (
                "kv_blocks_free",
                "KV blocks no sequence holds (cached ones included).",
                g(&self.kv_blocks_total).saturating_sub(g(&self.kv_blocks_used)),
            ),
            (
                "kv_cache_bytes",
                "Bytes of the KV cache.",
                g(&self.kv_bytes),
            ),
            (
                "bind_groups_cached",
                "Bind groups kept for reuse by later steps (bounded).",
                g(&self.bind_groups),
            ),
            (
                "pipelines_compiled",
                "Kernel variants compiled so far, each on its first use.",
                g(&self.pipelines),
            ),
        ] {
            put(name, "gauge", help, &[("", v as f64)]);
        }
        if let Some(bytes) = heap::live_bytes() {
            let help = "Heap bytes the server's Rust code holds (the driver's allocations apart).";
            put("host_heap_bytes", "gauge", help, &[("", bytes as f64)]);
        }
        if let Some(bytes) = heap::resident_bytes() {
            let help = "Resident memory of the server process (GPU buffers too, where host-side).";
            put(
                "resident_memory_bytes",
                "gauge",
                help,
                &[("", bytes as f64)],
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        Metrics::add(&m.prompt_tokens, 10);
        Metrics::add(&m.prefix_cached_tokens, 4);
        Metrics::set(&m.slots_total, 8);
        Metrics::set(&m.slots_used, 3);
        Metrics::set(&m.kv_blocks_total, 100);
        Metrics::set(&m.kv_blocks_used, 30);
        let text = m.render();
        assert!(text.contains("kiln_kv_blocks_free 70\n"));
        assert!(text.contains("kiln_prompt_tokens_total 10\n"));
        assert!(text.contains("kiln_prefix_cache_hit_ratio 0.4\n"));
        assert!(text.contains("kiln_kv_slots_free 5\n"));
        assert!(text.contains("# TYPE kiln_requests_total counter\n"));
        assert!(text.contains("kiln_requests_total{outcome=\"cancelled\"} 0\n"));
        // The library's tests run on the system allocator: no heap gauge rather than a zero.
        assert!(!text.contains("kiln_host_heap_bytes"));
        if cfg!(target_os = "linux") {
            let rss = text
                .lines()
                .find_map(|l| l.strip_prefix("kiln_resident_memory_bytes "));
            assert!(
                rss.and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 1e6)
            );
        }
    }
}
