//! The engine: one thread that owns the device, the model and a [`Session`] with a slot per
//! sequence of the batch over one pool of KV blocks, and runs continuous batching over it.
//! Requests arrive on a channel; each answers on its own channel of [`Event`]s, and a request
//! whose receiver is dropped (the client went away) is removed before the next step and its
//! slot and blocks given back. A new request shares the cached blocks of any earlier prompt
//! that starts as its own does; when a step needs more blocks than are left, the request
//! admitted last goes back to the head of the queue and is recomputed later (as vLLM preempts).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context as _;
use kiln_kernels::attention::KvFormat;
use kiln_model::chat::{self, Message};
use kiln_model::fetch::ensure_default_model;
use kiln_model::loader::{Loaded, load};
use kiln_model::quantize::Quant;
use kiln_model::sampling::{Sampler, SamplerConfig};
use kiln_model::session::{Output, PoolSize, Session};
use kiln_model::tokenizer::TextStream;
use kiln_runtime::{Context, DeviceOptions};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::api::{FinishReason, Usage};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::scheduler::{Slots, plan};
use crate::stop::StopText;
use crate::warmup::warm_up;

/// How the engine loads its model and sizes its batch.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// GGUF file or GPT-2 folder; `None`: the default model, fetched on first use.
    pub model: Option<PathBuf>,
    /// The name clients use in `model` (default: the file's name without its extension).
    pub name: Option<String>,
    pub quant: Quant,
    pub kv: KvFormat,
    /// Sequences decoded together (KV slots).
    pub max_batch: usize,
    /// KV positions per sequence (default: the model's context, at most 2048).
    pub ctx_size: Option<usize>,
    /// Positions per KV block (default 16; int8 KV takes at least 32).
    pub block_size: Option<usize>,
    /// Blocks in the KV pool (default: room for `max_batch` whole contexts).
    pub kv_blocks: Option<usize>,
    /// The KV pool's size in MiB, instead of `kv_blocks`.
    pub kv_memory_mb: Option<usize>,
    /// Most prompt tokens one step prefills.
    pub prefill_chunk: usize,
    /// Requests that may wait for a slot; more are refused as busy.
    pub max_queue: usize,
    pub device: DeviceOptions,
    /// Whether to run a step of each shape before serving ([`crate::warmup`]).
    pub warmup: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            model: None,
            name: None,
            quant: Quant::None,
            kv: KvFormat::F32,
            max_batch: 8,
            ctx_size: None,
            block_size: None,
            kv_blocks: None,
            kv_memory_mb: None,
            prefill_chunk: 128,
            max_queue: 64,
            device: DeviceOptions::default(),
            warmup: false,
        }
    }
}

/// What the engine serves.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub name: String,
    /// KV positions per sequence: prompt and answer together.
    pub capacity: usize,
    /// The adapter and device plan.
    pub device: String,
    /// Unix time the model was loaded.
    pub created: u64,
}

/// A prompt as a request gives it.
#[derive(Clone, Debug)]
pub enum Input {
    Text(String),
    Chat(Vec<Message>),
    Ids(Vec<u32>),
}

/// One generation request.
#[derive(Clone, Debug)]
pub struct Request {
    pub input: Input,
    /// Most tokens to generate (`None`: until the context is full).
    pub max_tokens: Option<usize>,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
}

/// What the engine tells a request, in order: `Started` or `Failed` first, then text pieces,
/// then `Done` (or `Failed` if the device fails).
#[derive(Debug)]
pub enum Event {
    Started {
        prompt_tokens: usize,
    },
    Text(String),
    /// `tokens`: the generated token ids (EOS included where it ended the answer).
    Done {
        finish: FinishReason,
        usage: Usage,
        tokens: Vec<u32>,
    },
    Failed(ApiError),
}

struct Job {
    request: Request,
    events: UnboundedSender<Event>,
}

/// The handle the server holds; dropping it stops the engine thread.
pub struct Engine {
    jobs: Option<mpsc::Sender<Job>>,
    pub info: ModelInfo,
    pub metrics: Arc<Metrics>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Opens the device, loads the model and starts the engine thread; returns once the model
    /// is loaded (or failed to load).
    pub fn start(cfg: EngineConfig) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let (jobs, job_rx) = mpsc::channel();
        let m = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-engine".into())
            .spawn(move || match Worker::open(&cfg, m) {
                Ok(worker) => {
                    let _ = ready_tx.send(Ok(worker.info.clone()));
                    worker.run(job_rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })?;
        let info = ready_rx
            .recv()
            .context("the engine thread ended while loading")??;
        Ok(Self {
            jobs: Some(jobs),
            info,
            metrics,
            thread: Some(thread),
        })
    }

    /// Whether the engine thread is still serving.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Queues `request`; its events arrive on the returned receiver. Dropping the receiver
    /// cancels the request.
    pub fn submit(&self, request: Request) -> UnboundedReceiver<Event> {
        let (events, rx) = unbounded_channel();
        let job = Job { request, events };
        if let Some(Err(mpsc::SendError(job))) = self.jobs.as_ref().map(|j| j.send(job)) {
            let _ = job.events.send(Event::Failed(ApiError::Internal(
                "the engine has stopped".into(),
            )));
        }
        rx
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A request in the queue: new, its prompt tokenized, or sent back from the batch.
enum Waiting {
    New { ids: Vec<u32>, job: Job },
    Preempted(Box<Running>),
}

impl Waiting {
    /// The tokens it will feed (all of them: a preempted request recomputes its KV).
    fn ids(&self) -> &[u32] {
        match self {
            Waiting::New { ids, .. } => ids,
            Waiting::Preempted(r) => &r.ids,
        }
    }

    fn is_cancelled(&self) -> bool {
        match self {
            Waiting::New { job, .. } => job.events.is_closed(),
            Waiting::Preempted(r) => r.events.is_closed(),
        }
    }
}

/// A sequence in the running batch.
struct Running {
    slot: usize,
    /// Admission order: the latest is preempted first.
    admitted: u64,
    /// Prompt and generated tokens.
    ids: Vec<u32>,
    prompt_len: usize,
    /// Tokens of `ids` whose KV is in the slot.
    fed: usize,
    max_tokens: usize,
    sampler: Sampler,
    stream: TextStream,
    stop: StopText,
    events: UnboundedSender<Event>,
}

struct Worker {
    ctx: Context,
    loaded: Loaded,
    session: Session,
    slots: Slots,
    running: Vec<Running>,
    waiting: VecDeque<Waiting>,
    info: ModelInfo,
    max_queue: usize,
    admissions: u64,
    metrics: Arc<Metrics>,
    /// The text of BOS and EOS, for chat templates.
    bos_eos: (String, String),
}

impl Worker {
    fn open(cfg: &EngineConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        anyhow::ensure!(cfg.max_batch >= 1, "--max-batch must be at least 1");
        anyhow::ensure!(cfg.prefill_chunk >= 1, "--prefill-chunk must be at least 1");
        let ctx = Context::new(&cfg.device)?;
        let device = format!("{}; {}", ctx.describe(), kiln_kernels::DevicePlan::of(&ctx));
        let path = match &cfg.model {
            Some(p) => p.clone(),
            None => ensure_default_model(|m| log::info!("{m}"))?,
        };
        let loaded = load(&ctx, &path, cfg.quant, |_, _| {})
            .with_context(|| format!("loading {}", path.display()))?;
        let capacity = cfg.ctx_size.unwrap_or(loaded.n_ctx.min(2048));
        let max_rows = cfg.prefill_chunk + cfg.max_batch;
        let pool = pool_size(cfg, loaded.model.dims(), capacity)?;
        let mut session = Session::with_pool(
            &ctx,
            loaded.model.as_ref(),
            (cfg.max_batch, capacity, max_rows),
            cfg.kv,
            pool,
        )?;
        // A sequence can hold no more than the whole pool.
        let capacity = capacity.min(pool.blocks * pool.block);
        if cfg.warmup {
            let start = Instant::now();
            let model = loaded.model.as_ref();
            warm_up(
                &ctx,
                model,
                &mut session,
                cfg.max_batch,
                cfg.prefill_chunk,
                capacity,
            )
            .context("warming up")?;
            log::info!(
                "kiln-server: warmed up in {:.1} s",
                start.elapsed().as_secs_f64()
            );
        }
        Metrics::set(&metrics.pipelines, ctx.pipelines_compiled());
        let name = cfg.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .or(path.file_name())
                .map_or("model".into(), |s| s.to_string_lossy().into_owned())
        });
        let tok = &loaded.tokenizer;
        let text = |id: Option<u32>| id.and_then(|i| tok.decode(&[i]).ok()).unwrap_or_default();
        let bos_eos = (text(tok.bos), text(tok.eos));
        Metrics::set(&metrics.slots_total, cfg.max_batch);
        Metrics::set(&metrics.kv_positions_total, pool.blocks * pool.block);
        Metrics::set(&metrics.kv_blocks_total, pool.blocks);
        Metrics::set(&metrics.kv_contiguous_positions, cfg.max_batch * capacity);
        Metrics::set(&metrics.kv_block_size, pool.block);
        Metrics::set(&metrics.kv_bytes, session.kv_bytes() as usize);
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Self {
            ctx,
            loaded,
            session,
            slots: Slots::new(cfg.max_batch),
            running: Vec::new(),
            waiting: VecDeque::new(),
            info: ModelInfo {
                name,
                capacity,
                device,
                created,
            },
            max_queue: cfg.max_queue,
            admissions: 0,
            metrics,
            bos_eos,
        })
    }

    /// Serves until every [`Engine`] handle is dropped.
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        loop {
            let mut new = Vec::new();
            if self.running.is_empty() && self.waiting.is_empty() {
                match jobs.recv() {
                    Ok(job) => new.push(job),
                    Err(_) => return,
                }
            }
            new.extend(jobs.try_iter());
            // Cancelled requests go first, so new ones see the room they left.
            self.drop_cancelled();
            for job in new {
                self.arrive(job);
            }
            self.admit();
            if !self.running.is_empty() {
                if let Err(e) = self.step() {
                    self.fail_running(&e.to_string());
                }
            }
            self.publish();
        }
    }

    /// Checks and tokenizes a new request, and queues it or refuses it.
    fn arrive(&mut self, job: Job) {
        match self.prompt_ids(&job.request.input) {
            Ok(ids) if self.waiting.len() < self.slots.free() + self.max_queue => {
                let _ = job.events.send(Event::Started {
                    prompt_tokens: ids.len(),
                });
                self.waiting.push_back(Waiting::New { ids, job });
            }
            Ok(_) => self.refuse(
                &job,
                ApiError::Busy {
                    running: self.running.len(),
                    queued: self.waiting.len(),
                    limit: self.max_queue,
                },
            ),
            Err(e) => self.refuse(&job, e),
        }
    }

    fn refuse(&self, job: &Job, e: ApiError) {
        Metrics::add(&self.metrics.requests_error, 1);
        let _ = job.events.send(Event::Failed(e));
    }

    fn prompt_ids(&self, input: &Input) -> Result<Vec<u32>, ApiError> {
        let tok = &self.loaded.tokenizer;
        let internal = |e: kiln_model::ModelError| ApiError::Internal(e.to_string());
        let ids = match input {
            Input::Text(t) => tok.encode(t).map_err(internal)?,
            Input::Ids(ids) => {
                let vocab = self.loaded.model.dims().n_vocab;
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                    return Err(ApiError::bad(
                        format!("token id {bad} is outside the vocabulary of {vocab}"),
                        Some("prompt"),
                    ));
                }
                ids.clone()
            }
            Input::Chat(messages) => {
                let template = self.loaded.chat_template.as_deref().ok_or_else(|| {
                    ApiError::bad(
                        format!(
                            "{} has no chat template; use /v1/completions",
                            self.info.name
                        ),
                        Some("messages"),
                    )
                })?;
                let (bos, eos) = &self.bos_eos;
                let text = chat::render(template, messages, bos, eos)
                    .map_err(|e| ApiError::bad(e.to_string(), Some("messages")))?;
                tok.encode(&text).map_err(internal)?
            }
        };
        if ids.is_empty() {
            return Err(ApiError::bad("the prompt is empty", Some("prompt")));
        }
        if ids.len() >= self.info.capacity {
            return Err(ApiError::PromptTooLong {
                tokens: ids.len(),
                capacity: self.info.capacity,
            });
        }
        Ok(ids)
    }

    /// Removes requests whose client went away; their slots and blocks are given back.
    fn drop_cancelled(&mut self) {
        let before = self.waiting.len();
        self.waiting.retain(|w| !w.is_cancelled());
        let mut cancelled = before - self.waiting.len();
        for i in (0..self.running.len()).rev() {
            if self.running[i].events.is_closed() {
                let r = self.running.swap_remove(i);
                self.free_slot(r.slot);
                cancelled += 1;
            }
        }
        Metrics::add(&self.metrics.requests_cancelled, cancelled);
    }

    fn free_slot(&mut self, slot: usize) {
        self.session.reset(slot);
        self.slots.release(slot);
    }

    /// Moves waiting requests into free slots while the pool has blocks for their prompts
    /// (and one more for each running sequence to grow into), sharing cached prefix blocks.
    fn admit(&mut self) {
        while self.slots.free() > 0 {
            let Some(front) = self.waiting.front() else {
                break;
            };
            let ids = front.ids();
            let block = self.session.block_size();
            let cached = self.session.cached_prefix(ids);
            let need = ids.len().div_ceil(block) - cached / block + self.running.len();
            if need > self.session.blocks_available() && !self.running.is_empty() {
                break;
            }
            let slot = self.slots.claim().expect("a slot is free");
            let fed = self
                .session
                .attach_prefix(slot, ids)
                .expect("a free slot holds nothing");
            self.admissions += 1;
            let mut r = match self.waiting.pop_front().expect("front") {
                Waiting::Preempted(r) => *r,
                Waiting::New { ids, job } => {
                    Metrics::add(&self.metrics.prompt_tokens, ids.len());
                    Metrics::add(&self.metrics.prefix_cached_tokens, fed);
                    let req = &job.request;
                    Running {
                        slot,
                        admitted: 0,
                        prompt_len: ids.len(),
                        fed,
                        max_tokens: req.max_tokens.unwrap_or(usize::MAX),
                        sampler: Sampler::new(req.sampler.clone()),
                        stream: TextStream::default(),
                        stop: StopText::new(&req.stop),
                        ids,
                        events: job.events,
                    }
                }
            };
            r.slot = slot;
            r.fed = fed;
            r.admitted = self.admissions;
            self.running.push(r);
        }
    }

    /// Sends the running request admitted last back to the head of the queue, giving back its
    /// slot and blocks (its full blocks stay cached, so it recomputes little if it returns soon).
    fn preempt_last(&mut self) {
        let Some(i) = (0..self.running.len()).max_by_key(|&i| self.running[i].admitted) else {
            return;
        };
        let r = self.running.swap_remove(i);
        self.free_slot(r.slot);
        Metrics::add(&self.metrics.preemptions, 1);
        self.waiting.push_front(Waiting::Preempted(Box::new(r)));
    }

    /// One model step: a decode row for each generating sequence and prompt chunks for the rest.
    fn step(&mut self) -> kiln_model::Result<()> {
        let (needs, alloc) = loop {
            let needs: Vec<usize> = self.running.iter().map(|r| r.ids.len() - r.fed).collect();
            let alloc = plan(&needs, self.session.max_rows());
            let blocks: usize = (self.running.iter().zip(&alloc))
                .map(|(r, &n)| self.session.blocks_needed(r.slot, n))
                .sum();
            if blocks <= self.session.blocks_available() {
                break (needs, alloc);
            }
            if self.running.len() > 1 {
                self.preempt_last();
                continue;
            }
            // A lone sequence that has filled the whole pool ends there.
            self.finish(0, FinishReason::Length);
            return Ok(());
        };
        let (mut rows, mut select, mut picked) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in self.running.iter().enumerate() {
            rows.extend(r.ids[r.fed..r.fed + alloc[i]].iter().map(|&t| (r.slot, t)));
            if alloc[i] == needs[i] {
                select.push(rows.len() - 1);
                picked.push(i);
            }
        }
        let greedy = picked.iter().all(|&i| self.running[i].sampler.is_greedy());
        let output = if greedy {
            Output::Argmax
        } else {
            Output::Logits
        };
        let start = Instant::now();
        let model = self.loaded.model.as_ref();
        let out = self
            .session
            .step(&self.ctx, model, &rows, &select, output)?;
        Metrics::add(&self.metrics.steps, 1);
        Metrics::add(&self.metrics.step_rows, rows.len());
        Metrics::add(
            &self.metrics.step_micros,
            start.elapsed().as_micros() as usize,
        );
        for (r, n) in self.running.iter_mut().zip(&alloc) {
            r.fed += n;
        }
        let vocab = model.dims().n_vocab;
        let mut finished = Vec::new();
        for (row, &i) in picked.iter().enumerate() {
            let r = &mut self.running[i];
            let next = if out.logits.is_empty() {
                out.tokens[row]
            } else {
                r.sampler
                    .sample(&out.logits[row * vocab..][..vocab], &r.ids)
            };
            if let Some(finish) = self.accept(i, next)? {
                finished.push((i, finish));
            }
        }
        // Highest index first, so swap_remove leaves the others' indices valid.
        finished.sort_by_key(|&(i, _)| std::cmp::Reverse(i));
        for (i, finish) in finished {
            self.finish(i, finish);
        }
        Ok(())
    }

    /// Ends running request `i`: its answer is complete.
    fn finish(&mut self, i: usize, finish: FinishReason) {
        let r = self.running.swap_remove(i);
        let usage = Usage::new(r.prompt_len, r.ids.len() - r.prompt_len);
        let tokens = r.ids[r.prompt_len..].to_vec();
        let _ = r.events.send(Event::Done {
            finish,
            usage,
            tokens,
        });
        Metrics::add(&self.metrics.requests_ok, 1);
        self.free_slot(r.slot);
    }

    /// Appends a new token to sequence `i`, sends its text, and says whether it finished.
    fn accept(&mut self, i: usize, next: u32) -> kiln_model::Result<Option<FinishReason>> {
        let tok = &self.loaded.tokenizer;
        let r = &mut self.running[i];
        r.ids.push(next);
        Metrics::add(&self.metrics.generation_tokens, 1);
        let generated = r.ids.len() - r.prompt_len;
        let mut finish = None;
        let mut text = String::new();
        if Some(next) == tok.eos {
            finish = Some(FinishReason::Stop);
        } else {
            let released = r.stop.push(&r.stream.push(tok, next)?);
            text = released.text;
            if released.stopped {
                finish = Some(FinishReason::Stop);
            }
        }
        if finish.is_none() && (generated >= r.max_tokens || r.ids.len() >= self.info.capacity) {
            finish = Some(FinishReason::Length);
        }
        if finish.is_some() {
            text.push_str(&r.stop.finish());
        }
        if !text.is_empty() {
            let _ = r.events.send(Event::Text(text));
        }
        Ok(finish)
    }

    /// The device failed a step: every running request ends with the error, and their slots
    /// are emptied (what the step wrote is unknown).
    fn fail_running(&mut self, message: &str) {
        log::error!("step failed: {message}");
        for r in self.running.drain(..) {
            let _ = r.events.send(Event::Failed(ApiError::Internal(format!(
                "the model step failed: {message}"
            ))));
            Metrics::add(&self.metrics.requests_error, 1);
            self.slots.release(r.slot);
            self.session.reset(r.slot);
        }
    }

    fn publish(&self) {
        let m = &self.metrics;
        Metrics::set(&m.running, self.running.len());
        Metrics::set(&m.waiting, self.waiting.len());
        Metrics::set(&m.slots_used, self.slots.used());
        Metrics::set(
            &m.kv_positions_used,
            self.running.iter().map(|r| r.fed).sum(),
        );
        let blocks = self.session.blocks();
        Metrics::set(&m.kv_blocks_used, blocks.used);
        Metrics::set(&m.kv_blocks_cached, blocks.cached);
        Metrics::set(&m.bind_groups, self.session.bind_groups_held());
        Metrics::set(&m.pipelines, self.ctx.pipelines_compiled());
    }
}

/// The KV pool `cfg` asks for: blocks of `--block-size` positions (16 by default, int8 KV at
/// least 32), `--kv-blocks` of them, or as many as `--kv-memory` MiB hold, or room for
/// `--max-batch` whole contexts.
fn pool_size(
    cfg: &EngineConfig,
    dims: kiln_model::step::Dims,
    capacity: usize,
) -> anyhow::Result<PoolSize> {
    let block = cfg.block_size.unwrap_or(16).max(cfg.kv.min_block());
    anyhow::ensure!(
        block.is_power_of_two() && block.is_multiple_of(cfg.kv.min_block()),
        "--block-size {block}: a power of two{}",
        if cfg.kv.min_block() > 1 {
            format!(", at least {} for {} KV", cfg.kv.min_block(), cfg.kv)
        } else {
            String::new()
        }
    );
    let whole = PoolSize::whole(cfg.max_batch, capacity, block);
    let blocks = match (cfg.kv_blocks, cfg.kv_memory_mb) {
        (Some(_), Some(_)) => anyhow::bail!("give --kv-blocks or --kv-memory, not both"),
        (Some(n), None) => n,
        (None, Some(mb)) => {
            // Keys and values of every layer; int8's scales aside.
            let per_block =
                2 * dims.n_layer * dims.n_kv_head * dims.head_dim * block * cfg.kv.value_bytes();
            (mb << 20) / per_block
        }
        (None, None) => whole.blocks,
    };
    anyhow::ensure!(
        blocks >= 1,
        "the KV pool must hold at least one block of {block} positions"
    );
    Ok(PoolSize { block, blocks })
}
