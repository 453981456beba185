//! The portable report: one JSON object and one markdown page naming the adapter, its features
//! and limits, the measured bandwidth ceiling, every kernel against it, and the models' speed.

use kiln_runtime::Context;
use serde_json::{Value, json};

use crate::models::{ModelResult, StepProfile};
use crate::peer::PeerResult;
use crate::roofline::{Bandwidth, KernelResult};
use crate::speculative::SpecResult;

/// Everything one run measured.
pub struct Report {
    pub quick: bool,
    pub bandwidth: Bandwidth,
    pub kernels: Vec<KernelResult>,
    pub models: Vec<ModelResult>,
    /// llama.cpp on the same model and adapter, measured in the same run.
    pub peers: Vec<PeerResult>,
    /// Speculative decoding against plain greedy decoding on the first model.
    pub speculative: Vec<SpecResult>,
}

/// A PCI vendor id as a name where it is a well-known GPU vendor.
pub fn vendor_name(id: u32) -> String {
    match id {
        0x10de => "NVIDIA".into(),
        0x1002 | 0x1022 => "AMD".into(),
        0x8086 => "Intel".into(),
        0x106b => "Apple".into(),
        0x13b5 => "ARM".into(),
        0x5143 => "Qualcomm".into(),
        0x1010 => "Imagination".into(),
        0x10005 => "Mesa".into(),
        0x1414 => "Microsoft".into(),
        other => format!("0x{other:x}"),
    }
}

/// The adapter, features, limits and clock, as the report's JSON holds them.
pub fn adapter_json(ctx: &Context) -> Value {
    let i = &ctx.info;
    let l = &ctx.limits;
    json!({
        "adapter": {
            "name": i.name,
            "vendor": vendor_name(i.vendor),
            "vendor_id": i.vendor,
            "device_id": i.device,
            "device_type": format!("{:?}", i.device_type),
            "backend": format!("{:?}", i.backend),
            "driver": i.driver,
            "driver_info": i.driver_info,
        },
        "features": {
            "shader_f16": ctx.features.f16,
            "subgroups": ctx.features.subgroups,
            "timestamp_queries": ctx.features.timestamps,
            "shader_int64": ctx.features.int64,
        },
        "plan": kiln_kernels::DevicePlan::of(ctx).to_string(),
        "limits": {
            "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
            "max_buffer_size": l.max_buffer_size,
            "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
            "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
            "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
        },
        "kernel_clock": ctx.clock().name(),
    })
}

impl Report {
    pub fn to_json(&self, ctx: &Context) -> Value {
        let peak = self.bandwidth.peak_gbps();
        let mut v = adapter_json(ctx);
        v["quick"] = json!(self.quick);
        v["peak_bandwidth_gbps"] = json!(peak);
        v["bandwidth"] = json!({
            "copy_gbps": self.bandwidth.copy_gbps,
            "read_gbps": self.bandwidth.read_gbps,
            "buffer_bytes": self.bandwidth.buffer_bytes,
        });
        v["kernels"] = self
            .kernels
            .iter()
            .map(|k| {
                json!({
                    "kernel": k.kernel, "shape": k.shape, "bytes": k.bytes, "flops": k.flops,
                    "seconds": k.seconds, "gbps": k.gbps(), "gflops": k.gflops(),
                    "fraction_of_peak_bandwidth": k.gbps() / peak,
                    "peak_alongside_gbps": k.peak_alongside_gbps,
                    "fraction_of_peak_alongside": k.peak_alongside_gbps.map(|c| k.gbps() / c),
                })
            })
            .collect();
        v["speculative"] = self
            .speculative
            .iter()
            .map(|r| {
                json!({
                    "prompt": r.prompt, "mode": r.mode, "tokens_per_s": r.tokens_per_s,
                    "plain_tokens_per_s": r.plain_tokens_per_s,
                    "speedup": r.tokens_per_s / r.plain_tokens_per_s,
                    "drafted": r.drafted, "accepted": r.accepted,
                    "acceptance_rate": r.accepted as f64 / r.drafted.max(1) as f64,
                    "tokens_per_step": r.tokens_per_step,
                })
            })
            .collect();
        v["models"] = self
            .models
            .iter()
            .map(|m| {
                let longest = m.prefill.last();
                json!({
                    "name": m.name,
                    "weight_bytes": m.weight_bytes,
                    "prefill_tokens": longest.map(|p| p.tokens),
                    "prefill_tokens_per_s": longest.map(|p| p.tokens_per_s),
                    "decode_tokens_per_s": m.decode_tokens_per_s,
                    "decode_ahead_tokens_per_s": m.decode_ahead_tokens_per_s,
                    "decode_record_seconds": m.decode_record_seconds,
                    "decode_launches": m.decode_launches,
                    "bytes_per_token": m.bytes_per_token,
                    "decode_gbps": m.bytes_per_token as f64 * m.decode_tokens_per_s / 1e9,
                    "decode_fraction_of_peak_bandwidth":
                        m.bytes_per_token as f64 * m.decode_tokens_per_s / 1e9 / peak,
                    "prefill": m.prefill.iter().map(|p| json!({"tokens": p.tokens, "tokens_per_s": p.tokens_per_s})).collect::<Vec<_>>(),
                    "batches": m.batches.iter().map(|b| json!({"batch": b.batch, "tokens_per_s": b.tokens_per_s, "step_ms": b.step_ms})).collect::<Vec<_>>(),
                    "kv_cache": m.kv_curve.iter().map(|k| json!({"length": k.length, "cached_tokens_per_s": k.cached_tokens_per_s, "uncached_tokens_per_s": k.uncached_tokens_per_s})).collect::<Vec<_>>(),
                    "prefill_profiles": m.prefill_profiles.iter().map(|(tokens, p)| json!({
                        "tokens": tokens,
                        "gpu_seconds": p.profile.seconds(),
                        "wall_seconds": p.wall_seconds,
                        "kernels": p.rows().iter().map(|(kernel, format, launches, seconds)| json!({
                            "kernel": kernel, "weight_format": format,
                            "launches": launches, "seconds": seconds,
                        })).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "decode_profile": m.decode_profile.as_ref().map(|p| json!({
                        "steps": p.steps,
                        "gpu_seconds_per_step": p.profile.seconds() / p.steps.max(1) as f64,
                        "wall_seconds_per_step": p.wall_seconds / p.steps.max(1) as f64,
                        "kernels": p.rows().iter().map(|(kernel, format, launches, seconds)| json!({
                            "kernel": kernel, "weight_format": format,
                            "launches_per_step": launches, "seconds_per_step": seconds,
                        })).collect::<Vec<_>>(),
                    })),
                })
            })
            .chain(self.peers.iter().map(|p| {
                json!({
                    "name": p.name,
                    "gpu_info": p.gpu_info,
                    "prefill_tokens": p.prompt_tokens,
                    "prefill_tokens_per_s": p.prefill_tokens_per_s,
                    "decode_tokens": p.gen_tokens,
                    "decode_tokens_per_s": p.decode_tokens_per_s,
                    "bytes_per_token": null,
                })
            }))
            .collect();
        v
    }

    pub fn to_markdown(&self, ctx: &Context, command: &str) -> String {
        let i = &ctx.info;
        let peak = self.bandwidth.peak_gbps();
        let mut md = format!(
            "# Kiln benchmark: {}\n\n\
             | | |\n|---|---|\n\
             | adapter | {} ({}, {:?}) |\n| backend | {:?} |\n| driver | {} {} |\n\
             | features | f16 {}, subgroups {}, timestamps {}, int64 {} |\n\
             | device plan | {} |\n\
             | storage binding / buffer limit | {} MiB / {} MiB |\n\
             | kernel clock | {} |\n| peak bandwidth (measured) | {:.2} GB/s (copy {:.2}, read {:.2}, {} MiB buffer; the better of two runs) |\n\n\
             Rerun: `{command}`\n\n",
            i.name,
            i.name,
            vendor_name(i.vendor),
            i.device_type,
            i.backend,
            i.driver,
            i.driver_info,
            ctx.features.f16,
            ctx.features.subgroups,
            ctx.features.timestamps,
            ctx.features.int64,
            kiln_kernels::DevicePlan::of(ctx),
            ctx.limits.max_storage_buffer_binding_size >> 20,
            ctx.limits.max_buffer_size >> 20,
            ctx.clock().name(),
            peak,
            self.bandwidth.copy_gbps,
            self.bandwidth.read_gbps,
            self.bandwidth.buffer_bytes >> 20,
        );
        md.push_str(
            "## Kernels against the bandwidth ceiling\n\n\
             Bytes count weights, activations read and results written once. The first fraction is \
             of the measured peak above. The matrix kernels are timed alternately with the peak's \
             copy: each repetition follows one copy, which leaves the caches cold, as every matrix \
             of a decode step is (the weights are larger than the caches); the second fraction is \
             of that copy's bandwidth over the same repetitions, so both saw the same load of the \
             machine. Medians of the repetitions.\n\n\
             | kernel | shape | µs | GB/s | % of peak | % of peak alongside | GFLOP/s |\n|---|---|---|---|---|---|---|\n",
        );
        for k in &self.kernels {
            let paired = k
                .peak_alongside_gbps
                .map_or("".to_string(), |c| format!("{:.0}%", 100.0 * k.gbps() / c));
            md.push_str(&format!(
                "| {} | {} | {:.1} | {:.2} | {:.0}% | {} | {:.2} |\n",
                k.kernel,
                k.shape,
                k.seconds * 1e6,
                k.gbps(),
                100.0 * k.gbps() / peak,
                paired,
                k.gflops()
            ));
        }
        if let (Some(m), false) = (self.models.first(), self.peers.is_empty()) {
            md.push_str(
                "\n## Side by side on this adapter\n\n\
                 | engine | prefill tokens/s | decode tokens/s | Kiln ÷ peer (prefill, decode, decode run ahead) |\n|---|---|---|---|\n",
            );
            let ours = m.prefill.last().map_or(f64::NAN, |p| p.tokens_per_s);
            let tokens = m.prefill.last().map_or(0, |p| p.tokens);
            md.push_str(&format!(
                "| Kiln ({}) | {ours:.2} ({tokens} tokens) | {:.2} ({:.2} run ahead) | |\n",
                m.name, m.decode_tokens_per_s, m.decode_ahead_tokens_per_s
            ));
            for p in &self.peers {
                md.push_str(&format!(
                    "| {} | {:.2} ({} tokens) | {:.2} ({} tokens) | {:.2}, {:.2}, {:.2} |\n",
                    p.name,
                    p.prefill_tokens_per_s,
                    p.prompt_tokens,
                    p.decode_tokens_per_s,
                    p.gen_tokens,
                    ours / p.prefill_tokens_per_s,
                    m.decode_tokens_per_s / p.decode_tokens_per_s,
                    m.decode_ahead_tokens_per_s / p.decode_tokens_per_s
                ));
            }
        }
        for m in &self.models {
            let gbps = m.bytes_per_token as f64 * m.decode_tokens_per_s / 1e9;
            md.push_str(&format!(
                "\n## {}\n\nWeights {:.1} MB. Steps timed by the wall clock around one submit and its \
                 readback, medians.\n\n\
                 | | |\n|---|---|\n| decode (batch 1) | {:.2} tokens/s |\n\
                 | decode (batch 1) run ahead, greedy steps chained on the GPU | {:.2} tokens/s |\n\
                 | recording one decode step (CPU, up to its last submit) | {:.3} ms |\n\
                 | kernel launches per decode step | {} |\n\
                 | bytes read per decoded token | {:.1} MB |\n\
                 | decode bandwidth | {:.2} GB/s ({:.1}% of peak) |\n",
                m.name,
                m.weight_bytes as f64 / 1e6,
                m.decode_tokens_per_s,
                m.decode_ahead_tokens_per_s,
                m.decode_record_seconds * 1e3,
                m.decode_launches,
                m.bytes_per_token as f64 / 1e6,
                gbps,
                100.0 * gbps / peak
            ));
            for p in &m.prefill {
                md.push_str(&format!(
                    "| prefill, {} tokens | {:.1} tokens/s |\n",
                    p.tokens, p.tokens_per_s
                ));
            }
            md.push_str("\n| batch | tokens/s | ms per step |\n|---|---|---|\n");
            for b in &m.batches {
                md.push_str(&format!(
                    "| {} | {:.2} | {:.1} |\n",
                    b.batch, b.tokens_per_s, b.step_ms
                ));
            }
            md.push_str(
                "\n| context length | tokens/s with KV cache | tokens/s recomputing the prefix |\n|---|---|---|\n",
            );
            for k in &m.kv_curve {
                md.push_str(&format!(
                    "| {} | {:.2} | {:.2} |\n",
                    k.length, k.cached_tokens_per_s, k.uncached_tokens_per_s
                ));
            }
            if let Some(p) = &m.decode_profile {
                md.push_str(&decode_profile_markdown(p, m.decode_tokens_per_s));
            }
            for (tokens, p) in &m.prefill_profiles {
                md.push_str(&prefill_profile_markdown(*tokens, p));
            }
        }
        if !self.speculative.is_empty() {
            md.push_str(
                "\n## Speculative decoding\n\nGreedy, batch 1, the output identical to plain decoding; \
                 each mode timed right after a plain run of the same prompt (medians).\n\n\
                 | prompt | mode | tokens/s | plain tokens/s | speedup | drafts kept | tokens per step |\n\
                 |---|---|---|---|---|---|---|\n",
            );
            for r in &self.speculative {
                md.push_str(&format!(
                    "| {} | {} | {:.2} | {:.2} | {:.2}× | {} of {} ({:.0}%) | {:.2} |\n",
                    r.prompt,
                    r.mode,
                    r.tokens_per_s,
                    r.plain_tokens_per_s,
                    r.tokens_per_s / r.plain_tokens_per_s,
                    r.accepted,
                    r.drafted,
                    100.0 * r.accepted as f64 / r.drafted.max(1) as f64,
                    r.tokens_per_step
                ));
            }
        }
        md
    }
}

/// Where a prefill's time goes, kernel by kernel.
fn prefill_profile_markdown(tokens: usize, p: &StepProfile) -> String {
    let total = p.profile.seconds();
    let rows = p.rows();
    let launches: f64 = rows.iter().map(|r| r.2).sum();
    let mut md = format!(
        "\n### Prefill of {tokens} tokens by kernel\n\n\
         One prefill again with GPU timestamps around every launch: {:.2} ms of GPU time in \
         {launches:.0} launches, {:.2} ms of wall time (timing slows it).\n\n\
         | kernel | weights | launches | µs | µs per launch | share |\n\
         |---|---|---|---|---|---|\n",
        total * 1e3,
        p.wall_seconds * 1e3,
    );
    push_kernel_rows(&mut md, &rows, total);
    md
}

/// One table row per (kernel, weights): launches, µs, µs per launch and share of `total` seconds.
fn push_kernel_rows(md: &mut String, rows: &[(String, String, f64, f64)], total: f64) {
    for (kernel, format, launches, seconds) in rows {
        md.push_str(&format!(
            "| {kernel} | {format} | {launches:.0} | {:.0} | {:.0} | {:.1}% |\n",
            seconds * 1e6,
            seconds / launches.max(1.0) * 1e6,
            100.0 * seconds / total
        ));
    }
}

/// Where a decode step's time goes, kernel by kernel.
fn decode_profile_markdown(p: &StepProfile, decode_tokens_per_s: f64) -> String {
    let total = p.profile.seconds() / p.steps.max(1) as f64;
    let rows = p.rows();
    let launches: f64 = rows.iter().map(|r| r.2).sum();
    let (wall, unprofiled) = (
        p.wall_seconds / p.steps.max(1) as f64,
        1.0 / decode_tokens_per_s,
    );
    let mut md = format!(
        "\n### Decode step by kernel\n\n\
         {} batch-1 decode steps again, with GPU timestamps around every launch (less what a \
         timestamp itself takes, measured after each). The launches sum to {:.2} ms per step in \
         {:.0} launches. Timing them still slows the step: it took {:.2} ms of wall time against \
         {:.2} ms unprofiled, {:.0} µs more per launch, of which some stays in the rows, so on \
         such a device the small kernels' shares read high.\n\n\
         | kernel | weights | launches per step | µs per step | µs per launch | share |\n\
         |---|---|---|---|---|---|\n",
        p.steps,
        total * 1e3,
        launches,
        wall * 1e3,
        unprofiled * 1e3,
        (wall - unprofiled) / launches.max(1.0) * 1e6,
    );
    push_kernel_rows(&mut md, &rows, total);
    md
}
