//! Jobs spread over workers through a real NATS JetStream server (started here on a free
//! loopback port; `scripts/install-deps.sh` installs it): three workers and a coordinator with
//! one worker killed by SIGKILL while it holds a chunk, a coordinator killed and restarted
//! mid-job, a chunk that fails on every delivery, and connection errors; then what must not
//! hang (a job folder a worker cannot see, a worker killed on a chunk's last delivery), task
//! ids across restarts, `job status` reasons, a job folder started over under queued tasks,
//! credential flags, and SIGTERM.

use crate::common::{TmpDir, installed_tool};
use crate::jobs::{self, SLOW_COPY, clip, exec_graph, frames};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn tmp(name: &str) -> TmpDir {
    crate::common::tmp("workers", name)
}

/// A nats-server with JetStream on a free loopback port, stopped on drop.
struct Nats {
    child: Child,
    url: String,
    _store: TmpDir,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("VIDFLOW_NATS_SERVER") {
        return p.into();
    }
    installed_tool("nats-2.15.1/bin/nats-server")
}

fn nats(name: &str, token: Option<&str>) -> Nats {
    let store = tmp(&format!("nats-{name}"));
    let mut cmd = Command::new(nats_server_bin());
    cmd.args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
        .arg(&*store)
        .arg("--ports_file_dir")
        .arg(&*store)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(t) = token {
        cmd.args(["--auth", t]);
    }
    let child = cmd.spawn().expect("nats-server starts");
    let ports = store.path(&format!("nats-server_{}.ports", child.id()));
    let started = Instant::now();
    let url = loop {
        if let Ok(text) = std::fs::read_to_string(&ports)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(u) = v["nats"][0].as_str()
        {
            break u.to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Nats {
        child,
        url,
        _store: store,
    }
}

/// A clip of 4 s at 25 fps with a keyframe every 10 frames (ten chunks of 0.4 s), the copying
/// program and a graph running it at `ms` per frame.
fn setup(d: &TmpDir, ms: u32, filter: &str) {
    clip(&d.path("in.mp4"), "64x48", 4, 10, filter);
    d.write("copy.py", SLOW_COPY);
    d.write("g.yaml", &exec_graph(64, 48, ms));
}

fn records(job: &Path) -> usize {
    jobs::records(job).len()
}

/// A running `vidflow` whose stderr lines arrive on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn start(dir: &Path, args: &[&str]) -> Proc {
        let mut child = Command::new(crate::common::BIN)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vidflow starts");
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Proc {
            child,
            lines,
            seen: vec![],
        }
    }
    /// Waits for a line that `pred` accepts; returns it.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("ended before {what}:\n{}", self.seen.join("\n"))
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no {what} within 2 minutes:\n{}",
                self.seen.join("\n")
            );
        }
    }
    /// Waits for the process to end; its exit code and every stderr line.
    fn finish(self) -> (i32, Vec<String>) {
        self.finish_within(Duration::from_secs(180))
    }
    /// As [`Proc::finish`], failing the test if it runs longer than `limit` (a hang).
    fn finish_within(mut self, limit: Duration) -> (i32, Vec<String>) {
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                while let Ok(l) = self.lines.try_recv() {
                    self.seen.push(l);
                }
                panic!("did not end within {limit:?}:\n{}", self.seen.join("\n"));
            }
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(l);
        }
        (status.code().unwrap_or(-1), std::mem::take(&mut self.seen))
    }
    fn term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

/// A test that fails leaves no process behind.
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn events(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

const TOKEN: &str = "tok-9f3b2c7a";

#[test]
fn three_workers_finish_a_job_when_one_is_killed_holding_a_chunk() {
    let d = tmp("kill-worker");
    setup(&d, 60, "");
    let server = nats("kill-worker", Some(TOKEN));
    let url = server.url.clone();
    let worker = |name: &str| {
        Proc::start(
            &d,
            &[
                "worker",
                "--nats",
                &url,
                "--nats-token",
                TOKEN,
                "--name",
                name,
            ],
        )
    };
    let mut w1 = worker("w1");
    w1.wait_for("w1 connected", |l| l.contains("connected"));
    let coord = Proc::start(
        &d,
        &[
            "run",
            "g.yaml",
            "--progress",
            "json",
            "--job",
            "job",
            "--chunk-seconds",
            "0.4",
            "--nats",
            &url,
            "--nats-token",
            TOKEN,
            "--ack-wait",
            "2",
        ],
    );
    // w1 takes a chunk; it is killed while it holds it.
    let line = w1.wait_for("a chunk on w1", |l| l.contains("started"));
    let held: usize = line
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    w1.child.kill().unwrap(); // SIGKILL
    w1.child.wait().unwrap();
    let (w2, w3) = (worker("w2"), worker("w3"));

    let (code, lines) = coord.finish();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    let ev = events(&lines);
    let starts: Vec<&serde_json::Value> = ev
        .iter()
        .filter(|e| e["event"] == "chunk_start" && e["chunk"] == held)
        .collect();
    assert!(
        starts
            .iter()
            .any(|e| e["worker"] != "w1" && e["attempt"].as_u64() >= Some(2)),
        "chunk {held} was not redelivered to another worker: {starts:?}"
    );
    assert_eq!(records(&d.path("job")), 10);
    for c in 0..10 {
        let done = ev
            .iter()
            .filter(|e| e["event"] == "chunk_done" && e["chunk"] == c)
            .count();
        assert_eq!(done, 1, "chunk {c} recorded {done} times");
    }
    // The same output as the job run on one machine, without NATS.
    let local = Command::new(crate::common::BIN)
        .args([
            "run",
            "g.yaml",
            "--progress",
            "none",
            "--set",
            "output=local.mp4",
            "--job",
            "local",
            "--chunk-seconds",
            "0.4",
        ])
        .current_dir(&*d)
        .output()
        .unwrap();
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    assert_eq!(frames(&d.path("out.mp4")), frames(&d.path("local.mp4")));

    // `job status` lists the live workers; SIGTERM stops them cleanly.
    let status = Command::new(crate::common::BIN)
        .args([
            "job",
            "status",
            "job",
            "--nats",
            &url,
            "--nats-token",
            TOKEN,
        ])
        .current_dir(&*d)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(
        s.contains("10 of 10 chunks done") && s.contains("w2:") && s.contains("w3:"),
        "{s}"
    );
    w2.term();
    w3.term();
    let (c2, l2) = w2.finish();
    let (c3, l3) = w3.finish();
    assert_eq!((c2, c3), (0, 0));
    let printed = [
        lines.join("\n"),
        l2.join("\n"),
        l3.join("\n"),
        s.to_string(),
    ]
    .join("\n");
    assert!(
        !printed.contains(TOKEN),
        "the token was printed:\n{printed}"
    );
}

#[test]
fn a_restarted_coordinator_publishes_nothing_twice() {
    let d = tmp("restart-coordinator");
    setup(&d, 60, "");
    let server = nats("restart", None);
    let url = server.url.clone();
    let worker = Proc::start(&d, &["worker", "--nats", &url, "--name", "solo"]);
    let args = [
        "run",
        "g.yaml",
        "--progress",
        "json",
        "--job",
        "job",
        "--chunk-seconds",
        "0.4",
        "--nats",
        &url,
        "--ack-wait",
        "5",
    ];
    let mut first = Proc::start(&d, &args);
    let published = first.wait_for("published", |l| l.contains("\"published\""));
    let p: serde_json::Value = serde_json::from_str(&published).unwrap();
    assert_eq!(
        (p["new"].as_u64(), p["duplicates"].as_u64()),
        (Some(10), Some(0))
    );
    let started = Instant::now();
    while records(&d.path("job")) < 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "no records");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let mut second = Proc::start(&d, &args);
    let published = second.wait_for("published", |l| l.contains("\"published\""));
    let p: serde_json::Value = serde_json::from_str(&published).unwrap();
    assert_eq!(
        p["new"].as_u64(),
        Some(0),
        "a task was published twice: {p}"
    );
    assert_eq!(p["last_seq"].as_u64(), Some(10), "{p}");
    let (code, lines) = second.finish();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert_eq!(records(&d.path("job")), 10);
    assert_eq!(frames(&d.path("out.mp4")).len(), 100);

    // The same graph as another job (another folder) is other tasks, not duplicates of
    // the first job's.
    let other = [
        "run",
        "g.yaml",
        "--progress",
        "json",
        "--job",
        "job-b",
        "--chunk-seconds",
        "0.4",
        "--nats",
        &url,
    ];
    let (code, lines) = Proc::start(&d, &other).finish();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    let p = events(&lines)
        .into_iter()
        .find(|e| e["event"] == "published")
        .unwrap();
    assert_eq!(p["new"], 10, "{p}");
    assert_eq!(records(&d.path("job-b")), 10);
    worker.term();
    assert_eq!(worker.finish().0, 0);
}

#[test]
fn a_chunk_failing_on_every_delivery_is_recorded_with_each_workers_error() {
    let d = tmp("max-deliver");
    // A white corner from 2.0 s to 2.4 s: chunk 5 fails while the marker exists.
    setup(
        &d,
        0,
        ",drawbox=x=0:y=0:w=16:h=16:color=white:t=fill:enable='between(t,2,2.39)'",
    );
    d.write("fail-marker", "");
    let server = nats("max-deliver", None);
    let url = server.url.clone();
    let (a, b) = (
        Proc::start(&d, &["worker", "--nats", &url, "--name", "a"]),
        Proc::start(&d, &["worker", "--nats", &url, "--name", "b"]),
    );
    let args = [
        "run",
        "g.yaml",
        "--progress",
        "json",
        "--job",
        "job",
        "--chunk-seconds",
        "0.4",
        "--nats",
        &url,
        "--max-deliver",
        "2",
    ];
    let (code, lines) = Proc::start(&d, &args).finish();
    assert_eq!(code, 2, "{}", lines.join("\n"));
    let all = lines.join("\n");
    assert!(
        all.contains(r#"{"event":"error","message":"chunk 5 (0:02.0–0:02.4) failed"#),
        "{all}"
    );
    let failed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path("job/chunks/00005.failed.json")).unwrap(),
    )
    .unwrap();
    let errors = failed["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{failed}");
    assert!(
        errors
            .iter()
            .all(|e| e.as_str().unwrap().contains("failing on purpose")),
        "{failed}"
    );
    assert_eq!(records(&d.path("job")), 9);

    std::fs::remove_file(d.path("fail-marker")).unwrap();
    let (code, lines) = Proc::start(&d, &args).finish();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    let p = events(&lines)
        .into_iter()
        .find(|e| e["event"] == "published")
        .unwrap();
    assert_eq!(p["chunks"], serde_json::json!([5]), "{p}");
    assert_eq!(p["new"], 1, "{p}");
    assert_eq!(frames(&d.path("out.mp4")).len(), 100);
    a.term();
    b.term();
    assert_eq!((a.finish().0, b.finish().0), (0, 0));
}

#[test]
fn connection_problems_are_clear_errors() {
    let d = tmp("connect");
    // Nothing listens there.
    let out = Command::new(crate::common::BIN)
        .args(["worker", "--nats", "nats://127.0.0.1:9", "--name", "x"])
        .current_dir(&*d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("cannot connect to the NATS server at `nats://127.0.0.1:9`"),
        "{e}"
    );
    // The wrong token: refused, and the token is not printed.
    let server = nats("connect", Some(TOKEN));
    let out = Command::new(crate::common::BIN)
        .args([
            "worker",
            "--nats",
            &server.url,
            "--nats-token",
            "wrong-token-123",
        ])
        .current_dir(&*d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.to_lowercase().contains("authorization"), "{e}");
    assert!(!e.contains("wrong-token-123"), "{e}");
    // Not a URL.
    let out = Command::new(crate::common::BIN)
        .args(["worker", "--nats", "::"])
        .current_dir(&*d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// Every file of the job's `chunks/` folder whose name ends with `suffix`.
fn chunk_files(job: &Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(job.join("chunks"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits until `done` holds (at most a minute).
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no {what} within a minute"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn published(p: &mut Proc) -> serde_json::Value {
    let line = p.wait_for("published", |l| l.contains("\"published\""));
    serde_json::from_str(&line).unwrap()
}

#[test]
fn a_job_folder_a_worker_cannot_see_fails_its_chunks_naming_the_path_and_the_worker() {
    let d = tmp("invisible");
    setup(&d, 0, "");
    std::fs::create_dir(d.path("elsewhere")).unwrap();
    let server = nats("invisible", None);
    let url = server.url.clone();
    // `/proc/self/cwd/job` is `job` in the coordinator's folder, but for the worker (started
    // in `elsewhere`) a folder that does not exist: the same path, not the same storage.
    let mut far = Proc::start(
        &d.path("elsewhere"),
        &["worker", "--nats", &url, "--name", "far"],
    );
    far.wait_for("far connected", |l| l.contains("connected"));
    let coord = Proc::start(
        &d,
        &[
            "run",
            "g.yaml",
            "--progress",
            "json",
            "--job",
            "/proc/self/cwd/job",
            "--chunk-seconds",
            "0.4",
            "--nats",
            &url,
            "--max-deliver",
            "2",
        ],
    );
    // The worker could write nothing into the job folder: the coordinator still ends.
    let (code, lines) = coord.finish_within(Duration::from_secs(60));
    assert_eq!(code, 2, "{}", lines.join("\n"));
    let all = lines.join("\n");
    assert!(
        all.contains("chunk 0 (0:00.0–0:00.4) failed: worker `far` (delivery 2): the job folder `/proc/self/cwd/job` is not visible from worker `far`"),
        "{all}"
    );
    // The coordinator recorded what the worker could not, for `job status` and a rerun.
    assert_eq!(chunk_files(&d.path("job"), ".failed.json").len(), 10);
    let status = Command::new(crate::common::BIN)
        .args(["job", "status", "job"])
        .current_dir(&*d)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(
        s.contains("10 failed") && s.contains("is not visible from worker `far`"),
        "{s}"
    );
    far.term();
    assert_eq!(far.finish().0, 0);
}

#[test]
fn a_chunk_whose_worker_is_killed_on_its_last_delivery_is_recorded_as_failed() {
    let d = tmp("last-delivery");
    setup(&d, 40, "");
    let server = nats("last-delivery", None);
    let url = server.url.clone();
    let mut w1 = Proc::start(&d, &["worker", "--nats", &url, "--name", "w1"]);
    w1.wait_for("w1 connected", |l| l.contains("connected"));
    let mut coord = Proc::start(
        &d,
        &[
            "run",
            "g.yaml",
            "--progress",
            "json",
            "--job",
            "job",
            "--chunk-seconds",
            "0.4",
            "--nats",
            &url,
            "--max-deliver",
            "1",
            "--ack-wait",
            "1",
        ],
    );
    // The coordinator has heard that w1 holds the chunk (its `chunk_start`).
    let line = coord.wait_for("a chunk on w1", |l| {
        l.contains("\"chunk_start\"") && l.contains("\"worker\":\"w1\"")
    });
    let held = serde_json::from_str::<serde_json::Value>(&line).unwrap()["chunk"]
        .as_u64()
        .unwrap();
    // Killed on the chunk's only allowed delivery: JetStream will not deliver it again, and
    // nobody is left to say so but the server's advisory.
    w1.child.kill().unwrap();
    w1.child.wait().unwrap();
    let w2 = Proc::start(&d, &["worker", "--nats", &url, "--name", "w2"]);
    let (code, lines) = coord.finish_within(Duration::from_secs(90));
    assert_eq!(code, 2, "{}", lines.join("\n"));
    let all = lines.join("\n");
    assert!(
        all.contains(&format!("chunk {held} (")) && all.contains("worker `w1` (delivery 1): stopped answering while running it on its last allowed delivery"),
        "{all}"
    );
    assert_eq!(records(&d.path("job")), 9);
    assert_eq!(
        chunk_files(&d.path("job"), ".failed.json"),
        vec![format!("{held:05}.failed.json")]
    );
    w2.term();
    assert_eq!(w2.finish().0, 0);
}

#[test]
fn a_chunk_that_failed_a_delivery_keeps_its_task_across_a_coordinator_restart() {
    let d = tmp("retried-restart");
    // Chunk 5 fails while the marker exists, and is given back for another try each time.
    setup(
        &d,
        0,
        ",drawbox=x=0:y=0:w=16:h=16:color=white:t=fill:enable='between(t,2,2.39)'",
    );
    d.write("fail-marker", "");
    let server = nats("retried-restart", None);
    let url = server.url.clone();
    let worker = Proc::start(&d, &["worker", "--nats", &url, "--name", "solo"]);
    let args = [
        "run",
        "g.yaml",
        "--progress",
        "json",
        "--job",
        "job",
        "--chunk-seconds",
        "0.4",
        "--nats",
        &url,
        "--max-deliver",
        "100",
    ];
    let mut first = Proc::start(&d, &args);
    assert_eq!(published(&mut first)["new"], 10);
    let errors = d.path("job/chunks/00005.errors.jsonl");
    wait_until("failed delivery of chunk 5", || {
        std::fs::read_to_string(&errors).is_ok_and(|t| t.lines().count() >= 1)
    });
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    // The failed delivery is logged, but the job has not given up on the chunk: its task is
    // still queued, under the same id.
    let mut second = Proc::start(&d, &args);
    let p = published(&mut second);
    assert_eq!(p["new"], 0, "chunk 5's task was published twice: {p}");
    assert!(p["chunks"].as_array().unwrap().contains(&5.into()), "{p}");
    std::fs::remove_file(d.path("fail-marker")).unwrap();
    let (code, lines) = second.finish();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert_eq!(records(&d.path("job")), 10);
    // One task, so one run that records it (a second task would run it again).
    std::thread::sleep(Duration::from_secs(2));
    worker.term();
    let (c, wl) = worker.finish();
    assert_eq!(c, 0);
    let runs = wl.iter().filter(|l| l.contains("chunk 5 done")).count();
    assert_eq!(runs, 1, "{}", wl.join("\n"));
}

#[test]
fn job_status_shows_why_a_pending_chunk_has_not_run() {
    let d = tmp("status-reasons");
    setup(&d, 0, "");
    let server = nats("status-reasons", None);
    let url = server.url.clone();
    let mut coord = Proc::start(
        &d,
        &[
            "run",
            "g.yaml",
            "--progress",
            "json",
            "--job",
            "job",
            "--chunk-seconds",
            "0.4",
            "--nats",
            &url,
            "--max-deliver",
            "1000",
        ],
    );
    assert_eq!(published(&mut coord)["new"], 10);
    // A file the graph needs is missing where the worker runs it.
    std::fs::rename(d.path("copy.py"), d.path("copy.py.away")).unwrap();
    let worker = Proc::start(&d, &["worker", "--nats", &url, "--name", "w"]);
    wait_until("a failed delivery", || {
        !chunk_files(&d.path("job"), ".errors.jsonl").is_empty()
    });
    let status = |json: bool| {
        let mut args = vec!["job", "status", "job"];
        if json {
            args.push("--json");
        }
        let out = Command::new(crate::common::BIN)
            .args(&args)
            .current_dir(&*d)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let s = status(false);
    assert!(
        s.lines().any(|l| l.starts_with("pending: chunk ")
            && l.contains("failed deliver")
            && l.contains("worker `w` (delivery ")
            && l.contains("copy.py")),
        "{s}"
    );
    assert!(s.contains("No such file or directory"), "{s}");
    let v: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
    let retried = v["retried"].as_array().unwrap();
    assert!(
        retried.iter().any(|r| r["last_error"]["worker"] == "w"
            && r["last_error"]["error"]
                .as_str()
                .unwrap()
                .contains("can't open file")),
        "{v}"
    );
    // Nothing is lost: with the file back, the job finishes.
    std::fs::rename(d.path("copy.py.away"), d.path("copy.py")).unwrap();
    let (code, lines) = coord.finish();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert_eq!(records(&d.path("job")), 10);
    worker.term();
    assert_eq!(worker.finish().0, 0);
}

#[test]
fn tasks_of_a_job_folder_started_over_with_another_graph_are_refused_and_dropped() {
    let d = tmp("started-over");
    setup(&d, 0, "");
    let server = nats("started-over", None);
    let url = server.url.clone();
    let args = [
        "run",
        "g.yaml",
        "--progress",
        "json",
        "--job",
        "job",
        "--chunk-seconds",
        "0.4",
        "--nats",
        &url,
        "--max-deliver",
        "1",
    ];
    // Published, then the coordinator is gone before any worker ran a chunk.
    let mut first = Proc::start(&d, &args);
    assert_eq!(published(&mut first)["new"], 10);
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    // The graph is edited and the folder started over: the queued tasks carry the old graph.
    d.write("g.yaml", &exec_graph(64, 48, 1));
    let mut again: Vec<&str> = args.to_vec();
    again.push("--restart");
    let mut second = Proc::start(&d, &again);
    assert_eq!(published(&mut second)["new"], 10);
    let worker = Proc::start(&d, &["worker", "--nats", &url, "--name", "w"]);
    let (code, lines) = second.finish();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert_eq!(records(&d.path("job")), 10);
    // The old tasks wrote nothing into the new job's folder.
    assert_eq!(
        chunk_files(&d.path("job"), ".failed.json"),
        Vec::<String>::new()
    );
    assert_eq!(
        chunk_files(&d.path("job"), ".errors.jsonl"),
        Vec::<String>::new()
    );
    worker.term();
    let (c, wl) = worker.finish();
    assert_eq!(c, 0);
    let all = wl.join("\n");
    let dropped = wl
        .iter()
        .filter(|l| l.contains("dropped: the task belongs to an earlier run of job folder"))
        .count();
    assert_eq!(dropped, 10, "{all}");
    assert!(
        all.contains("was started for another graph")
            && all.contains("node `copy` param `command` changed"),
        "{all}"
    );
}

#[test]
fn nats_user_and_password_come_as_a_pair() {
    let d = tmp("user-password");
    for (given, value, missing) in [
        ("--nats-user", "someone", "--nats-password"),
        ("--nats-password", "s3cret-pw", "--nats-user"),
    ] {
        let out = Command::new(crate::common::BIN)
            .args(["worker", "--nats", "nats://127.0.0.1:9", given, value])
            .env_remove("NATS_USER")
            .env_remove("NATS_PASSWORD")
            .current_dir(&*d)
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        // A usage mistake exits 1, before any connection is tried.
        assert_eq!(out.status.code(), Some(1), "{e}");
        assert!(
            e.contains("the following required arguments were not provided") && e.contains(missing),
            "{e}"
        );
        assert!(!e.contains("s3cret-pw"), "{e}");
    }
}

#[test]
fn sigterm_finishes_the_chunk_in_hand_and_a_second_sigterm_gives_it_back() {
    let d = tmp("sigterm");
    setup(&d, 100, "");
    let server = nats("sigterm", None);
    let url = server.url.clone();
    let worker = |name: &str| Proc::start(&d, &["worker", "--nats", &url, "--name", name]);
    let chunk_of = |line: &str| -> usize {
        line.split_whitespace()
            .nth(3)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    let mut w1 = worker("w1");
    w1.wait_for("w1 connected", |l| l.contains("connected"));
    let coord = Proc::start(
        &d,
        &[
            "run",
            "g.yaml",
            "--progress",
            "json",
            "--job",
            "job",
            "--chunk-seconds",
            "0.4",
            "--nats",
            &url,
            "--ack-wait",
            "5",
        ],
    );
    // One SIGTERM: the chunk in hand is finished and recorded, then the worker exits.
    let first = chunk_of(&w1.wait_for("a chunk on w1", |l| l.contains("started")));
    w1.term();
    let (c1, l1) = w1.finish();
    assert_eq!(c1, 0, "{}", l1.join("\n"));
    assert!(
        l1.iter()
            .any(|l| l.contains(&format!("chunk {first} done"))),
        "{}",
        l1.join("\n")
    );
    assert!(d.path(&format!("job/chunks/{first:05}.json")).exists());
    assert!(
        !l1.iter()
            .any(|l| l.contains("started") && chunk_of(l) != first),
        "w1 took another chunk after SIGTERM: {}",
        l1.join("\n")
    );

    // Two: the chunk is given back at once, unrecorded, for another worker.
    let mut w2 = worker("w2");
    let second = chunk_of(&w2.wait_for("a chunk on w2", |l| l.contains("started")));
    w2.term();
    w2.wait_for("the first signal", |l| {
        l.contains("finishing the chunks in hand")
    });
    w2.term();
    let (c2, l2) = w2.finish();
    assert_eq!(c2, 0, "{}", l2.join("\n"));
    assert!(
        l2.iter()
            .any(|l| l.contains(&format!("chunk {second} given back"))),
        "{}",
        l2.join("\n")
    );
    assert!(!l2.iter().any(|l| l.contains("done")), "{}", l2.join("\n"));

    let w3 = worker("w3");
    let (code, lines) = coord.finish();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    let ev = events(&lines);
    for c in 0..10 {
        let done: Vec<&serde_json::Value> = ev
            .iter()
            .filter(|e| e["event"] == "chunk_done" && e["chunk"] == c)
            .collect();
        assert_eq!(done.len(), 1, "chunk {c}: {done:?}");
    }
    // The worker that last started a chunk is the one that recorded it.
    let last_start = |c: usize| {
        ev.iter()
            .rfind(|e| e["event"] == "chunk_start" && e["chunk"] == c)
            .map(|e| e["worker"].clone())
    };
    assert_eq!(last_start(first), Some("w1".into()));
    assert_eq!(last_start(second), Some("w3".into()));
    assert!(
        ev.iter()
            .any(|e| e["event"] == "chunk_abandoned" && e["chunk"] == second),
        "{}",
        lines.join("\n")
    );
    assert_eq!(records(&d.path("job")), 10);
    w3.term();
    assert_eq!(w3.finish().0, 0);
}

#[test]
fn a_worker_with_two_slots_runs_each_task_against_its_own_folder() {
    // Two jobs of the same graph in two folders, with different inputs under the same
    // relative name (`in.mp4`), on one worker with two slots started elsewhere. Chunk 5 of
    // `a` fails (and is tried again) until `b`'s job has begun, so it runs after the worker
    // took up `b`'s folder.
    let d = tmp("two-folders");
    let (a, b) = (d.path("a"), d.path("b"));
    for (dir, filter) in [
        (
            &a,
            ",drawbox=x=0:y=0:w=16:h=16:color=white:t=fill:enable='between(t,2,2.39)'",
        ),
        (&b, ",negate"),
    ] {
        std::fs::create_dir(dir).unwrap();
        clip(&dir.join("in.mp4"), "64x48", 4, 10, filter);
        std::fs::write(dir.join("copy.py"), SLOW_COPY).unwrap();
        std::fs::write(dir.join("g.yaml"), exec_graph(64, 48, 10)).unwrap();
    }
    std::fs::write(a.join("fail-marker"), "").unwrap();
    let server = nats("two-folders", None);
    let url = server.url.clone();
    let worker = Proc::start(
        &d,
        &["worker", "--nats", &url, "--name", "w", "--slots", "2"],
    );
    let args = [
        "run",
        "g.yaml",
        "--progress",
        "json",
        "--job",
        "job",
        "--chunk-seconds",
        "0.4",
        "--nats",
        &url,
        "--max-deliver",
        "1000",
    ];
    let mut ca = Proc::start(&a, &args);
    published(&mut ca);
    wait_until("a failed delivery of a's chunk 5", || {
        a.join("job/chunks/00005.errors.jsonl").exists()
    });
    let mut cb = Proc::start(&b, &args);
    published(&mut cb);
    wait_until("a record of b's job", || records(&b.join("job")) > 0);
    std::fs::remove_file(a.join("fail-marker")).unwrap();
    for (dir, c) in [(&a, ca), (&b, cb)] {
        let (code, lines) = c.finish();
        assert_eq!(code, 0, "{}", lines.join("\n"));
        let local = Command::new(crate::common::BIN)
            .args([
                "run",
                "g.yaml",
                "--progress",
                "none",
                "--set",
                "output=local.mp4",
                "--job",
                "local",
                "--chunk-seconds",
                "0.4",
            ])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(local.status.success());
        assert!(
            frames(&dir.join("out.mp4")) == frames(&dir.join("local.mp4")),
            "the farm's output in `{}` differs from its own job run on one machine",
            dir.display()
        );
    }
    worker.term();
    assert_eq!(worker.finish().0, 0);
}
