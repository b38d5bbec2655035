//! `vidflow` with `llm-analyze` end to end, against the OpenAI-compatible test server
//! (`nodes/tests/nodes/llm_fake`): a run writes one record per frame; the API key goes only into
//! the Authorization header (never into output, messages or the cache); a missing key
//! variable exits 1, an unreachable server exits 2, each with one clear message; `vidflow
//! nodes` and `vidflow check` know the kind and `graphs/analyze.yaml`.

#[path = "../../nodes/tests/nodes/llm_fake/mod.rs"]
mod llm_fake;

use crate::common::{TmpDir, read_jsonl, vidflow_in};
use llm_fake::{FakeServer, Options, graph};
use std::path::Path;

fn tmp(name: &str) -> TmpDir {
    crate::common::tmp("llm-cli", name)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_run_writes_one_record_per_frame_and_keeps_the_key_secret() {
    const KEY: &str = "sk-test-6f1d2c9e-very-secret";
    let server = FakeServer::start(Options {
        max_side: 128,
        auth: Some(format!("Bearer {KEY}")),
        ..Options::default()
    });
    let dir = tmp("run");
    let out = dir.join("records.jsonl");
    let yaml = graph(
        &server.base_url,
        9,
        "max_side: 128, api_key_env: VIDFLOW_LLM_TEST_KEY, cache_dir: cache",
        None,
        &out,
    );
    std::fs::write(dir.join("g.yaml"), yaml).unwrap();
    let o = vidflow_in(
        &["run", "g.yaml", "--progress", "none"],
        &dir,
        &[("VIDFLOW_LLM_TEST_KEY", KEY)],
    );
    assert_eq!(o.code, 0, "stdout:\n{}\nstderr:\n{}", o.stdout, o.stderr);
    let records = read_jsonl(&out);
    assert_eq!(records.len(), 9);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["index"], i as u64);
        assert_eq!(r["analysis"], format!("seen frame {i}"));
        assert!(r["error"].is_null());
    }
    assert_eq!(server.count(), 3);
    assert!(server.problems().is_empty(), "{:?}", server.problems());
    // The key is in no output, no message and no cache file.
    assert!(!o.stdout.contains(KEY) && !o.stderr.contains(KEY));
    let cached = files_under(&dir.join("cache"));
    assert_eq!(cached.len(), 3, "one cache entry per request: {cached:?}");
    for f in files_under(&dir) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(KEY),
            "{} contains the API key",
            f.display()
        );
    }
}

#[test]
fn a_missing_key_variable_exits_1_naming_it() {
    let server = FakeServer::start(Options::default());
    let dir = tmp("nokey");
    let yaml = graph(
        &server.base_url,
        3,
        "cache: false, api_key_env: VIDFLOW_LLM_TEST_UNSET_KEY",
        None,
        &dir.join("o.jsonl"),
    );
    std::fs::write(dir.join("g.yaml"), yaml).unwrap();
    let o = vidflow_in(&["run", "g.yaml", "--progress", "none"], &dir, &[]);
    assert_eq!(o.code, 1, "stderr:\n{}", o.stderr);
    assert!(
        o.stderr.contains("VIDFLOW_LLM_TEST_UNSET_KEY") && o.stderr.contains("not set"),
        "{}",
        o.stderr
    );
    assert_eq!(server.count(), 0);
}

#[test]
fn an_unreachable_server_exits_2_naming_the_url() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/v1");
    let dir = tmp("down");
    let yaml = graph(
        &url,
        6,
        "cache: false, max_retries: 1, backoff_ms: 10",
        None,
        &dir.join("o.jsonl"),
    );
    std::fs::write(dir.join("g.yaml"), yaml).unwrap();
    let o = vidflow_in(&["run", "g.yaml", "--progress", "none"], &dir, &[]);
    assert_eq!(o.code, 2, "stderr:\n{}", o.stderr);
    assert!(
        o.stderr.contains(&url) && o.stderr.contains("base_url") && o.stderr.contains("analyze"),
        "{}",
        o.stderr
    );
    assert!(!dir.join("o.jsonl").exists());
}

#[test]
fn the_cli_knows_the_kind_and_the_example_graph() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = vidflow_in(&["nodes", "llm-analyze"], root, &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for word in [
        "base_url",
        "api_key_env",
        "requests_per_minute",
        "tokens_per_minute",
        "max_images",
        "max_side",
        "per_frame",
        "batched, default max 3 wait 1000 ms",
        "{frames}",
    ] {
        assert!(
            o.stdout.contains(word),
            "`{word}` missing from:\n{}",
            o.stdout
        );
    }
    let o = vidflow_in(&["check", "graphs/analyze.yaml"], root, &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
}
