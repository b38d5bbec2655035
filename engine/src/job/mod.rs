//! Jobs: a run cut into chunks of its source's timeline, each recorded durably, resumable after
//! a crash without redoing finished work (`vidflow run GRAPH --job DIR`).
//!
//! A job checks that the graph can be cut ([`shape`]), reads the source's timeline (frame
//! times and keyframes, without decoding) and cuts it at keyframes about every
//! `chunk_seconds`. Each chunk is the graph's [`Plan`] with the source restricted to the chunk
//! (plus the context frames its nodes need), a [`trim`] before each sink when there is context,
//! and every sink writing into `DIR/chunks/NNNNN/`. A finished chunk is recorded in the
//! [`journal`] once its output files are synced to disk; when every chunk is recorded the sinks
//! join their chunk files into the real outputs (video without re-encoding, the source audio
//! muxed once over the whole). A chunk that fails is run again, whole, as its failing node's
//! `on_error: retry N` says, then recorded as failed; one stopped from outside (Ctrl-C) is
//! abandoned, its files removed, and never recorded as failed.
//!
//! A source that only feeds audio (lip sync's speech) is not cut: each chunk restricts it to
//! the chunk's time widened by the audio context its consumers declare, and the assembly
//! copies its audio once when a sink takes it whole (the speech as the soundtrack).

pub mod journal;
pub mod progress;
pub mod shape;
mod trim;

use crate::check::{CheckedGraph, CheckedNode};
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Chunk length when the command line gives none.
pub const DEFAULT_CHUNK_SECONDS: f64 = 10.0;

/// Seconds of audio a chunk reads beyond its consumers' declared context on each side: frame
/// times (which chunks are cut at) and the times nodes derive from frame indices may differ by
/// a fraction of a frame, and a frame rate is only estimated from the timeline. More audio
/// never changes a chunk's outputs; less would.
const AUDIO_MARGIN: f64 = 0.1;

/// Where a node's `on_error: retry N` is carried out for a chunk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ItemRetry {
    /// Inside the chunk's run: the executor calls the node again on the failing item.
    InRun,
    /// By running the whole chunk again (a local job): inside the run the node fails at once.
    /// Both at once would multiply, N + 1 tries of the item in each of N + 1 runs, (N + 1)²
    /// in all; and only a new run starts the node afresh (a command that exited is not
    /// restarted by calling it again), so the chunk is what is retried: each of the N + 1
    /// tries is one run of the chunk with every node new.
    ByChunk,
}

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

impl std::error::Error for JobError {}

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

/// The files the job reads its media from: the cut source's, and those the sources that only
/// feed audio name (the speech of a lip sync).
fn input_files(g: &CheckedGraph, shape: &Shape, timeline: &Timeline) -> Vec<PathBuf> {
    let mut files = timeline.files.clone();
    for a in &shape.audio {
        for p in path_params(&g.nodes[a.node]) {
            if p.is_file() && !files.contains(&p) {
                files.push(p);
            }
        }
    }
    files
}

/// The files a node's `Path` params name.
fn path_params(n: &CheckedNode) -> Vec<PathBuf> {
    n.kind
        .params
        .iter()
        .filter(|spec| matches!(spec.ty, ParamType::Path))
        .filter_map(|spec| n.params.get(spec.name).and_then(|v| v.as_str()))
        .map(PathBuf::from)
        .collect()
}

/// Files named by `Path` params other than the sources' inputs and the sinks' outputs: model
/// weights, programs, prompts… Each is part of what the job is.
fn model_files(g: &CheckedGraph, shape: &Shape, inputs: &[PathBuf]) -> Vec<PathBuf> {
    let outputs: Vec<&PathBuf> = shape
        .sinks
        .iter()
        .filter_map(|s| s.output.as_ref())
        .collect();
    let mut files = vec![];
    for p in g.nodes.iter().flat_map(path_params) {
        if p.is_file() && !inputs.contains(&p) && !outputs.contains(&&p) && !files.contains(&p) {
            files.push(p);
        }
    }
    files
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> JobError {
    move |e| JobError::Io(format!("{what}: {e}"))
}

/// A job directory opened for a graph: its chunks, and how each one runs and is recorded.
/// The coordinator [`Job::open`]s it (and holds its lock); a worker [`Job::attach`]es to it.
pub struct Job {
    pub dir: PathBuf,
    pub file: JobFile,
    plan: Plan,
    shape: Shape,
    /// The inputs each sink gets once at assembly (by sink, as in `shape.sinks`).
    whole: Vec<Vec<WholeInput>>,
    /// Where each of `shape.audio`'s sources' audio ends, when known.
    audio_ends: Vec<Option<f64>>,
    /// A frame's duration (seconds; the longest of the chunks' averages), for audio context
    /// counted in frames.
    frame_secs: f64,
    /// Held while the job runs here: one coordinator per job directory.
    _lock: Option<std::fs::File>,
}

/// How one chunk's run ended.
pub enum ChunkOutcome {
    Recorded(Record),
    /// The run failed; `node` is the node that failed, when one did.
    Failed {
        error: String,
        node: Option<String>,
    },
    /// Stopped (Ctrl-C, or a worker told to stop): nothing recorded.
    Stopped,
}

impl Job {
    /// Opens the job in `dir` for `graph`, starting it if the folder holds none: checks that
    /// the graph can be cut, reads the source's timeline, cuts it, and compares what the job is
    /// with the folder's `job.json` (refusing another job unless `restart`).
    pub fn open(
        graph: &CheckedGraph,
        dir: &Path,
        chunk_seconds: f64,
        restart: bool,
    ) -> Result<Job, JobError> {
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
            return Err(JobError::Busy(dir.to_path_buf()));
        }

        let chunks = cut(&timeline, chunk_seconds, shape.before, shape.after);
        let hash_all = |files: &[PathBuf]| -> Result<Vec<FileId>, JobError> {
            files
                .iter()
                .map(|p| {
                    journal::file_id(p).map_err(io_err(format!("cannot read `{}`", p.display())))
                })
                .collect()
        };
        let identity = graph_identity(graph);
        let inputs = input_files(graph, &shape, &timeline);
        let mut file = JobFile {
            version: journal::VERSION,
            id: journal::hash_bytes(
                format!(
                    "{}:{}:{:?}",
                    std::path::absolute(dir).unwrap_or_default().display(),
                    std::process::id(),
                    std::time::SystemTime::now()
                )
                .as_bytes(),
            )[..16]
                .to_string(),
            vidflow: env!("CARGO_PKG_VERSION").to_string(),
            graph_hash: journal::hash_bytes(identity.to_string().as_bytes()),
            graph: identity,
            inputs: hash_all(&inputs)?,
            models: hash_all(&model_files(graph, &shape, &inputs))?,
            chunk_seconds,
            chunks,
        };
        let job_path = dir.join(journal::JOB_FILE);
        let fresh = match std::fs::exists(&job_path) {
            Ok(false) => true,
            _ if restart => {
                discard(dir)?;
                true
            }
            _ => {
                let differences = match journal::read_json::<JobFile>(&job_path) {
                    Ok(old) => {
                        file.id = old.id.clone();
                        journal::differences(&old, &file)
                    }
                    Err(e) => vec![format!("its `{}` is {e}", journal::JOB_FILE)],
                };
                if !differences.is_empty() {
                    return Err(JobError::Changed {
                        dir: dir.to_path_buf(),
                        differences,
                        recorded: recorded_count(dir),
                    });
                }
                false
            }
        };
        if fresh {
            journal::write_json(&job_path, &file)
                .map_err(io_err(format!("cannot write `{}`", job_path.display())))?;
        }
        let job = Job::new(graph, dir, file, plan, shape, Some(lock))?;
        job.prepare_sinks()?;
        Ok(job)
    }

    /// Attaches to a job another process started (a worker on shared storage): the chunks
    /// come from its `job.json`, which must describe this very graph.
    pub fn attach(graph: &CheckedGraph, dir: &Path) -> Result<Job, JobError> {
        let shape = shape::analyse(graph).map_err(JobError::NotChunkable)?;
        let file: JobFile = journal::read_json(&dir.join(journal::JOB_FILE)).map_err(|e| {
            JobError::Input(format!(
                "`{}` is not a job folder this machine can read: its `{}` is {e}",
                dir.display(),
                journal::JOB_FILE
            ))
        })?;
        let identity = graph_identity(graph);
        if journal::hash_bytes(identity.to_string().as_bytes()) != file.graph_hash {
            let mut differences = journal::graph_differences(&file.graph, &identity);
            if differences.is_empty() {
                differences.push("the graph changed".into());
            }
            return Err(JobError::Changed {
                dir: dir.to_path_buf(),
                differences,
                recorded: recorded_count(dir),
            });
        }
        Job::new(graph, dir, file, Plan::new(graph), shape, None)
    }

    fn new(
        graph: &CheckedGraph,
        dir: &Path,
        file: JobFile,
        plan: Plan,
        shape: Shape,
        lock: Option<std::fs::File>,
    ) -> Result<Job, JobError> {
        let t0 = file.chunks.first().map_or(0.0, |c| c.range.0);
        let audio_ends = shape
            .audio
            .iter()
            .map(|a| {
                let n = &plan.nodes[a.node];
                let cutter = n.kind.chunk_source.as_ref().expect("shape checked it");
                cutter
                    .audio_end(&n.id, &n.params)
                    .map_err(|e| JobError::Input(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        // A frame's duration: the longest of the chunks' averages (the last chunk, whose end is
        // unknown, is left out); 25 fps when no chunk tells.
        let frame_secs = file
            .chunks
            .iter()
            .filter_map(|c| Some((c.range.1? - c.range.0) / c.frames.max(1) as f64))
            .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.max(d))))
            .unwrap_or(0.04);
        let whole = shape
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
        Ok(Job {
            dir: dir.to_path_buf(),
            file,
            plan,
            shape,
            whole,
            audio_ends,
            frame_secs,
            _lock: lock,
        })
    }

    pub fn chunks(&self) -> &[ChunkSpec] {
        &self.file.chunks
    }

    /// The node whose frames each chunk's progress counts (the source).
    pub fn source(&self) -> usize {
        self.shape.source
    }

    /// The sinks' own checks of what they will get at assembly, before any chunk runs.
    fn prepare_sinks(&self) -> Result<(), JobError> {
        for (s, w) in self.shape.sinks.iter().zip(&self.whole) {
            let n = &self.plan.nodes[s.node];
            let sink = n.kind.chunk_sink.as_ref().expect("shape checked the sinks");
            sink.prepare(&n.id, &n.params, w)
                .map_err(|e| JobError::Input(e.to_string()))?;
        }
        Ok(())
    }

    /// Which chunks are recorded (a record is trusted only if its outputs are intact; an
    /// untrusted one is removed) and which are left to run.
    pub fn scan(&self, progress: &JobProgress) -> (Vec<usize>, Vec<ChunkSpec>) {
        let (mut done, mut pending) = (vec![], vec![]);
        for c in self.chunks() {
            let path = journal::record_path(&self.dir, c.index);
            if !path.exists() {
                pending.push(c.clone());
                continue;
            }
            match journal::read_json::<Record>(&path)
                .and_then(|r| journal::verify(&self.dir, c, &r))
            {
                Ok(()) => {
                    progress.checked(c.index, None);
                    done.push(c.index);
                }
                Err(why) => {
                    progress.checked(c.index, Some(&why));
                    let _ = std::fs::remove_file(&path);
                    pending.push(c.clone());
                }
            }
        }
        (done, pending)
    }

    /// How many times the graph's `on_error: retry N` says to run a chunk again after `node`
    /// failed it.
    pub fn retries(&self, node: Option<&str>) -> u32 {
        match node.and_then(|id| self.plan.node(id)).map(|n| n.on_error) {
            Some(OnError::Retry(n)) => n,
            _ => 0,
        }
    }

    /// Records that a chunk failed every attempt (for `vidflow job status`; a rerun retries
    /// it anyway).
    pub fn record_failure(&self, chunk: &ChunkSpec, errors: Vec<String>) -> Failed {
        let failed = Failed {
            index: chunk.index,
            range: chunk.range,
            errors,
        };
        let _ = journal::write_json(&journal::failed_path(&self.dir, chunk.index), &failed);
        failed
    }

    /// Runs one chunk and records it; `progress` gets the chunk run's ticks (see
    /// [`JobProgress::chunk_sink`]). A node's `on_error: retry N` retries the failing item
    /// within the run, as in a plain run (the workers of a farm, which retry whole chunks by
    /// redelivery, run chunks this way).
    pub fn run_chunk(
        &self,
        chunk: &ChunkSpec,
        progress: Box<dyn crate::exec::ProgressSink>,
        shared: &Arc<Shared>,
        stop: StopFlag,
    ) -> ChunkOutcome {
        self.run_chunk_as(chunk, progress, shared, stop, ItemRetry::InRun)
    }

    fn run_chunk_as(
        &self,
        chunk: &ChunkSpec,
        progress: Box<dyn crate::exec::ProgressSink>,
        shared: &Arc<Shared>,
        stop: StopFlag,
        retry: ItemRetry,
    ) -> ChunkOutcome {
        let failed = |error: String| ChunkOutcome::Failed { error, node: None };
        let started = Instant::now();
        let cdir = journal::chunk_dir(&self.dir, chunk.index);
        // Whatever an earlier attempt left (a partial file of a killed run) goes first.
        if cdir.exists()
            && let Err(e) = std::fs::remove_dir_all(&cdir)
        {
            return failed(format!("cannot clear `{}`: {e}", cdir.display()));
        }
        if let Err(e) = std::fs::create_dir_all(&cdir) {
            return failed(format!("cannot create `{}`: {e}", cdir.display()));
        }
        // The caller's flag goes to the run as it is: a failing node stops the run's other
        // nodes without setting it, so after the run it still tells a chunk stopped from
        // outside (Ctrl-C, a worker told to stop) from a chunk that failed.
        let run = exec::run(
            &self.chunk_plan(chunk, retry),
            RunOptions {
                stop: stop.clone(),
                progress,
                shared: shared.clone(),
                ..Default::default()
            },
        );
        // Stopped from outside first: a node that fails because the run was stopped under it
        // (a pipe closed, a command killed) is not a failure of the chunk, and an interrupted
        // chunk is never recorded as failed. A run that finished before the stop reached it
        // is recorded all the same.
        if run.interrupted || (run.failure.is_some() && stop.is_set()) {
            // Nothing of it is kept: its partial files would only be cleared by the next run.
            let _ = std::fs::remove_dir_all(&cdir);
            return ChunkOutcome::Stopped;
        }
        if let Some(f) = run.failure {
            return ChunkOutcome::Failed {
                error: f.to_string(),
                node: Some(f.node),
            };
        }
        let mut outputs = vec![];
        for s in &self.shape.sinks {
            let Some(output) = &s.output else { continue };
            let id = &self.plan.nodes[s.node].id;
            let path = chunk_output(&self.dir, chunk.index, id, output);
            // Its data must be on disk before the record that vouches for it, or a crash could
            // leave a record of a file whose blocks were never written. Sinks that write
            // through `AtomicPath` already synced it (then this costs nothing); this holds for
            // any sink.
            match sync_file(&path).and_then(|()| journal::hash_file(&path)) {
                Ok((bytes, sha256)) => outputs.push(OutputRecord {
                    node: id.clone(),
                    path: path
                        .strip_prefix(&self.dir)
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
        // The outputs are in place and their data on disk; with their folder synced too, only
        // now is the chunk recorded.
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
        if let Err(e) = journal::write_json(&journal::record_path(&self.dir, chunk.index), &record)
        {
            return failed(format!("cannot write the chunk's record: {e}"));
        }
        let _ = std::fs::remove_file(journal::failed_path(&self.dir, chunk.index));
        ChunkOutcome::Recorded(record)
    }

    /// Joins every sink's chunk files into its output; the outputs written.
    pub fn assemble(&self, progress: &JobProgress) -> Result<Vec<PathBuf>, JobError> {
        let t0 = self.chunks().first().map_or(0.0, |c| c.range.0);
        let mut written = vec![];
        for (s, w) in self.shape.sinks.iter().zip(&self.whole) {
            let Some(output) = &s.output else { continue };
            let n = &self.plan.nodes[s.node];
            let sink = n.kind.chunk_sink.as_ref().expect("shape checked the sinks");
            let pieces: Vec<ChunkPiece> = self
                .chunks()
                .iter()
                .map(|c| ChunkPiece {
                    path: chunk_output(&self.dir, c.index, &n.id, output),
                    start: c.range.0 - t0,
                })
                .collect();
            sink.assemble(&n.id, &n.params, &pieces, w, output)
                .map_err(|e| JobError::Input(e.to_string()))?;
            // The job is reported done only once the joined file and its name are on disk
            // (whatever the sink did before its rename).
            let folder = match output.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            sync_file(output)
                .and_then(|()| journal::sync_dir(folder))
                .map_err(io_err(format!("cannot sync `{}`", output.display())))?;
            progress.assembled(&n.id, &output.display().to_string());
            written.push(output.clone());
        }
        Ok(written)
    }

    /// The audio a chunk reads from `a`, a source that only feeds audio: the chunk's frames
    /// (context frames included) widened by `a`'s context and [`AUDIO_MARGIN`]. Near the end
    /// of the audio (`end`), at least its last stretch of that length: a node clamps the
    /// windows of frames past the end of its audio to that stretch.
    fn audio_range(
        &self,
        chunk: &ChunkSpec,
        a: &shape::AudioSource,
        end: Option<f64>,
    ) -> (f64, Option<f64>) {
        let secs = |ms: u32, frames: u32| {
            ms as f64 / 1000.0 + frames as f64 * self.frame_secs + AUDIO_MARGIN
        };
        let (before, after) = (secs(a.ms.0, a.frames.0), secs(a.ms.1, a.frames.1));
        let mut start = chunk.read.0 - before;
        if let Some(e) = end {
            start = start.min(e - before - after);
        }
        (start, chunk.read.1.map(|t| t + after))
    }

    /// The graph's plan for one chunk: the source restricted to what the chunk reads, the
    /// sources that only feed audio to the chunk's audio ([`Job::audio_range`]), each sink
    /// writing into the chunk's folder and fed only per-chunk inputs, and a `trim` before
    /// each sink input when the chunk reads context frames. With [`ItemRetry::ByChunk`] no node
    /// retries an item within the run.
    fn chunk_plan(&self, chunk: &ChunkSpec, retry: ItemRetry) -> Plan {
        let mut nodes: Vec<PlanNode> = self.plan.nodes.clone();
        if retry == ItemRetry::ByChunk {
            for n in &mut nodes {
                if let OnError::Retry(_) = n.on_error {
                    n.on_error = OnError::Fail;
                }
            }
        }
        let src = &mut nodes[self.shape.source];
        let cutter = src
            .kind
            .chunk_source
            .clone()
            .expect("shape checked the source");
        cutter.restrict(&mut src.params, chunk.read.0, chunk.read.1);
        for (a, end) in self.shape.audio.iter().zip(&self.audio_ends) {
            let n = &mut nodes[a.node];
            let cutter = n.kind.chunk_source.clone().expect("shape checked it");
            let (start, stop) = self.audio_range(chunk, a, *end);
            cutter.restrict_audio(&mut n.params, start, stop);
        }
        let mut drop_edges = vec![];
        for s in &self.shape.sinks {
            let n = &mut nodes[s.node];
            if let Some(output) = &s.output {
                let sink = n.kind.chunk_sink.clone().expect("shape checked the sinks");
                sink.redirect(
                    &mut n.params,
                    &chunk_output(&self.dir, chunk.index, &n.id, output),
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
                    output_formats: vec![],
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

/// Chunk records in a job folder (trusted or not), for messages.
fn recorded_count(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(journal::CHUNKS_DIR))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.ends_with(".json") && !name.ends_with(".failed.json")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Runs a graph as a job in `opts.dir`, resuming what the directory already holds.
pub fn run(graph: &CheckedGraph, opts: JobOptions) -> Result<JobReport, JobError> {
    let started = Instant::now();
    let job = Job::open(graph, &opts.dir, opts.chunk_seconds, opts.restart)?;
    let (reused, pending) = job.scan(&opts.progress);
    let frame_count =
        |ids: &[usize]| -> u64 { ids.iter().map(|&i| job.chunks()[i].frames as u64).sum() };
    let total_frames: u64 = job.chunks().iter().map(|c| c.frames as u64).sum();
    let parallel = opts
        .parallel
        .unwrap_or_else(|| default_parallel(graph))
        .max(1);
    opts.progress.start(
        &job.dir.display().to_string(),
        (reused.len(), job.chunks().len()),
        (frame_count(&reused), total_frames),
        parallel,
    );
    let mut report = JobReport {
        chunks: job.chunks().len(),
        reused,
        ..Default::default()
    };

    let runner = Runner {
        job: &job,
        progress: &opts.progress,
        shared: &opts.shared,
        queue: Mutex::new(pending.into()),
        stop: &opts.stop,
        outcome: Mutex::new((vec![], vec![])),
    };
    // Ctrl-C sets the job's flag, which every chunk's run watches (a chunk that fails stops
    // only itself).
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| runner.work());
        }
    });
    let (ran, failed) = runner
        .outcome
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    report.ran = ran;
    report.failed = failed;
    report.interrupted = opts.stop.is_set();
    if report.ok() {
        report.outputs = job.assemble(&opts.progress)?;
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

/// Flushes a file's data to disk.
fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Where a sink writes a chunk: `chunks/NNNNN/<node>.<the output's extension>`.
fn chunk_output(dir: &Path, index: usize, node: &str, output: &Path) -> PathBuf {
    let name = match output.extension() {
        Some(ext) => format!("{node}.{}", ext.to_string_lossy()),
        None => node.to_string(),
    };
    journal::chunk_dir(dir, index).join(name)
}

/// The threads of a local job that run chunks share this.
struct Runner<'a> {
    job: &'a Job,
    progress: &'a JobProgress,
    shared: &'a Arc<Shared>,
    queue: Mutex<VecDeque<ChunkSpec>>,
    /// The job's own flag (Ctrl-C sets it).
    stop: &'a StopFlag,
    /// Chunks recorded, chunks failed.
    outcome: Mutex<(Vec<usize>, Vec<Failed>)>,
}

impl Runner<'_> {
    fn stopping(&self) -> bool {
        self.stop.is_set()
    }

    fn work(&self) {
        loop {
            if self.stopping() {
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
                let ticks = self.progress.chunk_sink(chunk.index, self.job.source());
                let outcome = self.job.run_chunk_as(
                    &chunk,
                    ticks,
                    self.shared,
                    self.stop.clone(),
                    ItemRetry::ByChunk,
                );
                match outcome {
                    ChunkOutcome::Recorded(r) => {
                        self.progress.chunk_done(
                            chunk.index,
                            chunk.range,
                            chunk.frames as u64,
                            r.seconds,
                        );
                        self.outcome
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                            .push(chunk.index);
                        break;
                    }
                    ChunkOutcome::Stopped => {
                        self.progress.chunk_abandoned(chunk.index);
                        return;
                    }
                    // A chunk that failed while the job was being stopped may have failed
                    // because of it (before the stop reached its run): it is abandoned, never
                    // recorded as failed.
                    ChunkOutcome::Failed { .. } if self.stopping() => {
                        let _ =
                            std::fs::remove_dir_all(journal::chunk_dir(&self.job.dir, chunk.index));
                        self.progress.chunk_abandoned(chunk.index);
                        return;
                    }
                    ChunkOutcome::Failed { error, node } => {
                        // The graph's `on_error: retry N` of the failing node retries the chunk
                        // (and only the chunk: see `ItemRetry::ByChunk`).
                        let retry = attempt <= self.job.retries(node.as_deref());
                        self.progress
                            .chunk_failed(chunk.index, chunk.range, &error, retry);
                        errors.push(error);
                        if retry {
                            continue;
                        }
                        let failed = self.job.record_failure(&chunk, errors);
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
