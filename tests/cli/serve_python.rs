//! `vidflow serve` driven by a client not written in Rust: `tests/python/serve_client.py`, run
//! with the grpcio virtualenv that `scripts/install-deps.sh` installs, generates its stubs from
//! the repository's `.proto` with grpcio-tools and checks a session end to end (ready, frames
//! in order with their ids and timestamps, ×2 sizes) and that a frame before the config is
//! refused with INVALID_ARGUMENT.
#![cfg(feature = "neural")]

use crate::common::{installed_tool, tmp};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The grpcio / grpcio-tools version `scripts/install-deps.sh` pins (its `GRPCIO_VERSION`).
const GRPCIO_VERSION: &str = "1.85.1";

/// A loopback port nobody listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `vidflow serve`, killed when dropped.
struct Server {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Serves session-in → upscale (built-in weights, ×2) → session-out on `port`, on the CPU;
    /// returns once the port accepts connections (a session opened while the models still
    /// load waits for them).
    fn start(dir: &Path, port: u16) -> Server {
        let graph = dir.join("serve.yaml");
        std::fs::write(
            &graph,
            "name: serve-python\nserve: { max_sessions: 4, idle_timeout_s: 30 }\nnodes:\n  - id: in\n    kind: session-in\n  - id: sr\n    kind: upscale\n    params: { scale: 2 }\n    batch: { max: 8, wait_ms: 20 }\n    inputs: { frames: in.frames }\n  - id: out\n    kind: session-out\n    inputs: { frames: sr.frames }\n",
        )
        .unwrap();
        let log = dir.join("server.log");
        let child = Command::new(env!("CARGO_BIN_EXE_vidflow"))
            .args(["serve", graph.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--device", "cpu"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start vidflow serve");
        let mut s = Server { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("vidflow serve exited with {status}:\n{}", s.log());
            }
            assert!(
                Instant::now() < deadline,
                "vidflow serve did not listen on {port} within 60 s:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[test]
fn a_python_grpcio_client_with_stubs_from_the_proto_runs_a_session() {
    let python = installed_tool(&format!("grpcio-{GRPCIO_VERSION}/bin/python"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tmp("serve-python", "session");
    let port = free_port();
    let server = Server::start(&dir, port);

    let out = Command::new(&python)
        .arg(root.join("tests/python/serve_client.py"))
        .arg(format!("127.0.0.1:{port}"))
        .arg(root.join("proto"))
        .args(["--frames", "3", "--width", "32", "--height", "24"])
        .stdin(Stdio::null())
        .output()
        .expect("run the grpcio virtualenv's python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "serve_client.py exited with {}:\n{stderr}{stdout}\nserver log:\n{}",
        out.status,
        server.log()
    );

    let line = stdout.lines().last().expect("a JSON summary line");
    eprintln!("serve_client.py: {line}");
    let summary: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["grpcio"], GRPCIO_VERSION, "{summary}");
    let session = &summary["session"];
    assert!(session["session_id"].as_u64() > Some(0), "{summary}");
    assert_eq!(session["graph"], "serve-python", "{summary}");
    assert_eq!(
        session["frame_ids"],
        serde_json::json!([100, 101, 102]),
        "{summary}"
    );
    assert_eq!(session["size"], serde_json::json!([64, 48]), "{summary}");
    assert_eq!(
        summary["frame_first"]["code"], "INVALID_ARGUMENT",
        "{summary}"
    );
    assert!(
        summary["frame_first"]["details"]
            .as_str()
            .is_some_and(|d| d.contains("config")),
        "{summary}"
    );
    drop(server);
}
