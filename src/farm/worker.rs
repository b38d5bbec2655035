//! `vidflow worker --nats URL`: takes chunk tasks from the shared consumer one at a time per
//! slot, runs each with the normal executor against the job folder on shared storage, and
//! acks it once the chunk is recorded. While a chunk runs it sends in-progress acks, so only a
//! worker that is gone (killed, machine off) has its chunk redelivered. A chunk that fails is
//! given back for another try (nak) until its last delivery, which records it as failed with
//! every worker's error. First SIGTERM/Ctrl-C: finish the chunks in hand, then exit; second:
//! give them back at once.
//!
//! Relative paths in a graph are the coordinator's, from its working folder ([`Task::cwd`]).
//! Nodes open them (and `exec` starts its programs) relative to this process's working
//! folder, which is one for the whole process: [`CwdGate`] lets chunks run at once only when
//! they share that folder, so `--slots N` never runs a chunk against another task's folder.

use super::{BEAT, Beat, Event, NatsArgs, Task, events_subject};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt as _;
use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use vidflow_engine::Registry;
use vidflow_engine::exec::{NodeReport, ProgressSink, StopFlag};
use vidflow_engine::job::{ChunkOutcome, Job, JobError, journal};
use vidflow_engine::node::Shared;

/// What `vidflow worker` was asked.
pub struct Options {
    pub nats: NatsArgs,
    pub slots: usize,
    pub name: String,
    /// Put into every chunk's shared state (the device preference).
    pub shared: Arc<Shared>,
}

/// A job this worker has attached to, kept across its chunks (its `Shared` keeps the device).
struct Attached {
    job: Arc<Job>,
}

/// A chunk in hand: its job and index, frames done, and the flag that gives it back.
struct Running {
    job: String,
    chunk: usize,
    frames: Arc<AtomicU64>,
    stop: StopFlag,
}

struct State {
    name: String,
    slots: usize,
    running: Mutex<Vec<Running>>,
    done: AtomicU64,
    fps: Mutex<f64>,
    jobs: Mutex<HashMap<String, Arc<Attached>>>,
    /// First signal: take no more chunks. Second: give back the ones in hand.
    draining: AtomicBool,
    shared: Arc<Shared>,
    cwd: CwdGate,
}

/// The process's working folder, shared by the chunks running at once: a chunk enters with
/// its task's folder and holds it until it ends; a chunk of another folder waits until none
/// is held. Tickets keep the order, so a stream of one folder's chunks cannot starve another.
struct CwdGate {
    state: Mutex<Gate>,
    turn: Condvar,
}

struct Gate {
    current: Option<PathBuf>,
    holders: usize,
    next: u64,
    waiting: VecDeque<u64>,
}

/// A chunk's hold on the working folder, released on drop.
struct CwdLease<'a>(&'a CwdGate);

impl CwdGate {
    fn new() -> CwdGate {
        CwdGate {
            state: Mutex::new(Gate {
                current: std::env::current_dir().ok(),
                holders: 0,
                next: 0,
                waiting: VecDeque::new(),
            }),
            turn: Condvar::new(),
        }
    }

    /// Waits until the process may be in `dir`, and goes there.
    fn enter(&self, dir: &Path) -> Result<CwdLease<'_>, String> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = g.next;
        g.next += 1;
        g.waiting.push_back(ticket);
        loop {
            let here = g.current.as_deref() == Some(dir);
            if g.waiting.front() == Some(&ticket) && (g.holders == 0 || here) {
                g.waiting.pop_front();
                let moved = if here {
                    Ok(())
                } else {
                    std::env::set_current_dir(dir).map_err(|e| e.to_string())
                };
                // The next ticket may share this folder: let it look.
                self.turn.notify_all();
                moved?;
                g.current = Some(dir.to_path_buf());
                g.holders += 1;
                return Ok(CwdLease(self));
            }
            g = self.turn.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for CwdLease<'_> {
    fn drop(&mut self) {
        let mut g = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        g.holders -= 1;
        self.0.turn.notify_all();
    }
}

fn say(name: &str, line: String) {
    let _ = writeln!(std::io::stderr().lock(), "worker {name}: {line}");
}

pub fn run(opts: Options, registry: Registry) -> anyhow::Result<ExitCode> {
    let state = Arc::new(State {
        name: opts.name.clone(),
        slots: opts.slots.max(1),
        running: Mutex::new(vec![]),
        done: AtomicU64::new(0),
        fps: Mutex::new(0.0),
        jobs: Mutex::new(HashMap::new()),
        draining: AtomicBool::new(false),
        shared: opts.shared.clone(),
        cwd: CwdGate::new(),
    });
    let handler = state.clone();
    ctrlc::set_handler(move || {
        if handler.draining.swap(true, Ordering::SeqCst) {
            say(&handler.name, "giving back the chunks in hand".into());
            for r in handler.running.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                r.stop.stop();
            }
        } else {
            say(
                &handler.name,
                "finishing the chunks in hand, then exiting (signal again to give them back at once)"
                    .into(),
            );
        }
    })
    .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot install the signal handler"))?;
    let registry = Arc::new(registry);
    super::runtime()?.block_on(async move {
        let client = opts
            .nats
            .connect(&format!("vidflow-worker {}", opts.name))
            .await?;
        let js = jetstream::new(client.clone());
        let consumer = match js.get_stream(super::STREAM).await {
            Ok(s) => s.get_consumer(super::CONSUMER).await.ok(),
            Err(_) => None,
        };
        // A worker started before any coordinator creates the queue with the defaults.
        let consumer = match consumer {
            Some(c) => c,
            None => {
                super::queue(
                    &js,
                    super::Queue {
                        ack_wait: Duration::from_secs(30),
                        max_deliver: 3,
                    },
                )
                .await?
            }
        };
        let kv = super::workers_bucket(&js).await?;
        say(
            &opts.name,
            format!(
                "connected to {}, {} slot(s)",
                opts.nats.shown(),
                state.slots
            ),
        );

        let beat = {
            let (state, kv) = (state.clone(), kv.clone());
            tokio::spawn(async move {
                loop {
                    let b = Beat {
                        name: state.name.clone(),
                        slots: state.slots,
                        running: state
                            .running
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .iter()
                            .map(|r| (r.job.clone(), r.chunk, r.frames.load(Ordering::Relaxed)))
                            .collect(),
                        chunks_done: state.done.load(Ordering::Relaxed),
                        fps: *state.fps.lock().unwrap_or_else(|e| e.into_inner()),
                    };
                    let _ = kv
                        .put(
                            &state.name,
                            serde_json::to_vec(&b).unwrap_or_default().into(),
                        )
                        .await;
                    tokio::time::sleep(BEAT).await;
                }
            })
        };

        let mut slots = vec![];
        for _ in 0..state.slots {
            let (state, consumer, client, registry) = (
                state.clone(),
                consumer.clone(),
                client.clone(),
                registry.clone(),
            );
            slots.push(tokio::spawn(async move {
                while !state.draining.load(Ordering::SeqCst) {
                    let batch = consumer
                        .batch()
                        .max_messages(1)
                        .expires(Duration::from_secs(1))
                        .messages()
                        .await;
                    let msg = match batch {
                        Ok(mut b) => b.next().await,
                        Err(e) => {
                            say(&state.name, format!("cannot fetch a task: {e}"));
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    let Some(Ok(msg)) = msg else { continue };
                    handle(&state, &client, &registry, msg).await;
                }
            }));
        }
        for s in slots {
            let _ = s.await;
        }
        beat.abort();
        // A server that is gone must not keep the worker from exiting.
        let bye = async {
            let _ = kv.delete(&state.name).await;
            let _ = client.flush().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), bye).await;
        say(
            &state.name,
            format!(
                "exiting after {} chunk(s)",
                state.done.load(Ordering::Relaxed)
            ),
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Counts the frames a chunk's source has emitted, for heartbeats and events.
struct Frames {
    source: usize,
    frames: Arc<AtomicU64>,
}
impl ProgressSink for Frames {
    fn tick(&mut self, nodes: &[NodeReport], _elapsed: Duration) {
        if let Some(n) = nodes.get(self.source) {
            self.frames.store(n.items_out, Ordering::Relaxed);
        }
    }
}

/// Why a worker does not run a task.
enum Refusal {
    /// It cannot run it here (a folder it does not see, a graph it cannot load, a graph that
    /// is not the job's): a failed delivery, given back for another worker.
    Fail(String),
    /// The job folder was started over (`--restart`) since the task was published: the task
    /// is obsolete and is dropped without touching the folder, which is another job's now.
    Stale(String),
}

/// Loads the task's graph as the coordinator did and attaches to its job (cached per job).
/// Called with the working folder held at the task's.
fn attach(state: &State, registry: &Registry, task: &Task) -> Result<Arc<Attached>, JobError> {
    if let Some(a) = state
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&task.job)
    {
        return Ok(a.clone());
    }
    let job = super::load_task_job(&state.name, registry, task)?;
    let a = Arc::new(Attached { job: Arc::new(job) });
    state
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(task.job.clone(), a.clone());
    Ok(a)
}

/// Runs one task's chunk: checks that the job folder is there and is still the task's job,
/// takes the working folder, attaches, runs.
fn run_task(
    state: &State,
    registry: &Registry,
    task: &Task,
    frames: Arc<AtomicU64>,
    stop: StopFlag,
) -> Result<ChunkOutcome, Refusal> {
    let job_file = task.dir.join(journal::JOB_FILE);
    if !job_file.exists() {
        return Err(Refusal::Fail(format!(
            "the job folder `{}` is not visible from worker `{}`; put it on storage every worker sees (NFS, SMB, a shared disk) at the same path",
            task.dir.display(),
            state.name
        )));
    }
    let file = journal::read_json::<journal::JobFile>(&job_file).map_err(|e| {
        Refusal::Fail(format!(
            "worker `{}` cannot read `{}`: {e}",
            state.name,
            job_file.display()
        ))
    })?;
    let _cwd = state.cwd.enter(&task.cwd).map_err(|e| {
        Refusal::Fail(format!(
            "worker `{}` cannot enter the coordinator's working folder `{}`: {e}",
            state.name,
            task.cwd.display()
        ))
    })?;
    // The job's own id comes first: a folder started over since the task was published is
    // another job, whatever its graph (the graph's hash says what changed).
    if file.id != task.job {
        let why = match attach(state, registry, task) {
            Err(e @ JobError::Changed { .. }) => format!(":\n{e}"),
            _ => String::new(),
        };
        return Err(Refusal::Stale(format!(
            "the task belongs to an earlier run of job folder `{}`, which was started over since{why}",
            task.dir.display()
        )));
    }
    let a = attach(state, registry, task)
        .map_err(|e| Refusal::Fail(format!("worker `{}`: {e}", state.name)))?;
    let chunk = a
        .job
        .chunks()
        .get(task.chunk)
        .cloned()
        .ok_or_else(|| Refusal::Fail(format!("the job has no chunk {}", task.chunk)))?;
    let ticks = Box::new(Frames {
        source: a.job.source(),
        frames,
    });
    Ok(a.job.run_chunk(&chunk, ticks, &state.shared, stop))
}

async fn handle(
    state: &Arc<State>,
    client: &async_nats::Client,
    registry: &Arc<Registry>,
    msg: jetstream::Message,
) {
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
    let task: Task = match serde_json::from_slice(&msg.payload) {
        Ok(t) => t,
        Err(e) => {
            say(
                &state.name,
                format!("dropping a task that is not vidflow's: {e}"),
            );
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    let max_deliver = task.max_deliver;
    let subject = events_subject(&task.job);
    let publish = |e: Event| {
        let client = client.clone();
        let subject = subject.clone();
        async move {
            let _ = client
                .publish(subject, serde_json::to_vec(&e).unwrap_or_default().into())
                .await;
        }
    };
    let name = state.name.clone();
    say(
        &name,
        format!("chunk {} started (delivery {delivered})", task.chunk),
    );
    publish(Event::Start {
        worker: name.clone(),
        chunk: task.chunk,
        delivered,
    })
    .await;
    let frames = Arc::new(AtomicU64::new(0));
    let stop = StopFlag::new();
    state
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Running {
            job: task.job.clone(),
            chunk: task.chunk,
            frames: frames.clone(),
            stop: stop.clone(),
        });
    let started = Instant::now();
    let work = {
        let (state, registry, task, frames, stop) = (
            state.clone(),
            registry.clone(),
            task.clone(),
            frames.clone(),
            stop.clone(),
        );
        tokio::task::spawn_blocking(move || run_task(&state, &registry, &task, frames, stop))
    };
    tokio::pin!(work);
    // In-progress acks keep the chunk ours while it runs; the coordinator hears the progress.
    let ack_wait = Duration::from_millis(task.ack_wait_ms);
    let every = (ack_wait / 3).clamp(Duration::from_millis(200), BEAT);
    let outcome = loop {
        tokio::select! {
            r = &mut work => {
                let failed = |e| Err(Refusal::Fail(format!("the chunk's thread failed: {e}")));
                break r.unwrap_or_else(failed);
            }
            _ = tokio::time::sleep(every) => {
                let _ = msg.ack_with(AckKind::Progress).await;
                publish(Event::Progress {
                    worker: name.clone(),
                    chunk: task.chunk,
                    frames: frames.load(Ordering::Relaxed),
                }).await;
            }
        }
    };
    state
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|r| !(r.job == task.job && r.chunk == task.chunk));
    let outcome = match outcome {
        Ok(o) => o,
        Err(Refusal::Fail(error)) => ChunkOutcome::Failed { error, node: None },
        Err(Refusal::Stale(error)) => {
            let _ = msg.ack_with(AckKind::Term).await;
            say(&name, format!("chunk {} dropped: {error}", task.chunk));
            // Said on the old job's subject: a coordinator of it that still runs ends.
            publish(Event::Failed {
                worker: name.clone(),
                chunk: task.chunk,
                error,
                delivered,
                last: true,
            })
            .await;
            return;
        }
    };
    match outcome {
        ChunkOutcome::Recorded(r) => {
            let secs = started.elapsed().as_secs_f64();
            *state.fps.lock().unwrap_or_else(|e| e.into_inner()) = r.frames as f64 / secs.max(1e-9);
            state.done.fetch_add(1, Ordering::Relaxed);
            // Recorded first, acked after: a worker killed in between has its chunk run again,
            // and the rerun finds it recorded or records it anew.
            if let Err(e) = msg.double_ack().await {
                say(
                    &name,
                    format!("chunk {}: the ack was not confirmed: {e}", task.chunk),
                );
            }
            say(
                &name,
                format!(
                    "chunk {} done: {} frames in {secs:.2}s",
                    task.chunk, r.frames
                ),
            );
            publish(Event::Done {
                worker: name.clone(),
                chunk: task.chunk,
                frames: r.frames as u64,
                seconds: secs,
            })
            .await;
        }
        ChunkOutcome::Stopped => {
            let _ = msg.ack_with(AckKind::Nak(None)).await;
            say(&name, format!("chunk {} given back", task.chunk));
            publish(Event::Released {
                worker: name.clone(),
                chunk: task.chunk,
            })
            .await;
        }
        ChunkOutcome::Failed { error, .. } => {
            let last = max_deliver > 0 && delivered >= max_deliver;
            let problems = super::record_failed(&task, &name, delivered, &error, last);
            if last {
                let _ = msg.ack_with(AckKind::Term).await;
            } else {
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                    .await;
            }
            say(
                &name,
                format!(
                    "chunk {} failed (delivery {delivered} of {max_deliver}): {error}",
                    task.chunk
                ),
            );
            // A folder it cannot see at all is the error itself; any other write that failed
            // (a full disk) is said with it, and the coordinator records what is missing.
            let unrecorded = !problems.is_empty() && task.dir.join(journal::JOB_FILE).exists();
            let error = if unrecorded {
                for p in &problems {
                    say(
                        &name,
                        format!("chunk {}: could not record the failure: {p}", task.chunk),
                    );
                }
                format!(
                    "{error} (and worker `{name}` could not record it in the job folder: {})",
                    problems.join("; ")
                )
            } else {
                error
            };
            publish(Event::Failed {
                worker: name.clone(),
                chunk: task.chunk,
                error,
                delivered,
                last,
            })
            .await;
        }
    }
}
