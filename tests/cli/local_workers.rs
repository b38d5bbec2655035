//! `vidflow run --job DIR --workers N`: the farm's scheduling with worker processes on one
//! machine and no server. A worker killed with SIGKILL while it holds a chunk has the chunk
//! run by another, every chunk is recorded once and the output equals the job run in one
//! process; a worker keeps its model loaded across the chunks it runs.

use crate::common::TmpDir;
use crate::jobs::{self, SLOW_COPY, clip, exec_graph, frames};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tmp(name: &str) -> TmpDir {
    crate::common::tmp("local-workers", name)
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_local_worker_killed_holding_a_chunk_has_it_run_by_another() {
    let d = tmp("kill");
    clip(&d.path("in.mp4"), "64x48", 4, 10, "");
    d.write("copy.py", SLOW_COPY);
    d.write("g.yaml", &exec_graph(64, 48, 60));
    let mut coord = Command::new(crate::common::BIN)
        .args([
            "run",
            "g.yaml",
            "--progress",
            "json",
            "--job",
            "job",
            "--chunk-seconds",
            "0.4",
            "--workers",
            "3",
        ])
        .current_dir(&*d)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vidflow starts");
    let err = coord.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    // Wait until local-1 holds a chunk, then kill that worker process.
    let (mut seen, mut pid, mut held) = (vec![], None, None);
    let started = Instant::now();
    while held.is_none() {
        let l = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no chunk on local-1:\n{}", seen.join("\n")));
        seen.push(l.clone());
        let Ok(e) = serde_json::from_str::<serde_json::Value>(&l) else {
            continue;
        };
        if let Some(text) = e["text"].as_str()
            && let Some(rest) = text.strip_prefix("worker local-1 started (pid ")
        {
            pid = rest.trim_end_matches(')').parse::<u32>().ok();
        }
        if e["event"] == "chunk_start" && e["worker"] == "local-1" {
            held = e["chunk"].as_u64();
        }
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    let pid = pid.unwrap_or_else(|| panic!("no pid for local-1:\n{}", seen.join("\n")));
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = coord.wait().unwrap();
    seen.extend(rx.iter());
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
    let ev = json_lines(&seen.join("\n"));
    let held = held.unwrap();
    assert!(
        ev.iter().any(|e| e["event"] == "chunk_start"
            && e["chunk"] == held
            && e["worker"] != "local-1"
            && e["attempt"].as_u64() >= Some(2)),
        "chunk {held} was not given to another worker:\n{}",
        seen.join("\n")
    );
    assert_eq!(jobs::records(&d.path("job")).len(), 10);
    for c in 0..10 {
        let done = ev
            .iter()
            .filter(|e| e["event"] == "chunk_done" && e["chunk"] == c)
            .count();
        assert_eq!(done, 1, "chunk {c} recorded {done} times");
    }
    // The same output as the job run in one process.
    let one = Command::new(crate::common::BIN)
        .args([
            "run",
            "g.yaml",
            "--progress",
            "none",
            "--set",
            "output=one.mp4",
            "--job",
            "one",
            "--chunk-seconds",
            "0.4",
        ])
        .current_dir(&*d)
        .output()
        .unwrap();
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    assert_eq!(frames(&d.path("out.mp4")), frames(&d.path("one.mp4")));
}

#[cfg(feature = "neural")]
#[test]
fn a_worker_loads_its_model_once_for_all_its_chunks() {
    let d = tmp("model-once");
    clip(&d.path("in.mp4"), "32x24", 2, 10, "");
    let graph = crate::common::graph("upscale");
    for (how, extra) in [
        ("one process", &[][..]),
        ("one worker", &["--workers", "1"][..]),
    ] {
        let job = format!("job-{}", extra.len());
        let out = format!("output=out-{}.mp4", extra.len());
        let mut args = vec![
            "run",
            &graph,
            "--device",
            "cpu",
            "--set",
            "input=in.mp4",
            "--set",
            &out,
            "--job",
            &job,
            "--chunk-seconds",
            "0.4",
            "--progress",
            "plain",
        ];
        args.extend_from_slice(extra);
        let o = Command::new(crate::common::BIN)
            .args(&args)
            .current_dir(&*d)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{how}: {err}");
        assert_eq!(jobs::records(&d.path(&job)).len(), 5, "{how}: {err}");
        let loads = err
            .lines()
            .filter(|l| l.contains("node `sr`: ") && l.contains(" from "))
            .count();
        assert_eq!(
            loads, 1,
            "{how}: the model was loaded {loads} times for 5 chunks:\n{err}"
        );
    }
}
