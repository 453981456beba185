//! Whole-model speed: prefill and decode tokens/s, decode at several batch sizes, decode with and
//! without the KV cache at growing lengths, and the bytes one decoded token reads. Steps are timed
//! by the wall clock around `Session::step`, which records a whole step into one submit and waits
//! for its 4-byte-per-sequence readback; batch-1 decode is timed once more run ahead
//! (`Session::step_ahead`), as `generate` decodes greedily.

use std::time::Instant;

use anyhow::{Result, bail};
use kiln_model::session::{Architecture, Output, Session};
use kiln_runtime::{Context, Profile};

/// What to measure and how often.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Prompt lengths for prefill.
    pub prompts: Vec<usize>,
    /// Decode steps timed after the prompt.
    pub decode_steps: usize,
    /// Sequences decoded together.
    pub batches: Vec<usize>,
    /// Context lengths for the KV-cache on/off curve.
    pub kv_lengths: Vec<usize>,
    /// Repetitions of each measurement; the median is kept.
    pub reps: usize,
}

#[derive(Clone, Debug)]
pub struct Prefill {
    pub tokens: usize,
    pub tokens_per_s: f64,
}

#[derive(Clone, Debug)]
pub struct Batch {
    pub batch: usize,
    /// Generated tokens per second, all sequences together.
    pub tokens_per_s: f64,
    /// Milliseconds per decode step.
    pub step_ms: f64,
}

#[derive(Clone, Debug)]
pub struct KvPoint {
    /// Tokens in the context when the next token is computed.
    pub length: usize,
    pub cached_tokens_per_s: f64,
    /// Recomputing the whole prefix for every token.
    pub uncached_tokens_per_s: f64,
}

#[derive(Clone, Debug)]
pub struct ModelResult {
    pub name: String,
    pub weight_bytes: u64,
    pub prefill: Vec<Prefill>,
    /// Batch-1 decode after the first prompt.
    pub decode_tokens_per_s: f64,
    /// The same decode run ahead: each greedy step is chained on the GPU to the one before and
    /// submitted before that one's token is read, so the GPU never waits for the host.
    pub decode_ahead_tokens_per_s: f64,
    /// Median CPU time recording one of those steps up to its last submit (seconds).
    pub decode_record_seconds: f64,
    /// Kernel launches in one of those steps.
    pub decode_launches: usize,
    /// Weights and KV read by one batch-1 decode step at the measured positions.
    pub bytes_per_token: u64,
    pub batches: Vec<Batch>,
    pub kv_curve: Vec<KvPoint>,
    /// The batch-1 decode steps again, kernel by kernel (where timestamps are granted).
    pub decode_profile: Option<StepProfile>,
    /// One prefill of each prompt length again, kernel by kernel (where timestamps are granted).
    pub prefill_profiles: Vec<(usize, StepProfile)>,
}

/// Where a step's time goes: GPU time per kernel variant over `steps` profiled steps.
#[derive(Clone, Debug)]
pub struct StepProfile {
    pub steps: usize,
    pub profile: Profile,
    /// Wall time of the profiled steps (timing every launch makes them slower).
    pub wall_seconds: f64,
}

impl StepProfile {
    /// Rows of (kernel, weight format or "", launches per step, seconds per step), summed over
    /// variants that differ in anything else, the most time first.
    pub fn rows(&self) -> Vec<(String, String, f64, f64)> {
        let per = self.steps.max(1) as f64;
        kiln_kernels::profile::by_kernel(&self.profile)
            .into_iter()
            .map(|r| {
                let launches = r.launches as f64 / per;
                (r.kernel, r.weights.to_string(), launches, r.seconds / per)
            })
            .collect()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A fixed token sequence of length `n` inside the vocabulary.
fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

/// Seconds of one step over `ids` for sequence `seq` (appended to what it holds).
fn timed_step(
    ctx: &Context,
    model: &dyn Architecture,
    s: &mut Session,
    seq: usize,
    ids: &[u32],
) -> Result<f64> {
    let rows: Vec<(usize, u32)> = ids.iter().map(|&t| (seq, t)).collect();
    let t = Instant::now();
    s.step(ctx, model, &rows, &[rows.len() - 1], Output::Argmax)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Measures `model` by `plan`.
pub fn measure(
    ctx: &Context,
    name: &str,
    model: &dyn Architecture,
    plan: &Plan,
) -> Result<ModelResult> {
    if plan.reps == 0
        || plan.decode_steps == 0
        || plan.prompts.is_empty()
        || plan.prompts.iter().chain(&plan.kv_lengths).any(|&n| n < 2)
        || plan.batches.contains(&0)
    {
        bail!(
            "a benchmark plan needs prompts and context lengths of at least 2 tokens, batches of at least 1, and at least one repetition and decode step: {plan:?}"
        );
    }
    let dims = model.dims();
    let vocab = dims.n_vocab;
    let longest = plan
        .prompts
        .iter()
        .chain(&plan.kv_lengths)
        .copied()
        .max()
        .unwrap_or(1);
    let capacity = (longest + plan.decode_steps + 3).min(dims.max_positions.unwrap_or(usize::MAX));
    let mut s = Session::new(ctx, model, 1, capacity, longest + 1)?;

    // Warm-up: every pipeline compiles on its first use (a prefill of the first prompt's
    // length goes through the matmul kernels, a single row through the mat-vec ones).
    let first = plan.prompts.first().copied().unwrap_or(2);
    timed_step(ctx, model, &mut s, 0, &tokens(first, vocab))?;
    timed_step(ctx, model, &mut s, 0, &[1])?;

    let mut prefill = Vec::new();
    for &n in &plan.prompts {
        let ids = tokens(n, vocab);
        let mut times = Vec::new();
        for _ in 0..plan.reps {
            s.reset(0);
            times.push(timed_step(ctx, model, &mut s, 0, &ids)?);
        }
        prefill.push(Prefill {
            tokens: n,
            tokens_per_s: n as f64 / median(times),
        });
    }

    // Batch-1 decode after the first prompt.
    let (mut rates, mut records, mut decode_launches) = (Vec::new(), Vec::new(), 0);
    for _ in 0..plan.reps {
        s.reset(0);
        timed_step(ctx, model, &mut s, 0, &tokens(first, vocab))?;
        timed_step(ctx, model, &mut s, 0, &[1])?;
        let t = Instant::now();
        for i in 0..plan.decode_steps {
            let out = s.step(ctx, model, &[(0, (i % vocab) as u32)], &[0], Output::Argmax)?;
            records.push(out.record_time.as_secs_f64());
            decode_launches = out.launches;
        }
        rates.push(plan.decode_steps as f64 / t.elapsed().as_secs_f64());
    }
    let decode_tokens_per_s = median(rates);
    let decode_record_seconds = median(records);
    let mut rates = Vec::new();
    for _ in 0..plan.reps {
        s.reset(0);
        timed_step(ctx, model, &mut s, 0, &tokens(first, vocab))?;
        timed_step(ctx, model, &mut s, 0, &[1])?;
        let t = Instant::now();
        let mut in_flight = s.step_ahead(ctx, model, &[0], Some(&[1]))?;
        for _ in 1..plan.decode_steps {
            let next = s.step_ahead(ctx, model, &[0], None)?;
            s.tokens(ctx, &in_flight)?;
            in_flight = next;
        }
        s.tokens(ctx, &in_flight)?;
        rates.push(plan.decode_steps as f64 / t.elapsed().as_secs_f64());
    }
    let decode_ahead_tokens_per_s = median(rates);
    // The same steps once more with every dispatch timed (slower end to end: see
    // kiln_runtime::profile), for the shares.
    let decode_profile = if ctx.features.timestamps {
        s.reset(0);
        timed_step(ctx, model, &mut s, 0, &tokens(first, vocab))?;
        timed_step(ctx, model, &mut s, 0, &[1])?;
        ctx.profile_begin()?;
        let t = Instant::now();
        let steps = (0..plan.decode_steps).try_for_each(|i| {
            s.step(ctx, model, &[(0, (i % vocab) as u32)], &[0], Output::Argmax)
                .map(|_| ())
        });
        let wall_seconds = t.elapsed().as_secs_f64();
        let profile = ctx.profile_end();
        steps?;
        Some(StepProfile {
            steps: plan.decode_steps,
            profile,
            wall_seconds,
        })
    } else {
        None
    };
    // Each prompt's prefill once more with every dispatch timed: which kernels a short prompt
    // waits on, against a long one.
    let mut prefill_profiles = Vec::new();
    if ctx.features.timestamps {
        for &n in &plan.prompts {
            s.reset(0);
            ctx.profile_begin()?;
            let wall = timed_step(ctx, model, &mut s, 0, &tokens(n, vocab));
            let profile = ctx.profile_end();
            prefill_profiles.push((
                n,
                StepProfile {
                    steps: 1,
                    profile,
                    wall_seconds: wall?,
                },
            ));
        }
    }
    let mean_pos = (first + plan.decode_steps / 2) as u64;
    let bytes_per_token =
        model.weight_bytes_per_token() + s.kv_bytes() / capacity as u64 * mean_pos;

    // KV cache on and off: the next token at `length` from the cache (after one untimed step,
    // as the first step after a prefill touches fresh buffers), or by recomputing all.
    let mut kv_curve = Vec::new();
    for &length in &plan.kv_lengths {
        let ids = tokens(length + 1, vocab);
        let (mut cached, mut uncached) = (Vec::new(), Vec::new());
        for _ in 0..plan.reps {
            s.reset(0);
            timed_step(ctx, model, &mut s, 0, &ids[..length - 1])?;
            timed_step(ctx, model, &mut s, 0, &ids[length - 1..length])?;
            cached.push(timed_step(ctx, model, &mut s, 0, &ids[length..])?);
            s.reset(0);
            uncached.push(timed_step(ctx, model, &mut s, 0, &ids)?);
        }
        kv_curve.push(KvPoint {
            length,
            cached_tokens_per_s: 1.0 / median(cached),
            uncached_tokens_per_s: 1.0 / median(uncached),
        });
    }
    drop(s);

    // Batched decode: every sequence takes the first prompt (in one prefill step), then they
    // step together.
    let mut batches = Vec::new();
    for &b in &plan.batches {
        let positions =
            (first + plan.decode_steps + 3).min(dims.max_positions.unwrap_or(usize::MAX));
        let mut s = Session::new(ctx, model, b, positions, first * b)?;
        let prompt: Vec<(usize, u32)> = (0..b)
            .flat_map(|q| tokens(first, vocab).into_iter().map(move |t| (q, t)))
            .collect();
        let select: Vec<usize> = (0..b).map(|q| (q + 1) * first - 1).collect();
        let rows: Vec<(usize, u32)> = (0..b).map(|q| (q, q as u32 + 1)).collect();
        let all: Vec<usize> = (0..b).collect();
        let mut steps = Vec::new();
        for _ in 0..plan.reps {
            (0..b).for_each(|q| s.reset(q));
            s.step(ctx, model, &prompt, &select, Output::Argmax)?;
            // One untimed step: the first after a prefill touches fresh buffers.
            s.step(ctx, model, &rows, &all, Output::Argmax)?;
            let t = Instant::now();
            for _ in 0..plan.decode_steps {
                s.step(ctx, model, &rows, &all, Output::Argmax)?;
            }
            steps.push(t.elapsed().as_secs_f64() / plan.decode_steps as f64);
        }
        let step = median(steps);
        batches.push(Batch {
            batch: b,
            tokens_per_s: b as f64 / step,
            step_ms: step * 1e3,
        });
    }

    Ok(ModelResult {
        name: name.to_string(),
        weight_bytes: model.weight_bytes(),
        prefill,
        decode_tokens_per_s,
        decode_ahead_tokens_per_s,
        decode_record_seconds,
        decode_launches,
        bytes_per_token,
        batches,
        kv_curve,
        decode_profile,
        prefill_profiles,
    })
}
