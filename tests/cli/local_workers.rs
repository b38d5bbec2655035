//! `vidflow run --job DIR --workers N`: the farm's scheduling with worker processes on one
//! machine and no server. A worker killed with SIGKILL while it holds a chunk has the chunk
//! run by another, every chunk is recorded once and the output equals the job run in one
//! process; a worker keeps its model loaded across the chunks it runs.

use crate::common::{Proc, TmpDir};
use crate::jobs::{
    self, assert_each_chunk_done_once, frames, job_args, json_events, local_job_frames, setup,
};
use std::process::Command;

fn tmp(name: &str) -> TmpDir {
    crate::common::tmp("local-workers", name)
}

#[test]
fn a_local_worker_killed_holding_a_chunk_has_it_run_by_another() {
    let d = tmp("kill");
    setup(&d, 60, "");
    let mut coord = Proc::start(&d, &job_args("job", &["--workers", "3"]));
    // Wait until local-1 holds a chunk, then kill that worker process.
    let (mut pid, mut held) = (None, None);
    coord.wait_for("a chunk on local-1", |l| {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(l) else {
            return false;
        };
        if let Some(text) = e["text"].as_str()
            && let Some(rest) = text.strip_prefix("worker local-1 started (pid ")
        {
            pid = rest.trim_end_matches(')').parse::<u32>().ok();
        }
        if e["event"] == "chunk_start" && e["worker"] == "local-1" {
            held = e["chunk"].as_u64();
        }
        held.is_some()
    });
    let pid = pid.unwrap_or_else(|| panic!("no pid for local-1:\n{}", coord.seen()));
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let seen = coord.exits(0).join("\n");
    let ev = json_events(&seen);
    let held = held.unwrap();
    assert!(
        ev.iter().any(|e| e["event"] == "chunk_start"
            && e["chunk"] == held
            && e["worker"] != "local-1"
            && e["attempt"].as_u64() >= Some(2)),
        "chunk {held} was not given to another worker:\n{seen}"
    );
    assert_eq!(jobs::records(&d.path("job")).len(), 10);
    assert_each_chunk_done_once(&ev, 10);
    // The same output as the job run in one process.
    assert_eq!(frames(&d.path("out.mp4")), local_job_frames(&d, "one"));
}

#[cfg(feature = "neural")]
#[test]
fn a_worker_loads_its_model_once_for_all_its_chunks() {
    let d = tmp("model-once");
    jobs::clip(&d.path("in.mp4"), "32x24", 2, 10, "");
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
        let o = jobs::vidflow(&d, &args);
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
