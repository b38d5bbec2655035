//! `vidflow run GRAPH --job DIR --nats URL`: the coordinator. It opens the job (check, cut,
//! journal) as a local job does, publishes one task per chunk the journal does not have
//! (`Nats-Msg-Id` de-duplicated, so a restarted coordinator publishes nothing twice), shows
//! the workers' events, watches the journal until every chunk is recorded or failed, and
//! assembles. Ctrl-C leaves the tasks queued: workers go on, and a rerun picks the job up.
//! Also `vidflow job status DIR --nats URL`'s list of live workers.

use super::{Beat, Event, NatsArgs, Queue, TASKS, Task, events_subject};
use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::StreamExt as _;
use std::collections::BTreeSet;
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

/// Publishes the job's remaining chunks and waits for them.
pub fn run(c: Coordinate<'_>) -> anyhow::Result<JobReport> {
    let started = std::time::Instant::now();
    let job = c.job;
    let (reused, pending) = job.scan(c.progress);
    let total: u64 = job.chunks().iter().map(|c| c.frames as u64).sum();
    let done_frames: u64 = reused.iter().map(|&i| job.chunks()[i].frames as u64).sum();
    c.progress.start(
        &job.dir.display().to_string(),
        (reused.len(), job.chunks().len()),
        (done_frames, total),
        0,
    );
    let mut report = JobReport {
        chunks: job.chunks().len(),
        reused,
        ..Default::default()
    };
    let dir = std::path::absolute(&job.dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot resolve the job folder"))?;
    let cwd = std::env::current_dir()
        .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot read the working folder"))?;
    // The job's own id names its tasks and events: the same graph in another folder, or
    // this folder started over, is another job.
    let hash = job.file.id.clone();

    super::runtime()?.block_on(async {
        let client = c.nats.connect("vidflow coordinator").await?;
        let js = jetstream::new(client.clone());
        super::queue(&js, c.queue).await?;
        let mut events = client
            .subscribe(events_subject(&hash))
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot subscribe to the job's events"))?;

        let (mut new, mut duplicates, mut last_seq) = (0u64, 0u64, 0u64);
        for chunk in &pending {
            // A chunk recorded as failed by an earlier run is tried again: the failures it had
            // make its id new, while a task still queued or running keeps its id.
            let _ = std::fs::remove_file(journal::failed_path(&dir, chunk.index));
            let id = format!(
                "{hash}-{}-{}",
                chunk.index,
                journal::attempts(&dir, chunk.index)
            );
            let task = Task {
                job: hash.clone(),
                dir: dir.clone(),
                cwd: cwd.clone(),
                file: c.file.clone(),
                text: c.text.clone(),
                set: c.set.clone(),
                chunk: chunk.index,
                max_deliver: c.queue.max_deliver,
                ack_wait_ms: c.queue.ack_wait.as_millis() as u64,
            };
            let ack = js
                .send_publish(
                    format!("{TASKS}.{hash}"),
                    PublishMessage::build()
                        .payload(serde_json::to_vec(&task)?.into())
                        .message_id(id),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot publish a chunk task"))?
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", "the server did not take a chunk task"))?;
            if ack.duplicate {
                duplicates += 1;
            } else {
                new += 1;
            }
            last_seq = last_seq.max(ack.sequence);
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

        let mut open: BTreeSet<usize> = pending.iter().map(|c| c.index).collect();
        let mut check = tokio::time::interval(Duration::from_millis(100));
        while !open.is_empty() {
            if c.stop.is_set() {
                report.interrupted = true;
                break;
            }
            tokio::select! {
                Some(m) = events.next() => {
                    let Ok(e) = serde_json::from_slice::<Event>(&m.payload) else { continue };
                    show(c.progress, job, &e);
                }
                _ = check.tick() => {
                    // The journal is the truth: a chunk is done when its record is there and
                    // its outputs match it, failed when its last delivery recorded it so.
                    for &i in open.clone().iter() {
                        let spec = &job.chunks()[i];
                        let record = journal::read_json::<journal::Record>(&journal::record_path(&dir, i));
                        if let Ok(r) = record
                            && journal::verify(&dir, spec, &r).is_ok()
                        {
                            open.remove(&i);
                            report.ran.push(i);
                        } else if let Ok(f) = journal::read_json::<journal::Failed>(&journal::failed_path(&dir, i)) {
                            open.remove(&i);
                            report.failed.push(f);
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
