//! Jobs spread over workers through a real NATS JetStream server (started here on a free
//! loopback port; `scripts/install-deps.sh` installs it): three workers and a coordinator with
//! one worker killed by SIGKILL while it holds a chunk, a coordinator killed and restarted
//! mid-job, a chunk that fails on every delivery, and connection errors; then what must not
//! hang (a job folder a worker cannot see, a worker killed on a chunk's last delivery), task
//! ids across restarts, `job status` reasons, a job folder started over under queued tasks,
//! credential flags, and SIGTERM.

use crate::common::{Proc, TmpDir, installed_tool};
use crate::jobs::{
    self, SLOW_COPY, WHITE_CORNER, assert_each_chunk_done_once, clip, exec_graph, frames, job_args,
    json_events, local_job_frames, setup, stdout, vidflow,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

impl Nats {
    /// `vidflow worker` on this server in `dir`, named `name`, with `extra` flags.
    fn worker(&self, dir: &Path, name: &str, extra: &[&str]) -> Proc {
        let args = [&["worker", "--nats", &self.url, "--name", name], extra].concat();
        Proc::start(dir, &args)
    }

    /// A coordinator: `vidflow run g.yaml` in `dir` as job `job` in chunks of 0.4 s, its tasks
    /// on this server, with `extra` flags.
    fn coordinator(&self, dir: &Path, job: &str, extra: &[&str]) -> Proc {
        Proc::start(
            dir,
            &job_args(job, &[&["--nats", &self.url], extra].concat()),
        )
    }
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

fn records(job: &Path) -> usize {
    jobs::records(job).len()
}

/// The chunk a worker's "… chunk N started …" line names.
fn chunk_of(line: &str) -> usize {
    line.split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

/// The coordinator's `published` event.
fn published(p: &mut Proc) -> serde_json::Value {
    let line = p.wait_for("published", |l| l.contains("\"published\""));
    serde_json::from_str(&line).unwrap()
}

/// The `published` event among a finished coordinator's lines.
fn published_in(lines: &[String]) -> serde_json::Value {
    json_events(&lines.join("\n"))
        .into_iter()
        .find(|e| e["event"] == "published")
        .unwrap()
}

const TOKEN: &str = "tok-9f3b2c7a";

#[test]
fn three_workers_finish_a_job_when_one_is_killed_holding_a_chunk() {
    let d = tmp("kill-worker");
    setup(&d, 60, "");
    let server = nats("kill-worker", Some(TOKEN));
    let worker = |name: &str| server.worker(&d, name, &["--nats-token", TOKEN]);
    let mut w1 = worker("w1");
    w1.wait_for("w1 connected", |l| l.contains("connected"));
    let coord = server.coordinator(&d, "job", &["--nats-token", TOKEN, "--ack-wait", "2"]);
    // w1 takes a chunk; it is killed while it holds it.
    let held = chunk_of(&w1.wait_for("a chunk on w1", |l| l.contains("started")));
    w1.kill(); // SIGKILL
    let (w2, w3) = (worker("w2"), worker("w3"));

    let lines = coord.exits(0);
    let ev = json_events(&lines.join("\n"));
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
    assert_each_chunk_done_once(&ev, 10);
    // The same output as the job run on one machine, without NATS.
    assert_eq!(frames(&d.path("out.mp4")), local_job_frames(&d, "local"));

    // `job status` lists the live workers; SIGTERM stops them cleanly.
    let s = stdout(&vidflow(
        &d,
        &[
            "job",
            "status",
            "job",
            "--nats",
            &server.url,
            "--nats-token",
            TOKEN,
        ],
    ));
    assert!(
        s.contains("10 of 10 chunks done") && s.contains("w2:") && s.contains("w3:"),
        "{s}"
    );
    w2.term();
    w3.term();
    let (c2, l2) = w2.finish();
    let (c3, l3) = w3.finish();
    assert_eq!((c2, c3), (0, 0));
    let printed = [lines.join("\n"), l2.join("\n"), l3.join("\n"), s].join("\n");
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
    let worker = server.worker(&d, "solo", &[]);
    let coordinator = || server.coordinator(&d, "job", &["--ack-wait", "5"]);
    let mut first = coordinator();
    let p = published(&mut first);
    assert_eq!(
        (p["new"].as_u64(), p["duplicates"].as_u64()),
        (Some(10), Some(0))
    );
    first.wait_until("records", || records(&d.path("job")) >= 2);
    first.kill();

    let mut second = coordinator();
    let p = published(&mut second);
    assert_eq!(
        p["new"].as_u64(),
        Some(0),
        "a task was published twice: {p}"
    );
    assert_eq!(p["last_seq"].as_u64(), Some(10), "{p}");
    second.exits(0);
    assert_eq!(records(&d.path("job")), 10);
    assert_eq!(frames(&d.path("out.mp4")).len(), 100);

    // The same graph as another job (another folder) is other tasks, not duplicates of
    // the first job's.
    let lines = server.coordinator(&d, "job-b", &[]).exits(0);
    let p = published_in(&lines);
    assert_eq!(p["new"], 10, "{p}");
    assert_eq!(records(&d.path("job-b")), 10);
    worker.stop();
}

#[test]
fn a_chunk_failing_on_every_delivery_is_recorded_with_each_workers_error() {
    let d = tmp("max-deliver");
    // A white corner from 2.0 s to 2.4 s: chunk 5 fails while the marker exists.
    setup(&d, 0, WHITE_CORNER);
    d.write("fail-marker", "");
    let server = nats("max-deliver", None);
    let (a, b) = (server.worker(&d, "a", &[]), server.worker(&d, "b", &[]));
    let coordinator = || server.coordinator(&d, "job", &["--max-deliver", "2"]);
    let lines = coordinator().exits(2);
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
    let p = published_in(&coordinator().exits(0));
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
    let out = vidflow(
        &d,
        &["worker", "--nats", "nats://127.0.0.1:9", "--name", "x"],
    );
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("cannot connect to the NATS server at `nats://127.0.0.1:9`"),
        "{e}"
    );
    // The wrong token: refused, and the token is not printed.
    let server = nats("connect", Some(TOKEN));
    let out = vidflow(
        &d,
        &[
            "worker",
            "--nats",
            &server.url,
            "--nats-token",
            "wrong-token-123",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.to_lowercase().contains("authorization"), "{e}");
    assert!(!e.contains("wrong-token-123"), "{e}");
    // Not a URL.
    let out = vidflow(&d, &["worker", "--nats", "::"]);
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

#[test]
fn a_job_folder_a_worker_cannot_see_fails_its_chunks_naming_the_path_and_the_worker() {
    let d = tmp("invisible");
    setup(&d, 0, "");
    std::fs::create_dir(d.path("elsewhere")).unwrap();
    let server = nats("invisible", None);
    // `/proc/self/cwd/job` is `job` in the coordinator's folder, but for the worker (started
    // in `elsewhere`) a folder that does not exist: the same path, not the same storage.
    let mut far = server.worker(&d.path("elsewhere"), "far", &[]);
    far.wait_for("far connected", |l| l.contains("connected"));
    let coord = server.coordinator(&d, "/proc/self/cwd/job", &["--max-deliver", "2"]);
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
    let s = stdout(&vidflow(&d, &["job", "status", "job"]));
    assert!(
        s.contains("10 failed") && s.contains("is not visible from worker `far`"),
        "{s}"
    );
    far.stop();
}

#[test]
fn a_chunk_whose_worker_is_killed_on_its_last_delivery_is_recorded_as_failed() {
    let d = tmp("last-delivery");
    setup(&d, 40, "");
    let server = nats("last-delivery", None);
    let mut w1 = server.worker(&d, "w1", &[]);
    w1.wait_for("w1 connected", |l| l.contains("connected"));
    let mut coord = server.coordinator(&d, "job", &["--max-deliver", "1", "--ack-wait", "1"]);
    // The coordinator has heard that w1 holds the chunk (its `chunk_start`).
    let line = coord.wait_for("a chunk on w1", |l| {
        l.contains("\"chunk_start\"") && l.contains("\"worker\":\"w1\"")
    });
    let held = serde_json::from_str::<serde_json::Value>(&line).unwrap()["chunk"]
        .as_u64()
        .unwrap();
    // Killed on the chunk's only allowed delivery: JetStream will not deliver it again, and
    // nobody is left to say so but the server's advisory.
    w1.kill();
    let w2 = server.worker(&d, "w2", &[]);
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
    w2.stop();
}

#[test]
fn a_chunk_that_failed_a_delivery_keeps_its_task_across_a_coordinator_restart() {
    let d = tmp("retried-restart");
    // Chunk 5 fails while the marker exists, and is given back for another try each time.
    setup(&d, 0, WHITE_CORNER);
    d.write("fail-marker", "");
    let server = nats("retried-restart", None);
    let worker = server.worker(&d, "solo", &[]);
    let coordinator = || server.coordinator(&d, "job", &["--max-deliver", "100"]);
    let mut first = coordinator();
    assert_eq!(published(&mut first)["new"], 10);
    let errors = d.path("job/chunks/00005.errors.jsonl");
    first.wait_until("failed delivery of chunk 5", || {
        std::fs::read_to_string(&errors).is_ok_and(|t| t.lines().count() >= 1)
    });
    first.kill();

    // The failed delivery is logged, but the job has not given up on the chunk: its task is
    // still queued, under the same id.
    let mut second = coordinator();
    let p = published(&mut second);
    assert_eq!(p["new"], 0, "chunk 5's task was published twice: {p}");
    assert!(p["chunks"].as_array().unwrap().contains(&5.into()), "{p}");
    std::fs::remove_file(d.path("fail-marker")).unwrap();
    second.exits(0);
    assert_eq!(records(&d.path("job")), 10);
    // One task, so one run that records it (a second task would run it again).
    std::thread::sleep(Duration::from_secs(2));
    let wl = worker.stop();
    let runs = wl.iter().filter(|l| l.contains("chunk 5 done")).count();
    assert_eq!(runs, 1, "{}", wl.join("\n"));
}

#[test]
fn job_status_shows_why_a_pending_chunk_has_not_run() {
    let d = tmp("status-reasons");
    setup(&d, 0, "");
    let server = nats("status-reasons", None);
    let mut coord = server.coordinator(&d, "job", &["--max-deliver", "1000"]);
    assert_eq!(published(&mut coord)["new"], 10);
    // A file the graph needs is missing where the worker runs it.
    std::fs::rename(d.path("copy.py"), d.path("copy.py.away")).unwrap();
    let worker = server.worker(&d, "w", &[]);
    coord.wait_until("a failed delivery", || {
        !chunk_files(&d.path("job"), ".errors.jsonl").is_empty()
    });
    let status = |json: bool| {
        let mut args = vec!["job", "status", "job"];
        if json {
            args.push("--json");
        }
        let out = vidflow(&d, &args);
        assert!(out.status.success());
        stdout(&out)
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
    coord.exits(0);
    assert_eq!(records(&d.path("job")), 10);
    worker.stop();
}

#[test]
fn tasks_of_a_job_folder_started_over_with_another_graph_are_refused_and_dropped() {
    let d = tmp("started-over");
    setup(&d, 0, "");
    let server = nats("started-over", None);
    // Published, then the coordinator is gone before any worker ran a chunk.
    let mut first = server.coordinator(&d, "job", &["--max-deliver", "1"]);
    assert_eq!(published(&mut first)["new"], 10);
    first.kill();
    // The graph is edited and the folder started over: the queued tasks carry the old graph.
    d.write("g.yaml", &exec_graph(64, 48, 1));
    let mut second = server.coordinator(&d, "job", &["--max-deliver", "1", "--restart"]);
    assert_eq!(published(&mut second)["new"], 10);
    let worker = server.worker(&d, "w", &[]);
    second.exits(0);
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
    let wl = worker.stop();
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
    let worker = |name: &str| server.worker(&d, name, &[]);
    let mut w1 = worker("w1");
    w1.wait_for("w1 connected", |l| l.contains("connected"));
    let coord = server.coordinator(&d, "job", &["--ack-wait", "5"]);
    // One SIGTERM: the chunk in hand is finished and recorded, then the worker exits.
    let first = chunk_of(&w1.wait_for("a chunk on w1", |l| l.contains("started")));
    let l1 = w1.stop();
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
    let l2 = w2.stop();
    assert!(
        l2.iter()
            .any(|l| l.contains(&format!("chunk {second} given back"))),
        "{}",
        l2.join("\n")
    );
    assert!(!l2.iter().any(|l| l.contains("done")), "{}", l2.join("\n"));

    let w3 = worker("w3");
    let lines = coord.exits(0);
    let ev = json_events(&lines.join("\n"));
    assert_each_chunk_done_once(&ev, 10);
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
    w3.stop();
}

#[test]
fn a_worker_with_two_slots_runs_each_task_against_its_own_folder() {
    // Two jobs of the same graph in two folders, with different inputs under the same
    // relative name (`in.mp4`), on one worker with two slots started elsewhere. Chunk 5 of
    // `a` fails (and is tried again) until `b`'s job has begun, so it runs after the worker
    // took up `b`'s folder.
    let d = tmp("two-folders");
    let (a, b) = (d.path("a"), d.path("b"));
    for (dir, filter) in [(&a, WHITE_CORNER), (&b, ",negate")] {
        std::fs::create_dir(dir).unwrap();
        clip(&dir.join("in.mp4"), "64x48", 4, 10, filter);
        std::fs::write(dir.join("copy.py"), SLOW_COPY).unwrap();
        std::fs::write(dir.join("g.yaml"), exec_graph(64, 48, 10)).unwrap();
    }
    std::fs::write(a.join("fail-marker"), "").unwrap();
    let server = nats("two-folders", None);
    let worker = server.worker(&d, "w", &["--slots", "2"]);
    let coordinator = |dir: &Path| server.coordinator(dir, "job", &["--max-deliver", "1000"]);
    let mut ca = coordinator(&a);
    published(&mut ca);
    ca.wait_until("a failed delivery of a's chunk 5", || {
        a.join("job/chunks/00005.errors.jsonl").exists()
    });
    let mut cb = coordinator(&b);
    published(&mut cb);
    cb.wait_until("a record of b's job", || records(&b.join("job")) > 0);
    std::fs::remove_file(a.join("fail-marker")).unwrap();
    for (dir, c) in [(&a, ca), (&b, cb)] {
        c.exits(0);
        assert!(
            frames(&dir.join("out.mp4")) == local_job_frames(dir, "local"),
            "the farm's output in `{}` differs from its own job run on one machine",
            dir.display()
        );
    }
    worker.stop();
}
