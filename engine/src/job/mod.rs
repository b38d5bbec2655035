//! Jobs: a run cut into chunks of its source's timeline, each recorded durably, resumable after
//! a crash without redoing finished work (`vidflow run GRAPH --job DIR`).
//!
//! A job checks that the graph can be cut ([`shape`]), reads the source's timeline (frame
//! times and keyframes, without decoding) and cuts it at keyframes about every
//! `chunk_seconds`. Each chunk is the graph's [`Plan`] with the source restricted to the chunk
//! (plus the context frames its nodes need), a [`trim`] before each sink when there is context,
//! and every sink writing into `DIR/chunks/NNNNN/`. A finished chunk is recorded in the
//! [`journal`]; when every chunk is recorded the sinks join their chunk files into the real
//! outputs (video without re-encoding, the source audio muxed once over the whole).

pub mod journal;
pub mod progress;
pub mod shape;
mod trim;

use crate::check::CheckedGraph;
use crate::config::OnError;
use crate::diag::Diagnostic;
use crate::exec::{self, RunOptions, StopFlag};
use crate::node::{ChunkPiece, ParamType, Shared, Timeline, WholeInput};
use crate::plan::{Plan, PlanEdge, PlanNode};
use journal::{ChunkSpec, Failed, FileId, JobFile, OutputRecord, Record};
use progress::JobProgress;
use serde_json::json;
use shape::Shape;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Chunk length when the command line gives none.
pub const DEFAULT_CHUNK_SECONDS: f64 = 10.0;

pub struct JobOptions {
    pub dir: PathBuf,
    pub chunk_seconds: f64,
    /// Chunks run at once (`None`: [`default_parallel`]).
    pub parallel: Option<usize>,
    /// Discard whatever the directory holds and start over.
    pub restart: bool,
    pub progress: JobProgress,
    pub stop: StopFlag,
    /// Shared by every chunk's run, so what a node caches there (the device) is opened once.
    pub shared: Arc<Shared>,
}

#[derive(Debug)]
pub enum JobError {
    /// The graph cannot be cut into chunks (located diagnostics).
    NotChunkable(Vec<Diagnostic>),
    /// The job directory holds another job.
    Changed {
        dir: PathBuf,
        differences: Vec<String>,
        recorded: usize,
    },
    /// Another run is working on the job directory.
    Busy(PathBuf),
    /// The source or a sink refused (unreadable input, unwritable output…).
    Input(String),
    /// The job directory cannot be written.
    Io(String),
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::NotChunkable(d) => write!(
                f,
                "the graph cannot be cut into chunks ({} problems)",
                d.len()
            ),
            JobError::Changed {
                dir,
                differences,
                recorded,
            } => {
                writeln!(
                    f,
                    "job `{}` was started for another graph or other inputs:",
                    dir.display()
                )?;
                for d in differences {
                    writeln!(f, "  - {d}")?;
                }
                write!(
                    f,
                    "  = help: run it with the graph and inputs it was started with to resume, or add `--restart` to discard its {recorded} recorded chunks and start over"
                )
            }
            JobError::Busy(dir) => write!(
                f,
                "job `{}` is being run by another vidflow (it holds `{}`); wait for it, or stop it first",
                dir.display(),
                dir.join(LOCK_FILE).display()
            ),
            JobError::Input(m) | JobError::Io(m) => f.write_str(m),
        }
    }
}

/// What a job did.
#[derive(Debug, Default)]
pub struct JobReport {
    pub chunks: usize,
    /// Chunks whose records were trusted, so they did not run.
    pub reused: Vec<usize>,
    /// Chunks run (and recorded) by this run.
    pub ran: Vec<usize>,
    pub failed: Vec<Failed>,
    pub interrupted: bool,
    /// The assembled outputs (when every chunk is recorded).
    pub outputs: Vec<PathBuf>,
    pub elapsed: Duration,
}

impl JobReport {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && !self.interrupted
    }
}

const LOCK_FILE: &str = "job.lock";

/// Chunks run at once by default: one when the graph has a neural node (one model per device,
/// which batches across frames itself), else a quarter of the cores (each chunk's run is a
/// pipeline of threads already, and encoders use several).
pub fn default_parallel(graph: &CheckedGraph) -> usize {
    if graph.nodes.iter().any(|n| n.kind.feature == Some("neural")) {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 4).max(1)
}

/// Checks that a graph can be cut into chunks (for `vidflow check --job`).
pub fn check(graph: &CheckedGraph) -> Result<(), Vec<Diagnostic>> {
    shape::analyse(graph).map(drop)
}

/// Cuts a timeline at keyframes into chunks of about `seconds`; each reads `before`/`after`
/// extra frames of context.
pub fn cut(t: &Timeline, seconds: f64, before: u32, after: u32) -> Vec<ChunkSpec> {
    let n = t.pts.len();
    let mut starts = vec![0usize];
    for &k in &t.keyframes {
        let last = *starts.last().expect("one start");
        if k > last && k < n && t.pts[k] - t.pts[last] >= seconds - 1e-9 {
            starts.push(k);
        }
    }
    let at = |i: usize| (i < n).then(|| t.pts[i]);
    starts
        .iter()
        .enumerate()
        .map(|(index, &first)| {
            let end = starts.get(index + 1).copied().unwrap_or(n);
            ChunkSpec {
                index,
                range: (t.pts[first], at(end)),
                first,
                frames: end - first,
                read: (
                    t.pts[first.saturating_sub(before as usize)],
                    at(end + after as usize),
                ),
            }
        })
        .collect()
}

/// The graph as the journal records it: nodes (id, kind, params) and connections. Replicas,
/// batching, queues and error policy are left out: they change how a run goes, not what it
/// makes, so a job may be resumed with other settings.
fn graph_identity(g: &CheckedGraph) -> serde_json::Value {
    let nodes: Vec<_> = g
        .nodes
        .iter()
        .map(|n| json!({"id": n.id, "kind": n.kind.name, "params": n.params.values}))
        .collect();
    let edges: Vec<_> = g
        .edges
        .iter()
        .map(|e| {
            let (from, to) = (&g.nodes[e.from.0], &g.nodes[e.to.0]);
            json!([
                format!("{}.{}", from.id, from.kind.outputs[e.from.1].name),
                format!("{}.{}", to.id, to.kind.inputs[e.to.1].name)
            ])
        })
        .collect();
    json!({"name": g.name, "nodes": nodes, "edges": edges})
}

/// Files named by `Path` params other than the source's inputs and the sinks' outputs: model
/// weights, programs, prompts… Each is part of what the job is.
fn model_files(g: &CheckedGraph, shape: &Shape, inputs: &[PathBuf]) -> Vec<PathBuf> {
    let outputs: Vec<&PathBuf> = shape
        .sinks
        .iter()
        .filter_map(|s| s.output.as_ref())
        .collect();
    let mut files = vec![];
    for n in &g.nodes {
        for spec in &n.kind.params {
            if !matches!(spec.ty, ParamType::Path) {
                continue;
            }
            let Some(p) = n.params.get(spec.name).and_then(|v| v.as_str()) else {
                continue;
            };
            let p = PathBuf::from(p);
            if p.is_file() && !inputs.contains(&p) && !outputs.contains(&&p) && !files.contains(&p)
            {
                files.push(p);
            }
        }
    }
    files
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> JobError {
    move |e| JobError::Io(format!("{what}: {e}"))
}

/// Runs a graph as a job in `opts.dir`, resuming what the directory already holds.
pub fn run(graph: &CheckedGraph, opts: JobOptions) -> Result<JobReport, JobError> {
    let started = Instant::now();
    let shape = shape::analyse(graph).map_err(JobError::NotChunkable)?;
    let plan = Plan::new(graph);
    let src = &plan.nodes[shape.source];
    let cutter = src
        .kind
        .chunk_source
        .clone()
        .expect("shape checked the source");
    let timeline = cutter
        .timeline(&src.id, &src.params)
        .map_err(|e| JobError::Input(e.to_string()))?;
    if timeline.pts.is_empty() {
        return Err(JobError::Input(format!(
            "node `{}`: the source has no frames to cut into chunks",
            src.id
        )));
    }
    let dir = opts.dir.clone();
    std::fs::create_dir_all(dir.join(journal::CHUNKS_DIR)).map_err(io_err(format!(
        "cannot create job folder `{}`",
        dir.display()
    )))?;
    // One run per job directory at a time: two would write the same chunk files.
    let lock = std::fs::File::create(dir.join(LOCK_FILE)).map_err(io_err(format!(
        "cannot write `{}`",
        dir.join(LOCK_FILE).display()
    )))?;
    if lock.try_lock().is_err() {
        return Err(JobError::Busy(dir));
    }

    let chunks = cut(&timeline, opts.chunk_seconds, shape.before, shape.after);
    let hash_all = |files: &[PathBuf]| -> Result<Vec<FileId>, JobError> {
        files
            .iter()
            .map(|p| journal::file_id(p).map_err(io_err(format!("cannot read `{}`", p.display()))))
            .collect()
    };
    let identity = graph_identity(graph);
    let job = JobFile {
        version: journal::VERSION,
        vidflow: env!("CARGO_PKG_VERSION").to_string(),
        graph_hash: journal::hash_bytes(identity.to_string().as_bytes()),
        graph: identity,
        inputs: hash_all(&timeline.files)?,
        models: hash_all(&model_files(graph, &shape, &timeline.files))?,
        chunk_seconds: opts.chunk_seconds,
        chunks: chunks.clone(),
    };
    let job_path = dir.join(journal::JOB_FILE);
    let fresh = match std::fs::exists(&job_path) {
        Ok(false) => true,
        _ if opts.restart => {
            discard(&dir)?;
            true
        }
        _ => {
            let differences = match journal::read_json::<JobFile>(&job_path) {
                Ok(old) => journal::differences(&old, &job),
                Err(e) => vec![format!("its `{}` is {e}", journal::JOB_FILE)],
            };
            if !differences.is_empty() {
                let recorded = std::fs::read_dir(dir.join(journal::CHUNKS_DIR))
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .filter(|e| {
                                let name = e.file_name().to_string_lossy().into_owned();
                                name.ends_with(".json") && !name.ends_with(".failed.json")
                            })
                            .count()
                    })
                    .unwrap_or(0);
                return Err(JobError::Changed {
                    dir,
                    differences,
                    recorded,
                });
            }
            false
        }
    };
    if fresh {
        journal::write_json(&job_path, &job)
            .map_err(io_err(format!("cannot write `{}`", job_path.display())))?;
    }

    // Which chunks are done: a record is trusted only if its outputs are intact.
    let mut report = JobReport {
        chunks: chunks.len(),
        ..Default::default()
    };
    let mut pending = VecDeque::new();
    let mut frames_done = 0u64;
    for c in &chunks {
        let path = journal::record_path(&dir, c.index);
        if !path.exists() {
            pending.push_back(c.clone());
            continue;
        }
        match journal::read_json::<Record>(&path).and_then(|r| journal::verify(&dir, c, &r)) {
            Ok(()) => {
                opts.progress.checked(c.index, None);
                report.reused.push(c.index);
                frames_done += c.frames as u64;
            }
            Err(why) => {
                opts.progress.checked(c.index, Some(&why));
                let _ = std::fs::remove_file(&path);
                pending.push_back(c.clone());
            }
        }
    }

    // The inputs the assembly feeds once (the source audio), and the sinks' own checks of them.
    let t0 = timeline.pts[0];
    let whole: Vec<Vec<WholeInput>> = shape
        .sinks
        .iter()
        .map(|s| {
            s.whole_edges
                .iter()
                .map(|&k| {
                    let e = &graph.edges[k];
                    let from = &graph.nodes[e.from.0];
                    WholeInput {
                        port: e.to.1,
                        source_kind: from.kind.name,
                        source_params: from.params.clone(),
                        start: t0,
                        end: None,
                    }
                })
                .collect()
        })
        .collect();
    for (s, w) in shape.sinks.iter().zip(&whole) {
        let n = &plan.nodes[s.node];
        let sink = n.kind.chunk_sink.as_ref().expect("shape checked the sinks");
        sink.prepare(&n.id, &n.params, w)
            .map_err(|e| JobError::Input(e.to_string()))?;
    }

    let parallel = opts
        .parallel
        .unwrap_or_else(|| default_parallel(graph))
        .max(1);
    let total_frames = timeline.pts.len() as u64;
    opts.progress.start(
        &dir.display().to_string(),
        (report.reused.len(), chunks.len()),
        (frames_done, total_frames),
        parallel,
    );

    let runner = Runner {
        plan: &plan,
        shape: &shape,
        dir: &dir,
        progress: &opts.progress,
        shared: &opts.shared,
        queue: Mutex::new(pending),
        in_flight: Mutex::new(vec![]),
        outcome: Mutex::new((vec![], vec![])),
        interrupted: AtomicBool::new(false),
        done: AtomicBool::new(false),
    };
    std::thread::scope(|scope| {
        // Ctrl-C sets the job's flag; every chunk's run has its own (a chunk that fails stops
        // only itself), so the flag is passed on to the runs in flight.
        scope.spawn(|| {
            while !runner.done.load(Ordering::Relaxed) {
                if opts.stop.is_set() {
                    runner.interrupted.store(true, Ordering::Relaxed);
                    for (_, f) in runner
                        .in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                    {
                        f.stop();
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let workers: Vec<_> = (0..parallel)
            .map(|_| scope.spawn(|| runner.work()))
            .collect();
        for w in workers {
            let _ = w.join();
        }
        runner.done.store(true, Ordering::Relaxed);
    });
    let (ran, failed) = runner
        .outcome
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    report.ran = ran;
    report.failed = failed;
    report.interrupted = runner.interrupted.load(Ordering::Relaxed);

    if report.ok() {
        for (s, w) in shape.sinks.iter().zip(&whole) {
            let Some(output) = &s.output else { continue };
            let n = &plan.nodes[s.node];
            let sink = n.kind.chunk_sink.as_ref().expect("shape checked the sinks");
            let pieces: Vec<ChunkPiece> = chunks
                .iter()
                .map(|c| ChunkPiece {
                    path: chunk_output(&dir, c.index, &n.id, output),
                    start: c.range.0 - t0,
                })
                .collect();
            sink.assemble(&n.id, &n.params, &pieces, w, output)
                .map_err(|e| JobError::Input(e.to_string()))?;
            opts.progress
                .assembled(&n.id, &output.display().to_string());
            report.outputs.push(output.clone());
        }
    }
    report.elapsed = started.elapsed();
    let failed: Vec<usize> = report.failed.iter().map(|f| f.index).collect();
    opts.progress
        .end(report.ok(), report.interrupted, &failed, report.elapsed);
    Ok(report)
}

/// Removes the journal and chunk files of a job directory (`--restart`).
fn discard(dir: &Path) -> Result<(), JobError> {
    let chunks = dir.join(journal::CHUNKS_DIR);
    if chunks.exists() {
        std::fs::remove_dir_all(&chunks)
            .map_err(io_err(format!("cannot remove `{}`", chunks.display())))?;
    }
    let _ = std::fs::remove_file(dir.join(journal::JOB_FILE));
    std::fs::create_dir_all(&chunks)
        .map_err(io_err(format!("cannot create `{}`", chunks.display())))
}

/// Where a sink writes a chunk: `chunks/NNNNN/<node>.<the output's extension>`.
fn chunk_output(dir: &Path, index: usize, node: &str, output: &Path) -> PathBuf {
    let name = match output.extension() {
        Some(ext) => format!("{node}.{}", ext.to_string_lossy()),
        None => node.to_string(),
    };
    journal::chunk_dir(dir, index).join(name)
}

/// The threads that run chunks share this.
struct Runner<'a> {
    plan: &'a Plan,
    shape: &'a Shape,
    dir: &'a Path,
    progress: &'a JobProgress,
    shared: &'a Arc<Shared>,
    queue: Mutex<VecDeque<ChunkSpec>>,
    in_flight: Mutex<Vec<(usize, StopFlag)>>,
    /// Chunks recorded, chunks failed.
    outcome: Mutex<(Vec<usize>, Vec<Failed>)>,
    interrupted: AtomicBool,
    done: AtomicBool,
}

enum Attempt {
    Recorded,
    Failed { error: String, node: Option<String> },
    Stopped,
}

impl Runner<'_> {
    fn work(&self) {
        loop {
            if self.interrupted.load(Ordering::Relaxed) {
                return;
            }
            let Some(chunk) = self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            else {
                return;
            };
            let mut errors = vec![];
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                self.progress
                    .chunk_start(chunk.index, chunk.range, chunk.frames as u64, attempt);
                match self.attempt(&chunk) {
                    Attempt::Recorded => {
                        let _ = std::fs::remove_file(journal::failed_path(self.dir, chunk.index));
                        self.outcome
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                            .push(chunk.index);
                        break;
                    }
                    Attempt::Stopped => {
                        self.progress.chunk_abandoned(chunk.index);
                        return;
                    }
                    Attempt::Failed { error, node } => {
                        // The graph's `on_error: retry N` of the failing node retries the chunk.
                        let retries = node
                            .and_then(|id| self.plan.node(&id).map(|n| n.on_error))
                            .map_or(0, |e| match e {
                                OnError::Retry(n) => n,
                                _ => 0,
                            });
                        let retry = attempt <= retries && !self.interrupted.load(Ordering::Relaxed);
                        self.progress
                            .chunk_failed(chunk.index, chunk.range, &error, retry);
                        errors.push(error);
                        if retry {
                            continue;
                        }
                        let failed = Failed {
                            index: chunk.index,
                            range: chunk.range,
                            errors,
                        };
                        // Recorded for `vidflow job status`; a rerun retries the chunk anyway.
                        let _ = journal::write_json(
                            &journal::failed_path(self.dir, chunk.index),
                            &failed,
                        );
                        self.outcome
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .1
                            .push(failed);
                        break;
                    }
                }
            }
        }
    }

    /// Runs one chunk and records it.
    fn attempt(&self, chunk: &ChunkSpec) -> Attempt {
        let failed = |error: String| Attempt::Failed { error, node: None };
        let started = Instant::now();
        let cdir = journal::chunk_dir(self.dir, chunk.index);
        // Whatever an earlier attempt left (a partial file of a killed run) goes first.
        if cdir.exists()
            && let Err(e) = std::fs::remove_dir_all(&cdir)
        {
            return failed(format!("cannot clear `{}`: {e}", cdir.display()));
        }
        if let Err(e) = std::fs::create_dir_all(&cdir) {
            return failed(format!("cannot create `{}`: {e}", cdir.display()));
        }
        let plan = self.chunk_plan(chunk);
        let stop = StopFlag::new();
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((chunk.index, stop.clone()));
        if self.interrupted.load(Ordering::Relaxed) {
            stop.stop();
        }
        let run = exec::run(
            &plan,
            RunOptions {
                stop: stop.clone(),
                progress: self.progress.chunk_sink(chunk.index, self.shape.source),
                shared: self.shared.clone(),
                ..Default::default()
            },
        );
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(i, _)| *i != chunk.index);
        if let Some(f) = run.failure {
            return Attempt::Failed {
                error: f.to_string(),
                node: Some(f.node),
            };
        }
        if run.interrupted {
            return Attempt::Stopped;
        }
        let mut outputs = vec![];
        for s in &self.shape.sinks {
            let Some(output) = &s.output else { continue };
            let id = &self.plan.nodes[s.node].id;
            let path = chunk_output(self.dir, chunk.index, id, output);
            match journal::hash_file(&path) {
                Ok((bytes, sha256)) => outputs.push(OutputRecord {
                    node: id.clone(),
                    path: path
                        .strip_prefix(self.dir)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                    bytes,
                    sha256,
                }),
                Err(e) => {
                    return failed(format!(
                        "node `{id}` finished but its chunk output `{}` cannot be read: {e}",
                        path.display()
                    ));
                }
            }
        }
        // The outputs are in place (each sink renamed its file when complete) and in their
        // folder on disk; only now is the chunk recorded.
        if let Err(e) = journal::sync_dir(&cdir) {
            return failed(format!("cannot sync `{}`: {e}", cdir.display()));
        }
        let record = Record {
            index: chunk.index,
            range: chunk.range,
            frames: chunk.frames,
            outputs,
            seconds: started.elapsed().as_secs_f64(),
        };
        if let Err(e) = journal::write_json(&journal::record_path(self.dir, chunk.index), &record) {
            return failed(format!("cannot write the chunk's record: {e}"));
        }
        self.progress.chunk_done(
            chunk.index,
            chunk.range,
            chunk.frames as u64,
            record.seconds,
        );
        Attempt::Recorded
    }

    /// The graph's plan for one chunk: the source restricted to what the chunk reads, each
    /// sink writing into the chunk's folder and fed only per-chunk inputs, and a `trim` before
    /// each sink input when the chunk reads context frames.
    fn chunk_plan(&self, chunk: &ChunkSpec) -> Plan {
        let mut nodes: Vec<PlanNode> = self.plan.nodes.clone();
        let src = &mut nodes[self.shape.source];
        let cutter = src
            .kind
            .chunk_source
            .clone()
            .expect("shape checked the source");
        cutter.restrict(&mut src.params, chunk.read.0, chunk.read.1);
        let mut drop_edges = vec![];
        for s in &self.shape.sinks {
            let n = &mut nodes[s.node];
            if let Some(output) = &s.output {
                let sink = n.kind.chunk_sink.clone().expect("shape checked the sinks");
                sink.redirect(
                    &mut n.params,
                    &chunk_output(self.dir, chunk.index, &n.id, output),
                );
            }
            drop_edges.extend(&s.whole_edges);
        }
        let mut edges: Vec<PlanEdge> = self
            .plan
            .edges
            .iter()
            .enumerate()
            .filter(|(k, _)| !drop_edges.contains(k))
            .map(|(_, e)| e.clone())
            .collect();
        if self.shape.before > 0 || self.shape.after > 0 {
            let sinks: Vec<usize> = self.shape.sinks.iter().map(|s| s.node).collect();
            let mut extra = vec![];
            for e in edges.iter_mut().filter(|e| sinks.contains(&e.to.0)) {
                let mut params = crate::node::Params {
                    node: format!("trim-{}", nodes[e.to.0].id),
                    ..Default::default()
                };
                params.values.insert("start".into(), json!(chunk.range.0));
                params.values.insert("end".into(), json!(chunk.range.1));
                nodes.push(PlanNode {
                    id: params.node.clone(),
                    kind: trim::kind(),
                    params,
                    workers: 1,
                    batch: None,
                    on_error: OnError::Fail,
                });
                let t = nodes.len() - 1;
                extra.push(PlanEdge {
                    from: (t, 0),
                    to: e.to,
                    queue: e.queue,
                    when_full: e.when_full,
                });
                e.to = (t, 0);
            }
            edges.extend(extra);
        }
        Plan::from_parts(self.plan.name.clone(), nodes, edges)
    }
}

/// The state of a job directory, for `vidflow job status`.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub chunks: usize,
    pub done: Vec<usize>,
    pub pending: Vec<usize>,
    pub failed: Vec<Failed>,
    /// Seconds of work left at the recorded pace (per frame), one chunk at a time.
    pub eta_s: Option<f64>,
    /// Whether a run holds the job now.
    pub running: bool,
    pub frames: (u64, u64),
    pub ranges: Vec<(f64, Option<f64>)>,
}

/// Reads a job directory's journal. Records are checked against their outputs' sizes (not
/// hashes: a run checks those before trusting them).
pub fn status(dir: &Path) -> Result<Status, JobError> {
    let job: JobFile = journal::read_json(&dir.join(journal::JOB_FILE)).map_err(|e| {
        JobError::Input(format!(
            "`{}` is not a job directory: its `{}` is {e}",
            dir.display(),
            journal::JOB_FILE
        ))
    })?;
    let (mut done, mut pending, mut failed) = (vec![], vec![], vec![]);
    let (mut frames_done, mut secs_done) = (0u64, 0.0);
    for c in &job.chunks {
        let ok = journal::read_json::<Record>(&journal::record_path(dir, c.index))
            .ok()
            .filter(|r| {
                r.index == c.index
                    && r.outputs.iter().all(|o| {
                        std::fs::metadata(dir.join(&o.path)).is_ok_and(|m| m.len() == o.bytes)
                    })
            });
        match ok {
            Some(r) => {
                done.push(c.index);
                frames_done += c.frames as u64;
                secs_done += r.seconds;
            }
            None => {
                pending.push(c.index);
                if let Ok(f) = journal::read_json::<Failed>(&journal::failed_path(dir, c.index)) {
                    failed.push(f);
                }
            }
        }
    }
    let total: u64 = job.chunks.iter().map(|c| c.frames as u64).sum();
    let eta_s = (frames_done > 0)
        .then(|| secs_done / frames_done as f64 * total.saturating_sub(frames_done) as f64);
    let running = std::fs::File::open(dir.join(LOCK_FILE))
        .map(|f| f.try_lock().is_err())
        .unwrap_or(false);
    Ok(Status {
        chunks: job.chunks.len(),
        done,
        pending,
        failed,
        eta_s,
        running,
        frames: (frames_done, total),
        ranges: job.chunks.iter().map(|c| c.range).collect(),
    })
}
