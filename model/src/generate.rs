//! The generation loop: prefill each prompt in chunks, then decode all unfinished sequences
//! together, one token each per step (a batch of B rows is one pass over the weights). Stops at
//! EOS, a stop string, the token budget, or a full context.

use std::time::{Duration, Instant};

use kiln_kernels::DevicePlan;
use kiln_kernels::attention::KvFormat;
use kiln_runtime::Context;

use crate::error::{ModelError, Result};
use crate::quantize::Quant;
use crate::sampling::{Sampler, SamplerConfig, Verdict};
use crate::session::{Architecture, Output, Pending, Session};
use crate::speculative::{FirstLayers, SpecConfig, Speculation, default_layers, ngram_draft};
use crate::tokenizer::{TextStream, Tokenizer};

#[derive(Clone, Debug)]
pub struct GenerateConfig {
    /// Most new tokens per sequence.
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Generation stops when the text ends with any of these.
    pub stop: Vec<String>,
    /// KV positions per sequence (prompt + generated).
    pub capacity: usize,
    /// Most prompt tokens per prefill step.
    pub prefill_chunk: usize,
    /// How the KV cache stores keys and values.
    pub kv: KvFormat,
    /// Whether greedy decode runs ahead on the device, each step submitted before the previous
    /// one's tokens are read ([`Session::step_ahead`]); otherwise every step waits for its
    /// tokens. `None`: as the device plan says ([`DevicePlan::run_ahead`]: on GPUs).
    pub ahead: Option<bool>,
    /// Speculative decoding: drafts checked by the model in one pass per step.
    pub spec: Option<SpecConfig>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            capacity: 2048,
            prefill_chunk: 128,
            kv: KvFormat::F32,
            ahead: None,
            spec: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    StopString,
    MaxTokens,
    ContextFull,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub generated_ids: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
    /// Speculative decoding: tokens drafted, and how many of them the model kept.
    pub drafted: usize,
    pub accepted: usize,
}

/// Wall-clock time of the two phases (each includes its submits and readbacks).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub prefill_tokens: usize,
    pub prefill_time: Duration,
    /// Tokens produced by decode steps (the first token of each sequence comes from prefill).
    pub decode_tokens: usize,
    pub decode_time: Duration,
    pub decode_steps: usize,
    /// Speculative decoding: tokens drafted and kept, over all sequences.
    pub drafted: usize,
    pub accepted: usize,
}

impl Stats {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prefill_tokens as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }
    pub fn decode_tokens_per_s(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

struct Seq {
    ids: Vec<u32>,
    prompt_len: usize,
    sampler: Sampler,
    stream: TextStream,
    text: String,
    stop: Option<StopReason>,
    drafted: usize,
    accepted: usize,
}

/// Generates from each of `prompts` (token ids) as one batch; `on_text(i, piece)` receives text as
/// it is produced.
pub fn generate(
    ctx: &Context,
    model: &dyn Architecture,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    mut on_text: impl FnMut(usize, &str),
) -> Result<(Vec<Generation>, Stats)> {
    for (index, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(ModelError::EmptyPrompt { index });
        }
        if p.len() >= cfg.capacity {
            return Err(ModelError::PromptTooLong {
                index,
                tokens: p.len(),
                capacity: cfg.capacity,
            });
        }
    }
    let rows = cfg.prefill_chunk.max(prompts.len()).max(1);
    let mut session = Session::with_kv(ctx, model, prompts.len(), cfg.capacity, rows, cfg.kv)?;
    let mut seqs: Vec<Seq> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Seq {
            ids: p.clone(),
            prompt_len: p.len(),
            // Each sequence draws from its own stream so batching does not change the result.
            sampler: Sampler::new(SamplerConfig {
                seed: cfg.sampler.seed.wrapping_add(i as u64),
                ..cfg.sampler.clone()
            }),
            stream: TextStream::default(),
            text: String::new(),
            stop: (cfg.max_tokens == 0).then_some(StopReason::MaxTokens),
            drafted: 0,
            accepted: 0,
        })
        .collect();
    let mut stats = Stats::default();

    let start = Instant::now();
    for (i, seq) in seqs.iter_mut().enumerate() {
        if seq.stop.is_some() {
            continue;
        }
        let chunks: Vec<&[u32]> = seq.ids.chunks(rows).collect();
        let mut out = None;
        for (c, chunk) in chunks.iter().enumerate() {
            let step_rows: Vec<(usize, u32)> = chunk.iter().map(|&t| (i, t)).collect();
            let select = if c + 1 == chunks.len() {
                vec![chunk.len() - 1]
            } else {
                vec![]
            };
            out = Some(session.step(ctx, model, &step_rows, &select, output_for(&seq.sampler))?);
        }
        stats.prefill_tokens += seq.ids.len();
        let out = out.expect("a non-empty prompt has a chunk");
        let next = pick(&mut seq.sampler, &out, 0, model.dims().n_vocab, &seq.ids);
        accept(seq, i, next, tok, cfg, &mut on_text)?;
    }
    stats.prefill_time = start.elapsed();

    let start = Instant::now();
    let greedy = seqs.iter().all(|s| s.sampler.is_greedy());
    let ahead = cfg.ahead.unwrap_or_else(|| DevicePlan::of(ctx).run_ahead);
    if let Some(spec) = &cfg.spec {
        decode_speculative(
            ctx,
            model,
            tok,
            cfg,
            spec,
            &mut session,
            &mut seqs,
            &mut stats,
            &mut on_text,
        )?;
    } else if ahead && greedy {
        decode_ahead(
            ctx,
            model,
            tok,
            cfg,
            &mut session,
            &mut seqs,
            &mut stats,
            &mut on_text,
        )?;
    }
    loop {
        let active: Vec<usize> = (0..seqs.len())
            .filter(|&i| seqs[i].stop.is_none())
            .collect();
        if active.is_empty() {
            break;
        }
        let step_rows: Vec<(usize, u32)> = active
            .iter()
            .map(|&i| (i, *seqs[i].ids.last().unwrap_or(&0)))
            .collect();
        let all: Vec<usize> = (0..active.len()).collect();
        let output = if active.iter().all(|&i| seqs[i].sampler.is_greedy()) {
            Output::Argmax
        } else {
            Output::Logits
        };
        let out = session.step(ctx, model, &step_rows, &all, output)?;
        stats.decode_steps += 1;
        for (row, &i) in active.iter().enumerate() {
            let seq = &mut seqs[i];
            let next = pick(&mut seq.sampler, &out, row, model.dims().n_vocab, &seq.ids);
            stats.decode_tokens += 1;
            accept(seq, i, next, tok, cfg, &mut on_text)?;
        }
    }
    stats.decode_time = start.elapsed();

    let results = seqs
        .into_iter()
        .map(|s| Generation {
            prompt_ids: s.ids[..s.prompt_len].to_vec(),
            generated_ids: s.ids[s.prompt_len..].to_vec(),
            text: s.text,
            stop: s.stop.unwrap_or(StopReason::MaxTokens),
            drafted: s.drafted,
            accepted: s.accepted,
        })
        .collect();
    Ok((results, stats))
}

/// Greedy decode with each step submitted before the previous one's tokens are read: a step
/// of the same sequences as the one before it takes that step's tokens on the device, so the GPU
/// goes from step to step without waiting for the CPU. A sequence that stops leaves the step
/// after it computed for nothing; the next step is then fed the others' tokens from the CPU.
#[allow(clippy::too_many_arguments)]
fn decode_ahead(
    ctx: &Context,
    model: &dyn Architecture,
    tok: &Tokenizer,
    cfg: &GenerateConfig,
    session: &mut Session,
    seqs: &mut [Seq],
    stats: &mut Stats,
    on_text: &mut impl FnMut(usize, &str),
) -> Result<()> {
    let mut in_flight: Option<(Pending, Vec<usize>)> = None;
    loop {
        let running: Vec<usize> = (0..seqs.len())
            .filter(|&i| seqs[i].stop.is_none())
            .collect();
        let next = match &in_flight {
            // Chain on the step in flight unless its tokens may end a sequence for certain:
            // the budget or the context runs out with them.
            Some((_, last)) if *last == running => {
                let room = running.iter().all(|&i| {
                    let s = &seqs[i];
                    s.ids.len() + 1 - s.prompt_len < cfg.max_tokens
                        && session.len(i) + 1 < cfg.capacity
                });
                room.then(|| session.step_ahead(ctx, model, &running, None))
            }
            Some(_) => None,
            None if running.is_empty() => break,
            None => {
                let last: Vec<u32> = running
                    .iter()
                    .map(|&i| seqs[i].ids[seqs[i].ids.len() - 1])
                    .collect();
                Some(session.step_ahead(ctx, model, &running, Some(&last)))
            }
        }
        .transpose()?;
        if next.is_some() {
            stats.decode_steps += 1;
        }
        if let Some((pending, rows)) = in_flight.take() {
            let tokens = session.tokens(ctx, &pending)?;
            for (&i, &next) in rows.iter().zip(&tokens) {
                let seq = &mut seqs[i];
                if seq.stop.is_none() {
                    stats.decode_tokens += 1;
                    accept(seq, i, next, tok, cfg, on_text)?;
                }
            }
        }
        in_flight = next.map(|p| (p, running));
    }
    Ok(())
}

/// Speculative decode: each step feeds every running sequence its newest token and a draft of up
/// to `spec.draft_tokens` more, as rows of one pass through the model (the prefill path, causal
/// within each sequence). Row j's output checks draft token j ([`Sampler::verify`]: the argmax
/// for greedy, the speculative sampling rule otherwise); the first rejection is replaced by the
/// model's own token, and when all are kept the last row gives one more. The cache then forgets
/// the positions of rejected drafts ([`Session::truncate`]), so the sequence continues as if
/// they had never been written; tokens a truncation could not keep (int8 keys are kept by whole
/// groups) are fed again with the next step.
#[allow(clippy::too_many_arguments)]
fn decode_speculative(
    ctx: &Context,
    model: &dyn Architecture,
    tok: &Tokenizer,
    cfg: &GenerateConfig,
    spec: &SpecConfig,
    session: &mut Session,
    seqs: &mut [Seq],
    stats: &mut Stats,
    on_text: &mut impl FnMut(usize, &str),
) -> Result<()> {
    let vocab = model.dims().n_vocab;
    // A draft model decodes greedily ahead in a session of its own.
    let (loaded, first_layers);
    let draft: Option<&dyn Architecture> = match &spec.mode {
        Speculation::Ngram { .. } => None,
        Speculation::Layers { k } => {
            let n_layer = model.dims().n_layer;
            let k = if *k == 0 { default_layers(n_layer) } else { *k };
            first_layers = FirstLayers { model, k };
            Some(&first_layers)
        }
        Speculation::Draft { path } => {
            loaded = crate::loader::load(ctx, path, Quant::None, |_, _| {})?;
            check_vocabulary(path, &loaded, model, tok)?;
            Some(loaded.model.as_ref())
        }
    };
    let mut drafter = match draft {
        Some(m) => Some((
            m,
            Session::with_kv(ctx, m, seqs.len(), cfg.capacity, session.max_rows(), cfg.kv)?,
        )),
        None => None,
    };
    // Each sequence's draft length adapts to what it keeps: after a rejection, one more than
    // was kept; after a draft kept whole, twice as many (up to `spec.draft_tokens`). Verifying
    // drafts that are thrown away costs rows of the pass.
    let mut limit = vec![spec.draft_tokens; seqs.len()];
    loop {
        let running: Vec<usize> = (0..seqs.len())
            .filter(|&i| seqs[i].stop.is_none())
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        // The rows of one step share the session's row budget.
        let per_seq = session.max_rows() / running.len();
        let ks: Vec<usize> = running
            .iter()
            .map(|&i| {
                let seq = &seqs[i];
                let unfed = seq.ids.len() - session.len(i);
                // Each kept draft token is a new token, and so is the one after the last: keep
                // within the budget, the context and the step's rows.
                let budget = cfg.max_tokens - (seq.ids.len() - seq.prompt_len);
                let room = cfg.capacity.saturating_sub(seq.ids.len());
                limit[i]
                    .min(budget.saturating_sub(1))
                    .min(room.saturating_sub(1))
                    .min(per_seq.saturating_sub(unfed))
            })
            .collect();
        let drafts = match (&spec.mode, &mut drafter) {
            (Speculation::Ngram { n }, _) => running
                .iter()
                .zip(&ks)
                .map(|(&i, &k)| ngram_draft(&seqs[i].ids, *n, k))
                .collect(),
            (_, Some((m, ds))) => model_drafts(ctx, *m, ds, seqs, &running, &ks)?,
            (_, None) => unreachable!("a draft model's mode has its session"),
        };
        let mut rows = Vec::new();
        let mut select = Vec::new();
        for (&i, draft) in running.iter().zip(&drafts) {
            let seq = &seqs[i];
            let unfed = &seq.ids[session.len(i)..];
            rows.extend(unfed.iter().chain(draft).map(|&t| (i, t)));
            // Outputs of the newest token's row and of every draft row.
            let last = rows.len() - draft.len() - 1;
            select.extend(last..rows.len());
        }
        let output = if running.iter().all(|&i| seqs[i].sampler.is_greedy()) {
            Output::Argmax
        } else {
            Output::Logits
        };
        let out = session.step(ctx, model, &rows, &select, output)?;
        stats.decode_steps += 1;
        let mut row = 0;
        for (&i, draft) in running.iter().zip(&drafts) {
            let seq = &mut seqs[i];
            let mut kept = 0;
            for j in 0..=draft.len() {
                let (next, done) = match draft.get(j) {
                    Some(&d) => {
                        match verdict(&mut seq.sampler, &out, row + j, vocab, &seq.ids, d) {
                            Verdict::Accept => (d, false),
                            Verdict::Replace(t) => (t, true),
                        }
                    }
                    None => (pick(&mut seq.sampler, &out, row + j, vocab, &seq.ids), true),
                };
                kept += usize::from(!done);
                stats.decode_tokens += 1;
                accept(seq, i, next, tok, cfg, on_text)?;
                if done || seq.stop.is_some() {
                    break;
                }
            }
            row += draft.len() + 1;
            if !draft.is_empty() {
                limit[i] = match kept == draft.len() {
                    true => (2 * limit[i]).min(spec.draft_tokens),
                    false => kept + 1,
                };
            }
            seq.drafted += draft.len();
            seq.accepted += kept;
            stats.drafted += draft.len();
            stats.accepted += kept;
            // The cache holds the fed tokens and the kept drafts; the newest token is unfed.
            let keep = (seq.ids.len() - 1).min(session.len(i));
            session.truncate(i, keep);
            if let Some((_, ds)) = &mut drafter {
                let keep = (seq.ids.len() - 1).min(ds.len(i));
                ds.truncate(i, keep);
            }
        }
    }
}

/// Greedy drafts of up to `ks[r]` tokens for each running sequence from a draft model: its
/// session first catches up with the tokens it has not seen (in chunks of its rows), whose last
/// row gives the first draft token; then one step for all sequences per further token.
fn model_drafts(
    ctx: &Context,
    draft: &dyn Architecture,
    ds: &mut Session,
    seqs: &[Seq],
    running: &[usize],
    ks: &[usize],
) -> Result<Vec<Vec<u32>>> {
    let mut drafts = vec![Vec::new(); running.len()];
    for (r, &i) in running.iter().enumerate() {
        if ks[r] == 0 {
            continue;
        }
        let ids = &seqs[i].ids;
        let mut from = ds.len(i);
        while from < ids.len() {
            let to = (from + ds.max_rows()).min(ids.len());
            let rows: Vec<(usize, u32)> = ids[from..to].iter().map(|&t| (i, t)).collect();
            let select = if to == ids.len() {
                vec![rows.len() - 1]
            } else {
                vec![]
            };
            let out = ds.step(ctx, draft, &rows, &select, Output::Argmax)?;
            if to == ids.len() {
                drafts[r].push(out.tokens[0]);
            }
            from = to;
        }
    }
    let longest = ks.iter().copied().max().unwrap_or(0);
    for j in 1..longest {
        let more: Vec<usize> = (0..running.len()).filter(|&r| ks[r] > j).collect();
        let rows: Vec<(usize, u32)> = more
            .iter()
            .map(|&r| (running[r], drafts[r][j - 1]))
            .collect();
        let all: Vec<usize> = (0..rows.len()).collect();
        let out = ds.step(ctx, draft, &rows, &all, Output::Argmax)?;
        for (&r, &t) in more.iter().zip(&out.tokens) {
            drafts[r].push(t);
        }
    }
    Ok(drafts)
}

/// A draft model must share the model's vocabulary: the same size and the same text for every
/// token id.
fn check_vocabulary(
    path: &std::path::Path,
    draft: &crate::loader::Loaded,
    model: &dyn Architecture,
    tok: &Tokenizer,
) -> Result<()> {
    let (n, m) = (model.dims().n_vocab, draft.model.dims().n_vocab);
    let differs = |message: String| ModelError::Config {
        path: path.to_path_buf(),
        message: format!("the draft model's vocabulary differs from the model's: {message}"),
    };
    if n != m || tok.vocab_size() != draft.tokenizer.vocab_size() {
        return Err(differs(format!(
            "{m} tokens ({} in its tokenizer) against {n} ({})",
            draft.tokenizer.vocab_size(),
            tok.vocab_size()
        )));
    }
    for id in 0..tok.vocab_size().min(n) as u32 {
        let (a, b) = (tok.decode(&[id])?, draft.tokenizer.decode(&[id])?);
        if a != b {
            return Err(differs(format!("token {id} is {b:?}, not {a:?}")));
        }
    }
    Ok(())
}

/// Checks draft token `draft` against selected row `row` of a step.
fn verdict(
    sampler: &mut Sampler,
    out: &crate::session::StepOutput,
    row: usize,
    vocab: usize,
    history: &[u32],
    draft: u32,
) -> Verdict {
    if out.logits.is_empty() {
        match out.tokens[row] {
            t if t == draft => Verdict::Accept,
            t => Verdict::Replace(t),
        }
    } else {
        sampler.verify(&out.logits[row * vocab..][..vocab], history, draft)
    }
}

fn output_for(sampler: &Sampler) -> Output {
    if sampler.is_greedy() {
        Output::Argmax
    } else {
        Output::Logits
    }
}

/// The next token of selected row `row` of a step.
fn pick(
    sampler: &mut Sampler,
    out: &crate::session::StepOutput,
    row: usize,
    vocab: usize,
    history: &[u32],
) -> u32 {
    if out.logits.is_empty() {
        out.tokens[row]
    } else {
        sampler.sample(&out.logits[row * vocab..][..vocab], history)
    }
}

/// Appends `next` to the sequence, streams its text and decides whether the sequence stops.
fn accept(
    seq: &mut Seq,
    i: usize,
    next: u32,
    tok: &Tokenizer,
    cfg: &GenerateConfig,
    on_text: &mut impl FnMut(usize, &str),
) -> Result<()> {
    seq.ids.push(next);
    if Some(next) == tok.eos {
        seq.stop = Some(StopReason::Eos);
        return Ok(());
    }
    let piece = seq.stream.push(tok, next)?;
    if !piece.is_empty() {
        on_text(i, &piece);
        seq.text.push_str(&piece);
    }
    if cfg
        .stop
        .iter()
        .any(|s| !s.is_empty() && seq.text.ends_with(s.as_str()))
    {
        seq.stop = Some(StopReason::StopString);
    } else if seq.ids.len() - seq.prompt_len >= cfg.max_tokens {
        seq.stop = Some(StopReason::MaxTokens);
    } else if seq.ids.len() >= cfg.capacity {
        // The newest token still has to be fed back: that needs a free position.
        seq.stop = Some(StopReason::ContextFull);
    }
    Ok(())
}
