//! `vidflow run GRAPH --job DIR --workers N` (no `--nats`): the farm's scheduling on one
//! machine, with no server. This process is the coordinator and the queue: it starts N worker
//! processes (`vidflow local-worker`, hidden), hands each one chunk at a time as a [`Task`]
//! on its stdin, and reads its [`Event`]s from its stdout. The rules are the farm's:
//! - a worker runs one chunk at a time and keeps its loaded models across chunks (they live in
//!   its `Shared`);
//! - a chunk whose worker dies (a crash, `kill -9`) goes to another worker, as JetStream
//!   redelivers a chunk whose heartbeats stopped; a worker that died is replaced;
//! - a chunk that fails is given back and tried again, up to `--max-deliver` deliveries; its
//!   last failure records it as failed with every delivery's error;
//! - the journal is the truth: a chunk is done when its record is there and matches its
//!   outputs, exactly as for a local job or the NATS coordinator.
//!
//! First Ctrl-C: no new chunks, the ones in hand finish; second: exit at once (the workers see
//! their stdin close and give their chunks up unrecorded). Workers run in their own process
//! group, so the terminal's Ctrl-C reaches only this process, which decides.

use super::{Event, Task};
use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vidflow_engine::Registry;
use vidflow_engine::exec::{NodeReport, ProgressSink, StopFlag};
use vidflow_engine::job::{ChunkOutcome, Job, JobReport, journal, progress::JobProgress};
use vidflow_engine::node::Shared;

/// One chunk for a local worker: the task as the farm publishes it, and which delivery this is.
#[derive(serde::Serialize, serde::Deserialize)]
struct Assign {
    task: Task,
    delivered: i64,
}

/// What `run --job --workers N` was asked.
pub struct Local<'a> {
    pub job: &'a Job,
    pub workers: usize,
    pub max_deliver: i64,
    /// The graph as the workers load it.
    pub file: String,
    pub text: String,
    pub set: Vec<String>,
    /// `--device`, passed on to the workers.
    pub device: Option<String>,
    pub progress: &'a JobProgress,
    pub stop: StopFlag,
}

/// A worker process and the chunk it holds (with its delivery count).
struct Worker {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    busy: Option<(usize, i64)>,
    alive: bool,
}

/// What the reader threads report: a worker's event, or that its stdout closed (it exited).
enum Heard {
    Event(usize, Event),
    Gone(usize),
}

pub fn run(c: Local<'_>) -> anyhow::Result<JobReport> {
    let started = Instant::now();
    let job = c.job;
    let (mut report, pending) = super::begin(job, c.progress, c.workers);
    let dir = std::path::absolute(&job.dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot resolve the job folder"))?;
    let cwd = std::env::current_dir()
        .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot read the working folder"))?;
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("{}: {e}", "cannot find the vidflow program"))?;
    let task = |chunk: usize| Task {
        job: job.file.id.clone(),
        dir: dir.clone(),
        cwd: cwd.clone(),
        file: c.file.clone(),
        text: c.text.clone(),
        set: c.set.clone(),
        chunk,
        max_deliver: c.max_deliver,
        ack_wait_ms: 0,
    };
    for chunk in &pending {
        // A chunk recorded as failed by an earlier run is tried again.
        let _ = std::fs::remove_file(journal::failed_path(&dir, chunk.index));
    }
    let mut book = Book {
        job,
        dir: &dir,
        max_deliver: c.max_deliver,
        queue: pending.iter().map(|c| (c.index, 0)).collect(),
        open: pending.iter().map(|c| c.index).collect(),
        report: &mut report,
    };
    let (tx, rx) = mpsc::channel::<Heard>();
    let mut workers: Vec<Worker> = vec![];
    let wanted = c.workers.min(book.open.len()).max(1);
    // A worker that dies is replaced, but not without end (a build that cannot start).
    let mut spawns_left = wanted + wanted * c.max_deliver.max(1) as usize;
    let spawn = |workers: &mut Vec<Worker>, spawns_left: &mut usize| -> anyhow::Result<()> {
        *spawns_left -= 1;
        let k = workers.len();
        let name = format!("local-{}", k + 1);
        let w = start(&exe, &name, c.device.as_deref(), k, &tx)?;
        workers.push(w);
        Ok(())
    };
    if !book.open.is_empty() {
        for _ in 0..wanted {
            spawn(&mut workers, &mut spawns_left)?;
        }
    }

    while !book.open.is_empty() {
        if c.stop.is_set() {
            book.report.interrupted = true;
            if workers.iter().all(|w| w.busy.is_none()) {
                break;
            }
        } else {
            for w in workers.iter_mut().filter(|w| w.alive && w.busy.is_none()) {
                let Some((chunk, delivered)) = book.queue.pop_front() else {
                    break;
                };
                let line = serde_json::to_string(&Assign {
                    task: task(chunk),
                    delivered: delivered + 1,
                })?;
                let sent = w
                    .stdin
                    .as_mut()
                    .is_some_and(|s| writeln!(s, "{line}").and_then(|_| s.flush()).is_ok());
                if sent {
                    w.busy = Some((chunk, delivered + 1));
                } else {
                    // It is exiting; its `Gone` will come. The chunk was never taken.
                    book.queue.push_front((chunk, delivered));
                }
            }
            if workers.iter().all(|w| !w.alive) {
                // Every worker died and none may be started: what is left fails.
                let why = "every local worker exited, and no more may be started";
                for (chunk, delivered) in std::mem::take(&mut book.queue) {
                    record(&task(chunk), "-", delivered, why, true);
                    book.settle(chunk, delivered, true, false);
                }
                if book.open.is_empty() {
                    break;
                }
            }
        }
        let heard = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(h) => h,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match heard {
            Heard::Event(k, e) => {
                super::coordinator::show(c.progress, job, &e);
                match e {
                    Event::Done { chunk, .. } => {
                        let delivered = workers[k].busy.take().map_or(1, |b| b.1);
                        if super::coordinator::recorded(job, &dir, chunk) {
                            book.open.remove(&chunk);
                            book.report.ran.push(chunk);
                        } else {
                            // Its record does not hold: a failed delivery like any other.
                            let why = format!(
                                "worker `{}` said it was done, but its record does not match its outputs",
                                workers[k].name
                            );
                            let last = delivered >= c.max_deliver;
                            record(&task(chunk), &workers[k].name, delivered, &why, last);
                            c.progress
                                .chunk_failed(chunk, job.chunks()[chunk].range, &why, !last);
                            book.settle(chunk, delivered, last, false);
                        }
                    }
                    Event::Failed {
                        chunk,
                        delivered,
                        last,
                        ..
                    } => {
                        workers[k].busy = None;
                        book.settle(chunk, delivered, last, false);
                    }
                    Event::Released { chunk, .. } => {
                        if let Some((held, delivered)) = workers[k].busy.take() {
                            debug_assert_eq!(held, chunk);
                            book.queue.push_front((chunk, delivered - 1));
                        }
                    }
                    Event::Start { .. } | Event::Progress { .. } => {}
                }
            }
            Heard::Gone(k) => {
                let w = &mut workers[k];
                w.alive = false;
                w.stdin = None;
                let status = w.child.wait().ok();
                if let Some((chunk, delivered)) = w.busy.take() {
                    let why = format!(
                        "worker `{}` exited while running it ({})",
                        w.name,
                        status.map_or("unknown status".into(), |s| s.to_string())
                    );
                    let last = delivered >= c.max_deliver;
                    record(&task(chunk), &w.name, delivered, &why, last);
                    c.progress
                        .chunk_failed(chunk, job.chunks()[chunk].range, &why, !last);
                    // Its next delivery goes first: it has waited longest.
                    book.settle(chunk, delivered, last, true);
                }
                if !book.open.is_empty() && !c.stop.is_set() && spawns_left > 0 {
                    spawn(&mut workers, &mut spawns_left)?;
                }
            }
        }
    }
    // Closing their stdin tells idle workers to exit; one still busy (a second Ctrl-C never
    // reaches here) gives its chunk up.
    for w in &mut workers {
        w.stdin = None;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for w in &mut workers {
        while w.alive && Instant::now() < deadline {
            match w.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = w.child.kill();
        let _ = w.child.wait();
    }
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

/// Starts one worker process with threads that read its events and pass on its log lines.
fn start(
    exe: &std::path::Path,
    name: &str,
    device: Option<&str>,
    k: usize,
    tx: &mpsc::Sender<Heard>,
) -> anyhow::Result<Worker> {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(exe);
    cmd.arg("local-worker").arg("--name").arg(name);
    if let Some(d) = device {
        cmd.arg("--device").arg(d);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The terminal's Ctrl-C is for the coordinator, which decides what workers do.
        .process_group(0)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start worker `{name}` ({}): {e}", exe.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let events = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(e) = serde_json::from_str::<Event>(&line)
                && events.send(Heard::Event(k, e)).is_err()
            {
                return;
            }
        }
        let _ = events.send(Heard::Gone(k));
    });
    vidflow_engine::progress::say(format!("worker {name} started (pid {})", child.id()));
    let who = name.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            vidflow_engine::progress::say(format!("worker {who}: {line}"));
        }
    });
    Ok(Worker {
        name: name.to_string(),
        stdin: child.stdin.take(),
        child,
        busy: None,
        alive: true,
    })
}

/// The chunks still to run and how the run went so far.
struct Book<'a> {
    job: &'a Job,
    dir: &'a std::path::Path,
    max_deliver: i64,
    /// Chunks waiting for a worker, with their deliveries so far.
    queue: VecDeque<(usize, i64)>,
    /// Chunks neither recorded nor failed.
    open: BTreeSet<usize>,
    report: &'a mut JobReport,
}

impl Book<'_> {
    /// After a failed delivery: the chunk has failed on its last one, or waits for the next
    /// (at the queue's front when `first`).
    fn settle(&mut self, chunk: usize, delivered: i64, last: bool, first: bool) {
        if last {
            self.open.remove(&chunk);
            let failed = failed_record(self.job, self.dir, chunk, self.max_deliver);
            self.report.failed.push(failed);
        } else if first {
            self.queue.push_front((chunk, delivered));
        } else {
            self.queue.push_back((chunk, delivered));
        }
    }
}

/// Records a failed delivery seen by this coordinator (the worker could not), and says what
/// could not be written.
fn record(task: &Task, worker: &str, delivered: i64, why: &str, last: bool) {
    for p in super::record_failed(task, worker, delivered, why, last) {
        vidflow_engine::progress::say(format!("warning: chunk {}: {p}", task.chunk));
    }
}

/// The chunk's `failed.json` as its last delivery recorded it (or, if it could not be
/// written, what it would have said).
fn failed_record(
    job: &Job,
    dir: &std::path::Path,
    chunk: usize,
    max_deliver: i64,
) -> journal::Failed {
    journal::read_json::<journal::Failed>(&journal::failed_path(dir, chunk)).unwrap_or_else(|_| {
        journal::Failed {
            index: chunk,
            range: job.chunks()[chunk].range,
            errors: journal::chunk_errors(dir, chunk, max_deliver.max(1) as usize),
        }
    })
}

/// `vidflow local-worker`: runs the chunks its coordinator writes on stdin, one at a time,
/// and writes its events on stdout. Stdin closing while a chunk runs means the coordinator is
/// gone: the chunk is given up unrecorded and the worker exits.
pub fn worker(name: String, registry: Registry, shared: Arc<Shared>) -> anyhow::Result<()> {
    let running: Arc<Mutex<Option<StopFlag>>> = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel::<Assign>();
    {
        let running = running.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Assign>(&line) {
                    Ok(a) => {
                        if tx.send(a).is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("ignoring a line that is not a task: {e}"),
                }
            }
            if let Some(stop) = running.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                stop.stop();
            }
        });
    }
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let say = {
        let out = out.clone();
        move |e: &Event| {
            let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(o, "{}", serde_json::to_string(e).unwrap_or_default());
            let _ = o.flush();
        }
    };
    // A local worker serves one job.
    let mut attached: Option<Arc<Job>> = None;
    for Assign { task, delivered } in rx {
        let stop = StopFlag::new();
        *running.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop.clone());
        say(&Event::Start {
            worker: name.clone(),
            chunk: task.chunk,
            delivered,
        });
        let started = Instant::now();
        let job = match &attached {
            Some(j) if j.file.id == task.job => Ok(j.clone()),
            _ => attach(&name, &registry, &task).map(|j| {
                let j = Arc::new(j);
                attached = Some(j.clone());
                j
            }),
        };
        let outcome = job.and_then(|job| {
            let chunk = job
                .chunks()
                .get(task.chunk)
                .cloned()
                .ok_or_else(|| format!("the job has no chunk {}", task.chunk))?;
            let ticks = Box::new(Ticks {
                source: job.source(),
                name: name.clone(),
                chunk: task.chunk,
                last: Instant::now(),
                say: Box::new(say.clone()),
            });
            Ok((
                job.clone(),
                job.run_chunk(&chunk, ticks, &shared, stop.clone()),
            ))
        });
        *running.lock().unwrap_or_else(|e| e.into_inner()) = None;
        match outcome {
            Ok((_, ChunkOutcome::Recorded(r))) => say(&Event::Done {
                worker: name.clone(),
                chunk: task.chunk,
                frames: r.frames as u64,
                seconds: started.elapsed().as_secs_f64(),
            }),
            Ok((_, ChunkOutcome::Stopped)) => {
                say(&Event::Released {
                    worker: name.clone(),
                    chunk: task.chunk,
                });
                break;
            }
            Ok((_, ChunkOutcome::Failed { error, .. })) | Err(error) => {
                let last = task.max_deliver > 0 && delivered >= task.max_deliver;
                let problems = super::record_failed(&task, &name, delivered, &error, last);
                let error = match problems.is_empty() {
                    true => error,
                    false => format!("{error} (and: {})", problems.join("; ")),
                };
                say(&Event::Failed {
                    worker: name.clone(),
                    chunk: task.chunk,
                    error,
                    delivered,
                    last,
                });
            }
        }
    }
    Ok(())
}

/// Loads the task's graph as the coordinator did and attaches to its job. Relative paths in
/// the graph are the coordinator's, from its working folder: the one this process started in.
fn attach(name: &str, registry: &Registry, task: &Task) -> Result<Job, String> {
    let job =
        super::load_task_job(name, registry, task).map_err(|e| format!("worker `{name}`: {e}"))?;
    if job.file.id != task.job {
        return Err(format!(
            "the task belongs to an earlier run of job folder `{}`, which was started over since",
            task.dir.display()
        ));
    }
    Ok(job)
}

/// Sends the chunk's progress (frames out of the source) a few times a second.
struct Ticks {
    source: usize,
    name: String,
    chunk: usize,
    last: Instant,
    say: Box<dyn Fn(&Event) + Send>,
}

impl ProgressSink for Ticks {
    fn tick(&mut self, nodes: &[NodeReport], _elapsed: Duration) {
        if self.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last = Instant::now();
        if let Some(n) = nodes.get(self.source) {
            (self.say)(&Event::Progress {
                worker: self.name.clone(),
                chunk: self.chunk,
                frames: n.items_out,
            });
        }
    }
}
