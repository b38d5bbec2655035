//! `llm-analyze` against LiteLLM's proxy (PyPI `litellm[proxy]`, installed by
//! scripts/install-deps.sh into `~/.cache/vidflow/litellm-<version>`), an OpenAI-compatible
//! server nobody here wrote: it authenticates the Bearer key, parses the request and validates
//! its messages (a malformed content part is refused), then answers with a configured mock
//! answer instead of calling a model. A callback of ours (`tests/litellm/recorder.py`) writes
//! down what the proxy understood of each request, so the test checks the wire format (text
//! and image parts, JPEG data URLs, JSON mode) as the proxy read it, on every run.

use crate::common::{BIN, Server, free_port, installed_tool, read_jsonl, tmp};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const KEY: &str = "sk-vidflow-litellm-test-5f0c1a9e7b3d";

/// The mock answer: one entry per frame of a batch of 3, in order.
const ANSWER: &str = r#"{"frames": [{"analysis": "a"}, {"analysis": "b"}, {"analysis": "c"}]}"#;

fn start_proxy(dir: &Path) -> (Server, u16) {
    let litellm = installed_tool("litellm-1.108.7/bin/litellm");
    let recorder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/litellm/recorder.py");
    // The proxy imports the callback module from its config file's folder.
    std::fs::copy(&recorder, dir.join("recorder.py")).unwrap();
    let config = format!(
        "model_list:
  - model_name: vision-mock
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: not-used
      mock_response: '{ANSWER}'
litellm_settings:
  callbacks: recorder.proxy_handler_instance
general_settings:
  master_key: {KEY}
"
    );
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    let port = free_port();
    let log = dir.join("proxy.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(&litellm)
        .args(["--config", "config.yaml", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .current_dir(dir)
        .env("VIDFLOW_LITELLM_LOG", dir.join("requests.jsonl"))
        .env("LITELLM_TELEMETRY", "False")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start LiteLLM's proxy");
    let mut server = Server { child, log };
    server.wait_ready(
        port,
        "/health/liveliness",
        Duration::from_secs(240),
        "LiteLLM's proxy",
    );
    (server, port)
}

#[test]
fn litellm_proxy_accepts_the_requests_and_reads_their_images() {
    let dir = tmp("llm-litellm", "proxy");
    let (server, port) = start_proxy(&dir);
    let graph = format!(
        "name: litellm
nodes:
  - id: src
    kind: testsrc
    params: {{ width: 96, height: 54, count: 6, rate: 2 }}
  - id: analyze
    kind: llm-analyze
    params:
      base_url: \"http://127.0.0.1:{port}/v1\"
      model: vision-mock
      api_key_env: VIDFLOW_TEST_LITELLM_KEY
      max_images: 3
      max_side: 64
      cache: false
      max_retries: 0
      timeout_s: 60
      prompt: \"Describe each frame.\\n{{frames}}\"
    batch: {{ max: 3, wait_ms: 5000 }}
    inputs: {{ frames: src.frames }}
  - id: out
    kind: jsonl
    params: {{ path: records.jsonl }}
    inputs: {{ items: analyze.records }}
"
    );
    std::fs::write(dir.join("g.yaml"), graph).unwrap();
    let o = Command::new(BIN)
        .args(["run", "g.yaml", "--progress", "none"])
        .current_dir(&*dir)
        .env("VIDFLOW_TEST_LITELLM_KEY", KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "{stderr}\nproxy:\n{}",
        server.log_tail()
    );

    // One record per frame, in order, each with the proxy's (mock) analysis.
    let records = read_jsonl(&dir.join("records.jsonl"));
    assert_eq!(records.len(), 6, "{records:#?}");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["index"], i as u64, "{r}");
        assert!(r["error"].is_null(), "frame {i}: {r}");
        assert_eq!(r["analysis"], ["a", "b", "c"][i % 3], "{r}");
    }

    // What the proxy understood: two requests of three JPEG images each, with the text part,
    // in JSON mode.
    let requests: Vec<Value> = read_jsonl(&dir.join("requests.jsonl"));
    assert_eq!(requests.len(), 2, "{requests:#?}");
    for req in &requests {
        assert_eq!(req["model"], "vision-mock", "{req}");
        assert_eq!(req["response_format"]["type"], "json_object", "{req}");
        let user = req["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "user")
            .unwrap_or_else(|| panic!("no user message: {req}"));
        let parts = user["parts"].as_array().unwrap();
        assert!(
            parts
                .iter()
                .any(|p| p["type"] == "text" && p["chars"].as_u64() > Some(0)),
            "{req}"
        );
        let images: Vec<&Value> = parts.iter().filter(|p| p["type"] == "image_url").collect();
        assert_eq!(images.len(), 3, "{req}");
        for img in images {
            assert_eq!(img["mime"], "data:image/jpeg;base64", "{req}");
            assert_eq!(img["jpeg"], true, "{req}");
            assert!(img["bytes"].as_u64() > Some(100), "{req}");
        }
    }
    drop(server);
}
