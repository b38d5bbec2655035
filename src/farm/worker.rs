//! `vidflow worker --nats URL`: takes chunk tasks from the shared consumer one at a time per
//! slot, runs each with the normal executor against the job folder on shared storage, and
//! acks it once the chunk is recorded. While a chunk runs it sends in-progress acks, so only a
//! worker that is gone (killed, machine off) has its chunk redelivered. A chunk that fails is
//! given back for another try (nak) until its last delivery, which records it as failed with
//! every worker's error. First SIGTERM/Ctrl-C: finish the chunks in hand, then exit; second:
//! give them back at once.

use super::{BEAT, Beat, Event, NatsArgs, Task, events_subject};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vidflow_engine::exec::{NodeReport, ProgressSink, StopFlag};
use vidflow_engine::job::{ChunkOutcome, Job, journal};
use vidflow_engine::node::Shared;
use vidflow_engine::{Mode, Registry, SourceFile};

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

/// Loads the task's graph as the coordinator did and attaches to its job (cached per job).
fn attach(state: &State, registry: &Registry, task: &Task) -> Result<Arc<Attached>, String> {
    if let Some(a) = state
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&task.job)
    {
        return Ok(a.clone());
    }
    if !task.dir.join(journal::JOB_FILE).exists() {
        return Err(format!(
            "the job folder `{}` is not visible from worker `{}`; put it on storage every worker sees (NFS, SMB, a shared disk) at the same path",
            task.dir.display(),
            state.name
        ));
    }
    // Relative paths in the graph are the coordinator's, from its working folder.
    if std::env::current_dir().ok().as_deref() != Some(task.cwd.as_path()) {
        std::env::set_current_dir(&task.cwd).map_err(|e| {
            format!(
                "worker `{}` cannot enter the coordinator's working folder `{}`: {e}",
                state.name,
                task.cwd.display()
            )
        })?;
    }
    let set = vidflow_engine::parse_overrides(&task.set)?;
    let graph = vidflow_engine::check_source(
        SourceFile::new(task.file.clone(), task.text.clone()),
        registry,
        &set,
        Mode::Run,
    )
    .map_err(|e| {
        format!(
            "worker `{}` cannot run the graph:\n{}",
            state.name,
            e.render()
        )
    })?;
    let job =
        Job::attach(&graph, &task.dir).map_err(|e| format!("worker `{}`: {e}", state.name))?;
    if job.file.id != task.job {
        return Err(format!(
            "the task belongs to an earlier run of job folder `{}`, which was started over since",
            task.dir.display()
        ));
    }
    let a = Arc::new(Attached { job: Arc::new(job) });
    state
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(task.job.clone(), a.clone());
    Ok(a)
}

/// Appends a failed attempt to the chunk's error log (all workers, all deliveries).
fn log_error(dir: &Path, chunk: usize, worker: &str, delivered: i64, error: &str) {
    let path = journal::chunk_errors_path(dir, chunk);
    let line = serde_json::json!({"worker": worker, "delivered": delivered, "error": error});
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
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
        tokio::task::spawn_blocking(move || -> Result<ChunkOutcome, String> {
            let a = attach(&state, &registry, &task)?;
            let chunk = a
                .job
                .chunks()
                .get(task.chunk)
                .cloned()
                .ok_or_else(|| format!("the job has no chunk {}", task.chunk))?;
            let ticks = Box::new(Frames {
                source: a.job.source(),
                frames,
            });
            Ok(a.job.run_chunk(&chunk, ticks, &state.shared, stop))
        })
    };
    tokio::pin!(work);
    // In-progress acks keep the chunk ours while it runs; the coordinator hears the progress.
    let ack_wait = Duration::from_millis(task.ack_wait_ms);
    let every = (ack_wait / 3).clamp(Duration::from_millis(200), BEAT);
    let outcome = loop {
        tokio::select! {
            r = &mut work => break r.unwrap_or_else(|e| Err(format!("the chunk's thread failed: {e}"))),
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
    let outcome = outcome.unwrap_or_else(|error| ChunkOutcome::Failed { error, node: None });
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
            log_error(&task.dir, task.chunk, &name, delivered, &error);
            if last {
                // Every worker's error of this round, oldest first.
                let errors = journal::chunk_errors(&task.dir, task.chunk, max_deliver as usize);
                let attached = state
                    .jobs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&task.job)
                    .cloned();
                match attached {
                    Some(a) => {
                        if let Some(c) = a.job.chunks().get(task.chunk) {
                            a.job.record_failure(c, errors);
                        }
                    }
                    // It could not even attach (a kind it lacks, another graph): the job
                    // folder, if it sees it, still says which chunk and why.
                    None => journal::write_failed(&task.dir, task.chunk, errors),
                }
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
