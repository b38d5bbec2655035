//! The running `llm-analyze` node: a pool of `concurrency` worker threads that build, send,
//! retry and cache requests, and the node side that hands them work and emits their records
//! in frame order.

use super::cache::{Cache, Entry};
use super::client::{Client, Failure, Reply};
use super::config::{Config, group_sizes};
use super::images;
use super::limits::{Limits, backoff, sleep_unless};
use super::prompt::{self, FrameRef, PromptCtx};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vidflow_engine::Emitter;
use vidflow_engine::{End, Frame, Input, NodeError, Payload, Process};

/// Output port of the records.
const RECORDS: usize = 0;

/// One unit of work for a worker: the frames it answers for (with their sequence numbers in
/// the node's input order) and the batch they belong to.
struct Job {
    batch: u64,
    frames: Vec<(u64, Frame)>,
    /// The batch's frames, for the prompt's frame list.
    context: Vec<FrameRef>,
}

/// What the workers share.
struct Shared {
    cfg: Config,
    client: Client,
    limits: Limits,
    cache: Option<Cache>,
    /// Set when the run stops: workers drop what is left.
    cancel: AtomicBool,
    /// Cleared when the server rejects `response_format`.
    json_mode: AtomicBool,
    /// An error no request can get past (wrong key, URL or model; unreachable server).
    fatal: Mutex<Option<NodeError>>,
    any_success: AtomicBool,
    cache_warned: AtomicBool,
}

impl Shared {
    fn fatal(&self) -> Option<NodeError> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn set_fatal(&self, e: NodeError) {
        let mut f = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
    }
}

/// The node.
pub struct Analyze {
    shared: Arc<Shared>,
    jobs: Option<Sender<Job>>,
    results: Receiver<(u64, Value)>,
    threads: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_emit: u64,
    next_batch: u64,
    ready: BTreeMap<u64, Value>,
}

impl Analyze {
    pub fn start(cfg: Config) -> Result<Analyze, NodeError> {
        let node = cfg.node.clone();
        let api_key = match &cfg.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(k) if !k.trim().is_empty() => Some(k.trim().to_string()),
                Ok(_) => {
                    return Err(NodeError::input(format!(
                        "node `{node}`: the environment variable `{var}` (named by `api_key_env`) is empty; put the API key in it"
                    )));
                }
                Err(std::env::VarError::NotPresent) => {
                    return Err(NodeError::input(format!(
                        "node `{node}`: the environment variable `{var}` (named by `api_key_env`) is not set; export it with the API key, or remove `api_key_env` for a server without authentication"
                    )));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(NodeError::input(format!(
                        "node `{node}`: the environment variable `{var}` (named by `api_key_env`) is not valid text"
                    )));
                }
            },
        };
        let cache = match &cfg.cache_dir {
            Some(dir) => Some(Cache::open(dir).map_err(|e| {
                NodeError::input(format!(
                    "node `{node}`: {e}; choose another `cache_dir` or set `cache: false`"
                ))
            })?),
            None => None,
        };
        let shared = Arc::new(Shared {
            client: Client::new(&cfg.base_url, api_key, cfg.timeout, cfg.concurrency),
            limits: Limits::new(cfg.requests_per_minute, cfg.tokens_per_minute),
            cache,
            cancel: AtomicBool::new(false),
            json_mode: AtomicBool::new(cfg.json_mode),
            fatal: Mutex::new(None),
            any_success: AtomicBool::new(false),
            cache_warned: AtomicBool::new(false),
            cfg,
        });
        let n = shared.cfg.concurrency;
        let (job_tx, job_rx) = bounded::<Job>(n);
        let (res_tx, res_rx) = unbounded();
        let mut threads = vec![];
        for i in 0..n {
            let (s, jobs, results) = (shared.clone(), job_rx.clone(), res_tx.clone());
            let t = std::thread::Builder::new()
                .name(format!("{node}:llm#{i}"))
                .spawn(move || worker(&s, jobs, results))
                .map_err(|e| {
                    NodeError::runtime(format!("node `{node}`: cannot start a worker thread: {e}"))
                })?;
            threads.push(t);
        }
        Ok(Analyze {
            shared,
            jobs: Some(job_tx),
            results: res_rx,
            threads,
            next_seq: 0,
            next_emit: 0,
            next_batch: 0,
            ready: BTreeMap::new(),
        })
    }

    fn node(&self) -> &str {
        &self.shared.cfg.node
    }

    fn submit(&mut self, job: Job) -> Result<(), NodeError> {
        let node = self.node().to_string();
        let tx = self.jobs.as_ref().ok_or_else(|| {
            NodeError::runtime(format!("node `{node}`: frames arrived after the end"))
        })?;
        tx.send(job).map_err(|_| {
            NodeError::runtime(format!("node `{node}`: every worker thread has stopped"))
        })
    }

    /// Moves finished records into the reorder buffer without waiting.
    fn collect_ready(&mut self) {
        while let Ok((seq, rec)) = self.results.try_recv() {
            self.ready.insert(seq, rec);
        }
    }

    /// Emits the records that are next in frame order.
    fn emit_ready(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        while let Some(rec) = self.ready.remove(&self.next_emit) {
            out.emit(RECORDS, Payload::record(rec))?;
            self.next_emit += 1;
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        self.shared.cancel.store(true, Relaxed);
        self.jobs = None;
    }
}

impl Drop for Analyze {
    fn drop(&mut self) {
        // Workers still in a request finish it (bounded by `timeout_s`) and exit; nobody waits.
        self.shutdown();
    }
}

impl Process for Analyze {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        if let Some(e) = self.shared.fatal() {
            return Err(e);
        }
        let mut frames = Vec::with_capacity(input.items.len());
        for item in &input.items {
            frames.push(item.frame_for(self.node())?.clone());
        }
        let cfg_multi = self.shared.cfg.multi;
        let mut rest = frames.into_iter();
        for size in group_sizes(input.items.len(), self.shared.cfg.max_images) {
            let group: Vec<Frame> = rest.by_ref().take(size).collect();
            let batch = self.next_batch;
            self.next_batch += 1;
            let context: Vec<FrameRef> = group
                .iter()
                .map(|f| FrameRef {
                    index: f.index,
                    pts: f.pts,
                })
                .collect();
            let mut items = Vec::with_capacity(group.len());
            for f in group {
                items.push((self.next_seq, f));
                self.next_seq += 1;
            }
            if cfg_multi {
                self.submit(Job {
                    batch,
                    frames: items,
                    context,
                })?;
            } else {
                for item in items {
                    self.submit(Job {
                        batch,
                        frames: vec![item],
                        context: context.clone(),
                    })?;
                }
            }
        }
        self.collect_ready();
        self.emit_ready(out)
    }

    fn finish(&mut self, out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
        if end == End::Stopped {
            self.shutdown();
            return Ok(());
        }
        self.jobs = None;
        loop {
            self.collect_ready();
            self.emit_ready(out)?;
            if self.next_emit == self.next_seq {
                break;
            }
            if let Some(e) = self.shared.fatal() {
                self.shutdown();
                return Err(e);
            }
            if out.stopping() {
                self.shutdown();
                return Err(NodeError::Stopped);
            }
            match self.results.recv_timeout(Duration::from_millis(50)) {
                Ok((seq, rec)) => {
                    self.ready.insert(seq, rec);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(NodeError::runtime(format!(
                        "node `{}`: the workers ended without answering for frames {}..{} (a bug)",
                        self.node(),
                        self.next_emit,
                        self.next_seq
                    )));
                }
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        match self.shared.fatal() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn worker(s: &Shared, jobs: Receiver<Job>, results: Sender<(u64, Value)>) {
    for job in jobs {
        if s.cancel.load(Relaxed) {
            continue;
        }
        let records = catch_unwind(AssertUnwindSafe(|| run_job(s, &job))).unwrap_or_else(|p| {
            let why = p
                .downcast_ref::<&str>()
                .map(|m| m.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            job.frames
                .iter()
                .map(|(seq, f)| {
                    let mut r = Outcome::failed(format!("internal error: {why}"));
                    r.attempts = 0;
                    (*seq, record(s, &job, f, r))
                })
                .collect()
        });
        for r in records {
            if results.send(r).is_err() {
                return;
            }
        }
    }
}

/// How a frame's analysis came about.
struct Outcome {
    analysis: Option<Value>,
    tokens: Option<u64>,
    latency: Duration,
    attempts: u32,
    cached: bool,
    fallback: Option<String>,
    error: Option<String>,
}

impl Outcome {
    fn failed(error: String) -> Outcome {
        Outcome {
            analysis: None,
            tokens: None,
            latency: Duration::ZERO,
            attempts: 0,
            cached: false,
            fallback: None,
            error: Some(error),
        }
    }
}

fn record(s: &Shared, job: &Job, f: &Frame, o: Outcome) -> Value {
    json!({
        "index": f.index,
        "pts": f.pts,
        "batch": job.batch,
        "analysis": o.analysis.unwrap_or(Value::Null),
        "model": s.cfg.model,
        "tokens": o.tokens,
        "latency_ms": o.latency.as_millis() as u64,
        "attempts": o.attempts,
        "cached": o.cached,
        "fallback": o.fallback,
        "error": o.error,
    })
}

/// Frame `i`'s share of `total` split over `n` frames (the shares add up to `total`).
fn share(total: u64, i: usize, n: usize) -> u64 {
    let n = n.max(1) as u64;
    total / n + u64::from((i as u64) < total % n)
}

/// Images of a job's frames, encoded once and reused by the one-frame fallback.
struct Images<'a> {
    s: &'a Shared,
    done: HashMap<u64, Result<Arc<String>, String>>,
}

impl Images<'_> {
    fn uri(&mut self, f: &Frame) -> Result<Arc<String>, String> {
        let (max_side, q) = (self.s.cfg.max_side, self.s.cfg.jpeg_quality);
        self.done
            .entry(f.index)
            .or_insert_with(|| {
                images::frame_jpeg(f, max_side, q)
                    .map(|(jpeg, _, _)| Arc::new(images::data_uri(&jpeg)))
            })
            .clone()
    }
}

fn refs(frames: &[(u64, Frame)]) -> Vec<FrameRef> {
    frames
        .iter()
        .map(|(_, f)| FrameRef {
            index: f.index,
            pts: f.pts,
        })
        .collect()
}

fn run_job(s: &Shared, job: &Job) -> Vec<(u64, Value)> {
    let mut imgs = Images {
        s,
        done: HashMap::new(),
    };
    let n = job.frames.len();
    if !s.cfg.multi || n == 1 {
        return job
            .frames
            .iter()
            .map(|(seq, f)| (*seq, record(s, job, f, ask_single(s, job, f, &mut imgs))))
            .collect();
    }
    let frames = refs(&job.frames);
    let mut pictures = vec![];
    let mut encode_error = None;
    if s.cfg.send_images {
        for (_, f) in &job.frames {
            match imgs.uri(f) {
                Ok(u) => pictures.push((
                    FrameRef {
                        index: f.index,
                        pts: f.pts,
                    },
                    u,
                )),
                Err(e) => encode_error = Some(e),
            }
        }
    }
    let ctx = PromptCtx {
        frames: &frames,
        target: None,
        batch: job.batch,
    };
    let text = format!(
        "{}\n\n{}",
        prompt::render(&s.cfg.prompt, &ctx),
        prompt::multi_instructions(
            &frames,
            s.cfg.send_images,
            !s.cfg.prompt.contains("{frames}")
        )
    );
    let system = s.cfg.system.as_deref().map(|t| prompt::render(t, &ctx));
    let (why, asked) = match encode_error {
        Some(e) => (e, None),
        None => {
            let asked = ask(s, system.as_deref(), &text, &pictures);
            match &asked.reply {
                Ok(reply) => match prompt::split_answer(&reply.content, &frames) {
                    Ok(analyses) => {
                        let total = reply.usage.map(|u| u.total);
                        return job
                            .frames
                            .iter()
                            .zip(analyses)
                            .enumerate()
                            .map(|(i, ((seq, f), analysis))| {
                                let o = Outcome {
                                    analysis: Some(analysis),
                                    tokens: total.map(|t| share(t, i, n)),
                                    latency: asked.latency,
                                    attempts: asked.attempts,
                                    cached: asked.cached,
                                    fallback: None,
                                    error: None,
                                };
                                (*seq, record(s, job, f, o))
                            })
                            .collect();
                    }
                    Err(why) => (why, Some(asked)),
                },
                Err(e) => (e.clone(), Some(asked)),
            }
        }
    };
    // The batch gave no usable answer: ask about each frame alone.
    job.frames
        .iter()
        .enumerate()
        .map(|(i, (seq, f))| {
            let mut o = ask_single(s, job, f, &mut imgs);
            if let Some(a) = &asked {
                o.attempts += a.attempts;
                o.latency += a.latency;
                if let Some(u) = a.reply.as_ref().ok().and_then(|r| r.usage) {
                    o.tokens = Some(o.tokens.unwrap_or(0) + share(u.total, i, n));
                }
            }
            o.fallback = Some(format!("batch of {n} frames: {why}"));
            (*seq, record(s, job, f, o))
        })
        .collect()
}

fn ask_single(s: &Shared, job: &Job, f: &Frame, imgs: &mut Images<'_>) -> Outcome {
    let target = FrameRef {
        index: f.index,
        pts: f.pts,
    };
    let mut pictures = vec![];
    if s.cfg.send_images {
        match imgs.uri(f) {
            Ok(u) => pictures.push((target, u)),
            Err(e) => return Outcome::failed(e),
        }
    }
    let ctx = PromptCtx {
        frames: &job.context,
        target: Some(target),
        batch: job.batch,
    };
    let text = format!(
        "{}\n\n{}",
        prompt::render(&s.cfg.prompt, &ctx),
        prompt::single_instructions(
            target,
            &job.context,
            s.cfg.send_images,
            !s.cfg.prompt.contains("{frames}")
        )
    );
    let system = s.cfg.system.as_deref().map(|t| prompt::render(t, &ctx));
    let asked = ask(s, system.as_deref(), &text, &pictures);
    match asked.reply {
        Ok(reply) => Outcome {
            analysis: Some(prompt::single_analysis(&reply.content)),
            tokens: reply.usage.map(|u| u.total),
            latency: asked.latency,
            attempts: asked.attempts,
            cached: asked.cached,
            fallback: None,
            error: None,
        },
        Err(e) => Outcome {
            analysis: None,
            tokens: None,
            latency: asked.latency,
            attempts: asked.attempts,
            cached: false,
            fallback: None,
            error: Some(e),
        },
    }
}

/// The result of one request with its retries.
struct Asked {
    reply: Result<Reply, String>,
    attempts: u32,
    latency: Duration,
    cached: bool,
}

/// The JSON body of a chat completion request.
fn request_body(
    s: &Shared,
    system: Option<&str>,
    text: &str,
    pictures: &[(FrameRef, Arc<String>)],
    json_mode: bool,
) -> Value {
    let mut messages = vec![];
    if let Some(sys) = system {
        messages.push(json!({"role": "system", "content": sys}));
    }
    let content = if pictures.is_empty() {
        Value::String(text.to_string())
    } else {
        let mut parts = vec![json!({"type": "text", "text": text})];
        for (f, uri) in pictures {
            parts.push(json!({"type": "text", "text": prompt::image_label(*f)}));
            parts.push(json!({"type": "image_url", "image_url": {"url": uri.as_str()}}));
        }
        Value::Array(parts)
    };
    messages.push(json!({"role": "user", "content": content}));
    let mut body = json!({
        "model": s.cfg.model,
        "messages": messages,
        "temperature": s.cfg.temperature,
        "max_tokens": s.cfg.max_tokens,
        "stream": false,
    });
    if json_mode {
        body["response_format"] = json!({"type": "json_object"});
    }
    body
}

/// Sends one request (or answers it from the cache), retrying what is worth retrying.
fn ask(
    s: &Shared,
    system: Option<&str>,
    text: &str,
    pictures: &[(FrameRef, Arc<String>)],
) -> Asked {
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut retries = 0u32;
    let done = |reply: Result<Reply, String>, attempts: u32, cached: bool| Asked {
        reply,
        attempts,
        latency: started.elapsed(),
        cached,
    };
    let estimate = (text.len() + system.map_or(0, str::len)) as u64 / 4
        + pictures.len() as u64 * s.cfg.tokens_per_image
        + s.cfg.max_tokens;
    loop {
        if let Some(e) = s.fatal() {
            return done(Err(format!("not sent: {e}")), attempts, false);
        }
        let json_mode = s.json_mode.load(Relaxed);
        let body = serde_json::to_string(&request_body(s, system, text, pictures, json_mode))
            .expect("JSON value serialises");
        let key = s.cache.as_ref().map(|_| Cache::key(body.as_bytes()));
        if let (Some(cache), Some(key)) = (&s.cache, &key)
            && let Some(hit) = cache.get(key)
        {
            let reply = Reply {
                content: hit.content,
                usage: hit.usage,
            };
            return done(Ok(reply), attempts, true);
        }
        if s.limits.acquire(estimate, &s.cancel).is_err() {
            return done(
                Err("stopped before the request was sent".into()),
                attempts,
                false,
            );
        }
        attempts += 1;
        match s.client.send(&body) {
            Ok(reply) => {
                s.any_success.store(true, Relaxed);
                s.limits
                    .settle(estimate, reply.usage.map_or(estimate, |u| u.total));
                if let (Some(cache), Some(key)) = (&s.cache, &key) {
                    let entry = Entry {
                        content: reply.content.clone(),
                        usage: reply.usage,
                    };
                    if let Err(e) = cache.put(key, &s.cfg.model, &entry)
                        && !s.cache_warned.swap(true, Relaxed)
                    {
                        vidflow_engine::progress::say(format!(
                            "warning: node `{}`: cannot write the response cache ({e}); answers will not be reused",
                            s.cfg.node
                        ));
                    }
                }
                return done(Ok(reply), attempts, false);
            }
            Err(Failure::Refused {
                response_format: true,
                ..
            }) if json_mode => {
                // The server does not do JSON mode: ask without it from now on.
                s.json_mode.store(false, Relaxed);
            }
            Err(Failure::Refused { message, .. }) => {
                return done(Err(message), attempts, false);
            }
            Err(Failure::Fatal { message }) => {
                s.set_fatal(NodeError::input(format!(
                    "node `{}`: {message}",
                    s.cfg.node
                )));
                return done(Err(message), attempts, false);
            }
            Err(Failure::Retry {
                message,
                retry_after,
                unreachable,
                rate_limited,
            }) => {
                if retries >= s.cfg.max_retries {
                    if unreachable && !s.any_success.load(Relaxed) {
                        s.set_fatal(NodeError::runtime(format!(
                            "node `{}`: {message} (after {attempts} attempt{}); is the server running? check `base_url`",
                            s.cfg.node,
                            if attempts == 1 { "" } else { "s" }
                        )));
                    }
                    return done(
                        Err(format!(
                            "{message} (gave up after {attempts} attempt{})",
                            if attempts == 1 { "" } else { "s" }
                        )),
                        attempts,
                        false,
                    );
                }
                if rate_limited && let Some(ra) = retry_after {
                    s.limits.pause_until(Instant::now() + ra);
                }
                let wait = backoff(retries, s.cfg.backoff, s.cfg.max_backoff, retry_after);
                retries += 1;
                if !sleep_unless(wait, &s.cancel) {
                    return done(
                        Err(format!("stopped while retrying: {message}")),
                        attempts,
                        false,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_add_up() {
        for total in [0u64, 1, 7, 100, 101] {
            for n in 1..7 {
                let parts: Vec<u64> = (0..n).map(|i| share(total, i, n)).collect();
                assert_eq!(parts.iter().sum::<u64>(), total);
                assert!(parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1);
            }
        }
    }
}
