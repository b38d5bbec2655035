//! `vidflow run GRAPH --job DIR --nats URL`: the coordinator. It opens the job (check, cut,
//! journal) as a local job does, publishes one task per chunk the journal does not have
//! (`Nats-Msg-Id` de-duplicated, so a restarted coordinator publishes nothing twice), shows
//! the workers' events, watches the journal until every chunk is recorded or failed, and
//! assembles. Ctrl-C leaves the tasks queued: workers go on, and a rerun picks the job up.
//! Also `vidflow job status DIR --nats URL`'s list of live workers.
//!
//! It never waits for what cannot come. A chunk ends when its record is in the journal, when
//! its `failed.json` is, when a worker says it failed its last allowed delivery (even if that
//! worker could not write into the job folder: the coordinator then records it), when
//! JetStream's max-deliveries advisory says no worker will get it again (its last worker was
//! killed, or gave it back on a second SIGTERM), and, as a last resort, when the queue holds
//! nothing pending or in flight while chunks are still open.

use super::{Beat, CONSUMER, Event, NatsArgs, Queue, STREAM, TASKS, Task, events_subject};
use async_nats::jetstream::{self, message::PublishMessage, stream::RawMessageErrorKind};
use futures_util::StreamExt as _;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;
use vidflow_engine::exec::StopFlag;
use vidflow_engine::job::{Job, JobReport, journal, progress::JobProgress};

/// What the coordinator publishes and watches.
pub struct Coordinate<'a> {
    pub job: &'a Job,
    pub nats: &'a NatsArgs,
    pub queue: Queue,
    /// The graph as the workers load it.
    pub file: String,
    pub text: String,
    pub set: Vec<String>,
    pub progress: &'a JobProgress,
    pub stop: StopFlag,
}

/// What the coordinator last heard of a chunk's delivery.
#[derive(Clone, Default)]
struct Seen {
    worker: String,
    delivered: i64,
    released: bool,
}

/// Publishes the job's remaining chunks and waits for them.
pub fn run(c: Coordinate<'_>) -> anyhow::Result<JobReport> {
    let started = std::time::Instant::now();
    let job = c.job;
    let dir = std::path::absolute(&job.dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot resolve the job folder"))?;
    let cwd = std::env::current_dir()
        .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot read the working folder"))?;
    same_graph(&c, &dir)?;
    let (mut report, pending) = super::begin(job, c.progress, 0);
    // The job's own id names its tasks and events: the same graph in another folder, or
    // this folder started over, is another job.
    let hash = job.file.id.clone();
    let max_deliver = c.queue.max_deliver;

    super::runtime()?.block_on(async {
        let client = c.nats.connect("vidflow coordinator").await?;
        let js = jetstream::new(client.clone());
        let consumer = super::queue(&js, c.queue).await?;
        let stream = js
            .get_stream(STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot open the stream of chunk tasks"))?;
        let mut events = client
            .subscribe(events_subject(&hash))
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot subscribe to the job's events"))?;
        let mut exhausted = client
            .subscribe(format!(
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{STREAM}.{CONSUMER}"
            ))
            .await
            .map_err(|e| {
                anyhow::anyhow!("{}: {e}", "cannot subscribe to JetStream's advisories")
            })?;

        let (mut new, mut duplicates, mut last_seq) = (0u64, 0u64, 0u64);
        // The stream sequence of each chunk's task (for a duplicate, the original's).
        let mut tasks: HashMap<u64, usize> = HashMap::new();
        for chunk in &pending {
            // A chunk recorded as failed by an earlier run is tried again.
            let _ = std::fs::remove_file(journal::failed_path(&dir, chunk.index));
            let task = Task {
                job: hash.clone(),
                dir: dir.clone(),
                cwd: cwd.clone(),
                file: c.file.clone(),
                text: c.text.clone(),
                set: c.set.clone(),
                chunk: chunk.index,
                max_deliver,
                ack_wait_ms: c.queue.ack_wait.as_millis() as u64,
            };
            let payload = serde_json::to_vec(&task)?;
            // The id changes only when the job gave up on the chunk (a final failure), so a
            // rerun retries it; failed deliveries before that keep the id, and a restarted
            // coordinator finds the task still queued or running as a duplicate.
            let mut round = journal::final_failures(&dir, chunk.index);
            let seq = loop {
                let ack = js
                    .send_publish(
                        format!("{TASKS}.{hash}"),
                        PublishMessage::build()
                            .payload(payload.clone().into())
                            .message_id(format!("{hash}-{}-{round}", chunk.index)),
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot publish a chunk task"))?
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("{}: {e}", "the server did not take a chunk task")
                    })?;
                if !ack.duplicate {
                    new += 1;
                    break ack.sequence;
                }
                // A duplicate whose message is gone was consumed: the chunk is recorded by now,
                // or the job gave up on it without the journal saying so (a folder that could
                // not be written). Then the retry needs an id of its own.
                let gone = matches!(
                    stream.get_raw_message(ack.sequence).await,
                    Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound
                );
                if gone && !recorded(job, &dir, chunk.index) && round < 1000 {
                    round += 1;
                    continue;
                }
                duplicates += 1;
                break ack.sequence;
            };
            tasks.insert(seq, chunk.index);
            last_seq = last_seq.max(seq);
        }
        if c.progress.mode() == vidflow_engine::progress::Mode::Json {
            eprintln!(
                "{}",
                serde_json::json!({"event": "published", "new": new, "duplicates": duplicates,
                    "chunks": pending.iter().map(|c| c.index).collect::<Vec<_>>(), "last_seq": last_seq})
            );
        } else if c.progress.mode() != vidflow_engine::progress::Mode::None {
            eprintln!(
                "job `{}`: {new} chunk task(s) published ({duplicates} already queued) on {}",
                job.dir.display(),
                c.nats.shown()
            );
        }

        let give_up = |i: usize, line: journal::ErrorLine| -> journal::Failed {
            let spec = &job.chunks()[i];
            c.progress.chunk_failed(i, spec.range, &line.to_string(), false);
            record_given_up(&dir, &hash, spec, line, max_deliver)
        };
        let mut open: BTreeSet<usize> = pending.iter().map(|c| c.index).collect();
        let mut seen: HashMap<usize, Seen> = HashMap::new();
        let mut check = tokio::time::interval(Duration::from_millis(100));
        let mut sweep = tokio::time::interval(Duration::from_secs(2));
        let mut idle_sweeps = 0;
        while !open.is_empty() {
            if c.stop.is_set() {
                report.interrupted = true;
                break;
            }
            tokio::select! {
                Some(m) = events.next() => {
                    let Ok(e) = serde_json::from_slice::<Event>(&m.payload) else { continue };
                    show(c.progress, job, &e);
                    match e {
                        Event::Start { worker, chunk, delivered } => {
                            seen.insert(chunk, Seen { worker, delivered, released: false });
                        }
                        Event::Released { chunk, .. } => {
                            if let Some(s) = seen.get_mut(&chunk) {
                                s.released = true;
                            }
                        }
                        // The worker's word is final even when it could not write the
                        // journal (a folder it does not see, a full disk): the coordinator
                        // records what the worker could not.
                        Event::Failed { worker, chunk, error, delivered, last: true }
                            if open.contains(&chunk) =>
                        {
                            open.remove(&chunk);
                            report.failed.push(match read_failed(&dir, chunk) {
                                Ok(f) => f,
                                Err(_) => record_given_up(
                                    &dir,
                                    &hash,
                                    &job.chunks()[chunk],
                                    journal::ErrorLine { worker, delivered, error, last: true },
                                    max_deliver,
                                ),
                            });
                        }
                        _ => {}
                    }
                }
                Some(m) = exhausted.next() => {
                    // JetStream will not deliver this task again: its last delivery ended
                    // without an ack, a term or a word from the worker.
                    let a: serde_json::Value =
                        serde_json::from_slice(&m.payload).unwrap_or_default();
                    let Some(seq) = a["stream_seq"].as_u64() else { continue };
                    let Some(&i) = tasks.get(&seq) else { continue };
                    if !open.contains(&i) || recorded(job, &dir, i) {
                        continue;
                    }
                    open.remove(&i);
                    let delivered = a["deliveries"].as_i64().unwrap_or(max_deliver);
                    let line = silent_end(seen.get(&i), delivered, max_deliver);
                    report.failed.push(give_up(i, line));
                    // Kept by JetStream for whoever handles it: handled, so gone.
                    let _ = stream.delete_message(seq).await;
                }
                _ = check.tick() => {
                    // The journal is the truth: a chunk is done when its record is there and
                    // its outputs match it, failed when its last delivery recorded it so.
                    for &i in open.clone().iter() {
                        if recorded(job, &dir, i) {
                            open.remove(&i);
                            report.ran.push(i);
                        } else if let Ok(f) = read_failed(&dir, i) {
                            open.remove(&i);
                            report.failed.push(f);
                        }
                    }
                }
                _ = sweep.tick() => {
                    // Nothing queued and nothing held by a worker, twice in a row (events in
                    // between had their chance): the open chunks will never end by themselves.
                    let idle = matches!(
                        consumer.get_info().await,
                        Ok(i) if i.num_pending == 0 && i.num_ack_pending == 0
                    );
                    idle_sweeps = if idle { idle_sweeps + 1 } else { 0 };
                    if idle_sweeps < 2 {
                        continue;
                    }
                    for &i in open.clone().iter() {
                        let line = match stalled(job, &dir, i, seen.get(&i), max_deliver) {
                            None => continue,
                            Some(Ok(failed)) => {
                                open.remove(&i);
                                report.failed.push(failed);
                                continue;
                            }
                            Some(Err(line)) => line,
                        };
                        open.remove(&i);
                        report.failed.push(give_up(i, line));
                        if let Some((&seq, _)) = tasks.iter().find(|(_, c)| **c == i) {
                            let _ = stream.delete_message(seq).await;
                        }
                    }
                }
            }
        }
        // Late events (the last chunk's `done`) make the display whole.
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), events.next()).await {
            if let Ok(e) = serde_json::from_slice::<Event>(&m.payload) {
                show(c.progress, job, &e);
            }
        }
        anyhow::Ok(())
    })?;
    if report.ok() {
        report.outputs = job
            .assemble(c.progress)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    report.elapsed = started.elapsed();
    let failed: Vec<usize> = report.failed.iter().map(|f| f.index).collect();
    c.progress
        .end(report.ok(), report.interrupted, &failed, report.elapsed);
    Ok(report)
}

/// The graph text the workers get must be the graph the job was opened with: the file is read
/// again for them, and an edit in between would have every worker refuse every chunk.
fn same_graph(c: &Coordinate<'_>, dir: &Path) -> anyhow::Result<()> {
    let changed = |why: String| {
        anyhow::anyhow!(
            "`{}` changed while the job was being opened; run the command again:\n{why}",
            c.file
        )
    };
    let set = vidflow_engine::parse_overrides(&c.set).map_err(|e| anyhow::anyhow!("{e}"))?;
    let graph = vidflow_engine::check_source(
        vidflow_engine::SourceFile::new(c.file.clone(), c.text.clone()),
        &vidflow_nodes::registry(),
        &set,
        vidflow_engine::Mode::Run,
    )
    .map_err(|e| changed(e.render()))?;
    Job::attach(&graph, dir).map_err(|e| changed(e.to_string()))?;
    Ok(())
}

fn read_failed(dir: &Path, i: usize) -> Result<journal::Failed, String> {
    journal::read_json(&journal::failed_path(dir, i))
}

/// What becomes of an open chunk once the queue holds nothing pending or in flight: `None`
/// when its record holds (the next check takes it), its `failed.json` when there is one, else
/// the last error the job gives up on it with.
fn stalled(
    job: &Job,
    dir: &Path,
    i: usize,
    seen: Option<&Seen>,
    max_deliver: i64,
) -> Option<Result<journal::Failed, journal::ErrorLine>> {
    let record = journal::read_json::<journal::Record>(&journal::record_path(dir, i))
        .and_then(|r| journal::verify(dir, &job.chunks()[i], &r));
    if record.is_ok() {
        return None;
    }
    if let Ok(f) = read_failed(dir, i) {
        return Some(Ok(f));
    }
    let delivered = seen.map_or(0, |s| s.delivered);
    Some(Err(match record {
        Err(why) if journal::record_path(dir, i).exists() => journal::ErrorLine {
            worker: "coordinator".into(),
            delivered,
            error: format!("its record does not hold ({why}) and no worker will run it again"),
            last: true,
        },
        _ => silent_end(seen, delivered, max_deliver),
    }))
}

/// Whether chunk `i`'s record is in the journal and its outputs match it.
pub(super) fn recorded(job: &Job, dir: &Path, i: usize) -> bool {
    journal::read_json::<journal::Record>(&journal::record_path(dir, i))
        .and_then(|r| journal::verify(dir, &job.chunks()[i], &r))
        .is_ok()
}

/// Why a chunk's last delivery ended with no word from its worker.
fn silent_end(seen: Option<&Seen>, delivered: i64, max_deliver: i64) -> journal::ErrorLine {
    let error = match seen {
        Some(s) if s.released => format!(
            "gave it back on its last allowed delivery ({delivered} of {max_deliver}: the worker was told to stop at once); JetStream delivers a chunk at most {max_deliver} times"
        ),
        Some(_) => format!(
            "stopped answering while running it on its last allowed delivery ({delivered} of {max_deliver}): the worker was killed or its machine is gone"
        ),
        None => format!(
            "no worker holds it and JetStream will not deliver it again (its {max_deliver} deliveries are used up, or its task left the queue)"
        ),
    };
    journal::ErrorLine {
        worker: seen.map_or_else(|| "?".into(), |s| s.worker.clone()),
        delivered,
        error,
        last: true,
    }
}

/// Records from the coordinator's side that the job gave up on a chunk, with `line` as its
/// last error: appended to its error log (unless its worker wrote it) and its `failed.json`
/// written, so `job status` says it and a rerun retries it under a new task id. Nothing is
/// written into a folder that was started over since (another job's now). A write that fails
/// is said, not hidden; the failure is reported either way.
fn record_given_up(
    dir: &Path,
    hash: &str,
    spec: &journal::ChunkSpec,
    line: journal::ErrorLine,
    max_deliver: i64,
) -> journal::Failed {
    let i = spec.index;
    let ours = journal::read_json::<journal::JobFile>(&dir.join(journal::JOB_FILE))
        .is_ok_and(|f| f.id == hash);
    let warn = |e: String| {
        vidflow_engine::progress::say(format!("warning: cannot record that chunk {i} failed: {e}"))
    };
    if ours
        && !journal::error_lines(dir, i)
            .iter()
            .any(|l| l.last && l.worker == line.worker && l.delivered == line.delivered)
        && let Err(e) = journal::append_error(dir, i, &line)
    {
        warn(e);
    }
    let mut errors = journal::chunk_errors(dir, i, max_deliver.max(1) as usize);
    if !errors.contains(&line.to_string()) {
        errors.push(line.to_string());
    }
    let failed = journal::Failed {
        index: i,
        range: spec.range,
        errors,
    };
    if ours && let Err(e) = journal::try_write_failed(dir, &failed) {
        warn(e);
    }
    failed
}

/// Shows a worker's event on the job's display.
pub(super) fn show(p: &JobProgress, job: &Job, e: &Event) {
    let spec = |i: usize| job.chunks().get(i);
    match e {
        Event::Start {
            worker,
            chunk,
            delivered,
        } => {
            if let Some(s) = spec(*chunk) {
                p.chunk_start_on(
                    *chunk,
                    s.range,
                    s.frames as u64,
                    *delivered as u32,
                    Some(worker),
                );
            }
        }
        Event::Progress { chunk, frames, .. } => p.chunk_tick(*chunk, *frames),
        Event::Done { chunk, seconds, .. } => {
            if let Some(s) = spec(*chunk) {
                p.chunk_done(*chunk, s.range, s.frames as u64, *seconds);
            }
        }
        Event::Failed {
            worker,
            chunk,
            error,
            last,
            ..
        } => {
            if let Some(s) = spec(*chunk) {
                p.chunk_failed(*chunk, s.range, &format!("on `{worker}`: {error}"), !last);
            }
        }
        Event::Released { chunk, .. } => p.chunk_abandoned(*chunk),
    }
}

/// The live workers, from their heartbeats.
pub fn workers(nats: &NatsArgs) -> anyhow::Result<Vec<Beat>> {
    super::runtime()?.block_on(async {
        let client = nats.connect("vidflow status").await?;
        let js = jetstream::new(client);
        let kv = match js.get_key_value(super::WORKERS).await {
            Ok(kv) => kv,
            Err(_) => return Ok(vec![]),
        };
        let mut keys = kv
            .keys()
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot list the workers"))?;
        let mut beats = vec![];
        while let Some(Ok(k)) = keys.next().await {
            if let Ok(Some(v)) = kv.get(&k).await
                && let Ok(b) = serde_json::from_slice::<Beat>(&v)
            {
                beats.push(b);
            }
        }
        beats.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(beats)
    })
}
