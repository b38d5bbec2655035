//! Jobs spread over many machines through NATS JetStream: `vidflow worker --nats URL` runs
//! chunks, `vidflow run GRAPH --job DIR --nats URL` coordinates. The job folder lives on
//! storage every machine sees; only the task (graph text, job folder, chunk index) travels.
//!
//! This module owns everything asynchronous in vidflow (tokio, async-nats) and the wire
//! format: one work-queue stream of chunk tasks ([`STREAM`]) read through one durable pull
//! consumer that every worker shares ([`CONSUMER`]: explicit acks, redelivery after the ack
//! deadline, `max_deliver`), `Nats-Msg-Id` = job id + chunk + how many times the job gave up
//! on the chunk (so a rerun retries it, and a restarted coordinator publishes nothing twice),
//! events on `vidflow.events.<job>` for the coordinator's display, and a key-value bucket
//! ([`WORKERS`]) the workers heartbeat into.

pub mod coordinator;
pub mod local;
pub mod worker;

use async_nats::jetstream::{self, consumer::pull, kv, stream};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use vidflow_engine::job::journal;

/// The work-queue stream of chunk tasks.
pub const STREAM: &str = "VIDFLOW_CHUNKS";
/// Tasks are published on `vidflow.chunks.<job hash>`.
pub const TASKS: &str = "vidflow.chunks";
/// The durable pull consumer every worker shares (a work-queue stream allows one).
pub const CONSUMER: &str = "vidflow-workers";
/// Events of a job: `vidflow.events.<job hash>`.
pub const EVENTS: &str = "vidflow.events";
/// The bucket of worker heartbeats (key: worker name).
pub const WORKERS: &str = "vidflow_workers";
/// How often workers heartbeat; a worker silent for three beats is gone from the bucket.
pub const BEAT: Duration = Duration::from_secs(2);

/// How to reach the NATS server. Credentials come from flags or the environment and are never
/// printed.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NatsArgs {
    /// NATS server URL (`nats://host:4222`, `tls://host:4222`); several, comma-separated.
    #[arg(long, value_name = "URL", env = "NATS_URL")]
    pub nats: Option<String>,
    /// Token the server requires.
    #[arg(long, value_name = "TOKEN", env = "NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// User name the server requires (with `--nats-password`).
    #[arg(
        long,
        value_name = "USER",
        env = "NATS_USER",
        requires = "nats_password"
    )]
    pub nats_user: Option<String>,
    /// Password of `--nats-user`.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<String>,
    /// NKey seed the server requires.
    #[arg(long, value_name = "SEED", env = "NATS_NKEY", hide_env_values = true)]
    pub nats_nkey: Option<String>,
    /// A `.creds` file (JWT and NKey seed).
    #[arg(long, value_name = "FILE", env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) that signed the server's; implies TLS.
    #[arg(long, value_name = "FILE", env = "NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// Require TLS (also implied by a `tls://` URL).
    #[arg(long)]
    pub nats_tls: bool,
}

impl NatsArgs {
    /// The server URLs without any user information, for messages.
    pub fn shown(&self) -> String {
        self.nats
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(|u| match (u.find("://"), u.rfind('@')) {
                (Some(s), Some(a)) if a > s => format!("{}{}", &u[..s + 3], &u[a + 1..]),
                _ => u.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Connects, with the credentials and TLS asked for.
    pub async fn connect(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        let url = self
            .nats
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no NATS server given (`--nats URL`)"))?;
        let mut opts = match (&self.nats_creds, &self.nats_nkey) {
            (Some(f), _) => async_nats::ConnectOptions::with_credentials_file(f.clone())
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot read the credentials file `{}`: {e}", f.display())
                })?,
            (None, Some(seed)) => async_nats::ConnectOptions::with_nkey(seed.clone()),
            (None, None) => async_nats::ConnectOptions::new(),
        };
        if let Some(t) = &self.nats_token {
            opts = opts.token(t.clone());
        }
        if let (Some(u), Some(p)) = (&self.nats_user, &self.nats_password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(ca) = &self.nats_ca {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if self.nats_tls {
            opts = opts.require_tls(true);
        }
        let urls: Vec<async_nats::ServerAddr> = url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("`{}` is not a NATS URL: {e}", self.shown()))?;
        opts.name(name)
            .connection_timeout(Duration::from_secs(5))
            .connect(urls)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to the NATS server at `{}`: {e}; check that it runs (scripts/nats.sh starts one), the URL, and the credentials (--nats-token, --nats-user/--nats-password, --nats-nkey, --nats-creds)",
                    self.shown()
                )
            })
    }
}

/// The queue settings a coordinator creates the stream and consumer with.
#[derive(Clone, Copy, Debug)]
pub struct Queue {
    /// A chunk whose worker sends no heartbeat for this long goes to another worker.
    pub ack_wait: Duration,
    /// Deliveries of one chunk before it is recorded as failed.
    pub max_deliver: i64,
}

/// The stream and consumer (created if missing).
pub async fn queue(
    js: &jetstream::Context,
    q: Queue,
) -> anyhow::Result<jetstream::consumer::PullConsumer> {
    let s = js
        .get_or_create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![format!("{TASKS}.>")],
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: Duration::from_secs(3600),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot create the JetStream stream of chunk tasks (does the server run with JetStream, `-js`?)"))?;
    let config = pull::Config {
        durable_name: Some(CONSUMER.into()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: q.ack_wait,
        max_deliver: q.max_deliver,
        max_ack_pending: 10_000,
        ..Default::default()
    };
    // The settings of the latest coordinator win (get-or-create would keep old ones).
    match s.update_consumer(config.clone()).await {
        Ok(_) => {}
        Err(_) => {
            s.create_consumer(config)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot create the workers' consumer"))?;
        }
    }
    s.get_consumer(CONSUMER)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot open the workers' consumer"))
}

/// The heartbeat bucket (created if missing).
pub async fn workers_bucket(js: &jetstream::Context) -> anyhow::Result<kv::Store> {
    js.create_key_value(kv::Config {
        bucket: WORKERS.into(),
        history: 1,
        max_age: BEAT * 3,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot create the workers' key-value bucket"))
}

/// One chunk to run: what the worker needs to load the graph as the coordinator did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    /// The job's id (its `job.json`).
    pub job: String,
    /// The job folder, absolute.
    pub dir: PathBuf,
    /// The folder relative paths in the graph are read from.
    pub cwd: PathBuf,
    /// The graph file's name (for messages) and text, and the `--set` overrides.
    pub file: String,
    pub text: String,
    pub set: Vec<String>,
    pub chunk: usize,
    /// The queue settings the coordinator made the consumer with (a worker's cached view of
    /// the consumer may predate them): deliveries before the chunk is recorded as failed, and
    /// the ack deadline its heartbeats must beat.
    pub max_deliver: i64,
    pub ack_wait_ms: u64,
}

/// What workers say about a job, on `vidflow.events.<job>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum Event {
    #[serde(rename = "chunk_start")]
    Start {
        worker: String,
        chunk: usize,
        delivered: i64,
    },
    #[serde(rename = "chunk_progress")]
    Progress {
        worker: String,
        chunk: usize,
        frames: u64,
    },
    #[serde(rename = "chunk_done")]
    Done {
        worker: String,
        chunk: usize,
        frames: u64,
        seconds: f64,
    },
    #[serde(rename = "chunk_failed")]
    Failed {
        worker: String,
        chunk: usize,
        error: String,
        delivered: i64,
        last: bool,
    },
    #[serde(rename = "chunk_released")]
    Released { worker: String, chunk: usize },
}

/// A worker's heartbeat, in the [`WORKERS`] bucket.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Beat {
    pub name: String,
    pub slots: usize,
    /// (job, chunk, frames done) of each chunk it runs.
    pub running: Vec<(String, usize, u64)>,
    pub chunks_done: u64,
    /// Frames per second over its last chunk.
    pub fps: f64,
}

pub fn events_subject(job: &str) -> String {
    format!("{EVENTS}.{job}")
}

/// A tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot start the async runtime"))
}

/// A task's graph, checked from the text the coordinator sent as the coordinator checked it,
/// and the job in the task's folder (refused if the folder holds another graph's job).
pub(crate) fn load_task_job(
    worker: &str,
    registry: &vidflow_engine::Registry,
    task: &Task,
) -> Result<vidflow_engine::job::Job, vidflow_engine::job::JobError> {
    use vidflow_engine::job::JobError;
    let set = vidflow_engine::parse_overrides(&task.set).map_err(JobError::Input)?;
    let graph = vidflow_engine::check_source(
        vidflow_engine::SourceFile::new(task.file.clone(), task.text.clone()),
        registry,
        &set,
        vidflow_engine::Mode::Run,
    )
    .map_err(|e| {
        JobError::Input(format!(
            "worker `{worker}` cannot run the graph:\n{}",
            e.render()
        ))
    })?;
    vidflow_engine::job::Job::attach(&graph, &task.dir)
}

/// The start of a coordinator's run: the chunks the journal already has and the ones to run,
/// shown on the job's display, and the report that will say how it went.
pub(crate) fn begin(
    job: &vidflow_engine::job::Job,
    progress: &vidflow_engine::job::progress::JobProgress,
    parallel: usize,
) -> (
    vidflow_engine::job::JobReport,
    Vec<vidflow_engine::job::journal::ChunkSpec>,
) {
    let (reused, pending) = job.scan(progress);
    let total: u64 = job.chunks().iter().map(|c| c.frames as u64).sum();
    let done_frames: u64 = reused.iter().map(|&i| job.chunks()[i].frames as u64).sum();
    progress.start(
        &job.dir.display().to_string(),
        (reused.len(), job.chunks().len()),
        (done_frames, total),
        parallel,
    );
    let report = vidflow_engine::job::JobReport {
        chunks: job.chunks().len(),
        reused,
        ..Default::default()
    };
    (report, pending)
}

/// Records a failed delivery in the job folder: a line of the chunk's error log, and on its
/// last delivery the chunk's `failed.json` with every worker's error. What could not be
/// written comes back, to be said with the failure (the coordinator then records it).
pub(crate) fn record_failed(
    task: &Task,
    worker: &str,
    delivered: i64,
    error: &str,
    last: bool,
) -> Vec<String> {
    let mut problems = vec![];
    let line = journal::ErrorLine {
        worker: worker.to_string(),
        delivered,
        error: error.to_string(),
        last,
    };
    if let Err(e) = journal::append_error(&task.dir, task.chunk, &line) {
        problems.push(e);
    }
    if last {
        let mut errors =
            journal::chunk_errors(&task.dir, task.chunk, task.max_deliver.max(1) as usize);
        if !errors.contains(&line.to_string()) {
            errors.push(line.to_string());
        }
        let range = journal::read_json::<journal::JobFile>(&task.dir.join(journal::JOB_FILE))
            .ok()
            .and_then(|f| f.chunks.get(task.chunk).map(|c| c.range));
        match range {
            Some(range) => {
                let failed = journal::Failed {
                    index: task.chunk,
                    range,
                    errors,
                };
                if let Err(e) = journal::try_write_failed(&task.dir, &failed) {
                    problems.push(e);
                }
            }
            None => problems.push(format!(
                "cannot read the chunk's range from `{}`",
                task.dir.join(journal::JOB_FILE).display()
            )),
        }
    }
    problems
}
