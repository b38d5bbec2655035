//! Jobs spread over workers through a real NATS JetStream server (started here on a free
//! loopback port; `scripts/install-deps.sh` installs it): three workers and a coordinator with
//! one worker killed by SIGKILL while it holds a chunk, a coordinator killed and restarted
//! mid-job, a chunk that fails on every delivery, and connection errors.

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
    fn finish(mut self) -> (i32, Vec<String>) {
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(180) {
                let _ = self.child.kill();
                panic!("did not end:\n{}", self.seen.join("\n"));
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
