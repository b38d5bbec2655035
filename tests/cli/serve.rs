//! `vidflow serve` over real gRPC on loopback, driven by a Rust tonic client generated from
//! the repository's `.proto`: sessions interleaved each get exactly their own frames in order,
//! batches hold items of several sessions (read from `/metrics`), admission refuses session
//! N+1, a disconnect frees its slot at once, a malformed session fails alone, health and
//! reflection answer, and a non-loopback address is refused.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

mod pb {
    tonic::include_proto!("vidflow.serve.v1");
}
use pb::serve_client::ServeClient;
use pb::{Encoding, StreamReply, StreamRequest, stream_reply, stream_request};

/// A loopback port nobody listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A serve graph: session-in → upscale (built-in weights, ×2, batched across sessions with a
/// wait long enough that interleaved sessions share batches) → session-out.
fn graph(dir: &Path, max_sessions: usize) -> String {
    graph_with(
        dir,
        &format!("max_sessions: {max_sessions}, idle_timeout_s: 30"),
    )
}

/// The same graph with `serve: { <serve> }`.
fn graph_with(dir: &Path, serve: &str) -> String {
    let path = dir.join("serve.yaml");
    std::fs::write(
        &path,
        format!(
            "name: serve-test\nserve: {{ {serve} }}\nnodes:\n  - id: in\n    kind: session-in\n  - id: sr\n    kind: upscale\n    params: {{ scale: 2 }}\n    batch: {{ max: 8, wait_ms: 150 }}\n    inputs: {{ frames: in.frames }}\n  - id: out\n    kind: session-out\n    inputs: {{ frames: sr.frames }}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// A running `vidflow serve`, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    metrics: u16,
    log: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// A server on `graph(dir, max_sessions)`, once it is ready (warmed up).
    fn start(dir: &Path, max_sessions: usize) -> Server {
        let s = Server::spawn(dir, &graph(dir, max_sessions), "127.0.0.1", &[]);
        s.wait_ready();
        s
    }
    /// A server on `graph`, listening on `host` with `extra` arguments, once its ports answer
    /// (it may still be warming up).
    fn spawn(dir: &Path, graph: &str, host: &str, extra: &[&str]) -> Server {
        let (port, metrics) = (free_port(), free_port());
        let log = dir.join("server.log");
        let child = Command::new(env!("CARGO_BIN_EXE_vidflow"))
            .args([
                "serve",
                graph,
                "--listen",
                &format!("{host}:{port}"),
                "--metrics",
                &format!("127.0.0.1:{metrics}"),
                "--device",
                "cpu",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start vidflow serve");
        let mut s = Server {
            child,
            port,
            metrics,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("vidflow serve exited with {status}:\n{}", s.log());
            }
            assert!(Instant::now() < deadline, "no server:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        while s.get("/live", None).is_none() {
            assert!(Instant::now() < deadline, "no /live:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }
    /// Polls `/ready` until it answers 200 (at most 60 s).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.get("/ready", None).map(|(code, _)| code) != Some(200) {
            assert!(Instant::now() < deadline, "never ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    /// `GET path` on the metrics port, with a bearer token if given: (status, body).
    fn get(&self, path: &str, token: Option<&str>) -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.get(9..12)?.parse().ok()?;
        Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    fn get_metrics(&self) -> Option<String> {
        match self.get("/metrics", None)? {
            (200, body) => Some(body),
            _ => None,
        }
    }
    /// Polls `/metrics` until `pred` holds (at most 20 s); the last text.
    fn wait_metrics(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(m) = self.get_metrics()
                && pred(&m)
            {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "metrics never matched: {:?}\n{}",
                self.get_metrics(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The value of a metric line (`name{labels} value`), exactly as written before the value.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A `w`×`h` raw RGB frame whose pixels encode `seed` (to tell sessions apart by value).
fn raw(id: u64, w: u32, h: u32, seed: u8) -> StreamRequest {
    let data = (0..w * h * 3)
        .map(|i| seed.wrapping_add((i % 7) as u8))
        .collect();
    StreamRequest {
        msg: Some(stream_request::Msg::Frame(pb::Frame {
            frame_id: id,
            timestamp: id as f64 / 25.0,
            encoding: Encoding::RawRgb as i32,
            width: w,
            height: h,
            data,
        })),
    }
}

fn config() -> StreamRequest {
    StreamRequest {
        msg: Some(stream_request::Msg::Config(pb::SessionConfig {
            output_encoding: Encoding::RawRgb as i32,
            fps: 25.0,
            ..Default::default()
        })),
    }
}

/// One open session: its request sender and reply stream.
struct Session {
    tx: mpsc::Sender<StreamRequest>,
    replies: tonic::Streaming<StreamReply>,
    id: u64,
}

/// Opens a session and reads its `ready`; the gRPC status if it was refused.
async fn open(url: &str) -> Result<Session, tonic::Status> {
    let Some(stream_request::Msg::Config(c)) = config().msg else {
        unreachable!()
    };
    open_with(url, c).await
}

impl Session {
    /// The session with its request side closed (the client sent its last frame).
    fn closed(self) -> Session {
        Session {
            tx: mpsc::channel(1).0,
            replies: self.replies,
            id: self.id,
        }
    }
}

/// Every frame of a session until its end (the stream's status on error).
async fn frames(s: &mut Session) -> Result<Vec<pb::Frame>, tonic::Status> {
    let mut out = vec![];
    while let Some(r) = s.replies.message().await? {
        if let Some(stream_reply::Msg::Frame(f)) = r.msg {
            out.push(f);
        }
    }
    Ok(out)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vidflow-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn interleaved_sessions_each_get_their_own_frames_in_order_from_shared_batches() {
    let dir = tmp("interleaved");
    let server = Server::start(&dir, 4);
    let rt = runtime();
    let (a, b) = rt.block_on(async {
        let a = open(&server.url()).await.expect("session a");
        let b = open(&server.url()).await.expect("session b");
        assert_ne!(a.id, b.id);
        // Interleaved: a's frames are 8x6 of seed 10, b's 6x4 of seed 200.
        for i in 0..6u64 {
            a.tx.send(raw(i, 8, 6, 10)).await.unwrap();
            b.tx.send(raw(100 + i, 6, 4, 200)).await.unwrap();
        }
        // Closing the request side ends each session after its results.
        let (mut a, mut b) = (a.closed(), b.closed());
        let (ra, rb) = tokio::join!(frames(&mut a), frames(&mut b));
        (ra.expect("a ends ok"), rb.expect("b ends ok"))
    });
    let ids = |f: &[pb::Frame]| f.iter().map(|f| f.frame_id).collect::<Vec<_>>();
    assert_eq!(ids(&a), (0..6).collect::<Vec<_>>(), "{}", server.log());
    assert_eq!(ids(&b), (100..106).collect::<Vec<_>>());
    for f in &a {
        assert_eq!((f.width, f.height, f.data.len()), (16, 12, 16 * 12 * 3));
        assert!((f.timestamp - f.frame_id as f64 / 25.0).abs() < 1e-9);
    }
    for f in &b {
        assert_eq!((f.width, f.height), (12, 8));
    }
    // Batches held items of both sessions.
    let m = server.wait_metrics(|m| {
        // Node counters are a progress tick behind the hub's. The 12 frames of the two
        // sessions and the warm-up frame.
        metric(m, "vidflow_serve_frames_out_total") == Some(13.0)
            && metric(m, "vidflow_batch_size_sum{node=\"sr\"}") == Some(13.0)
    });
    let mixed = metric(&m, "vidflow_batch_mixed_sessions_total{node=\"sr\"}").unwrap_or(0.0);
    let batches = metric(&m, "vidflow_batch_size_count{node=\"sr\"}").unwrap();
    let items = metric(&m, "vidflow_batch_size_sum{node=\"sr\"}").unwrap();
    assert!(mixed >= 1.0, "no batch mixed sessions:\n{m}");
    assert_eq!(items, 13.0, "{m}");
    // The warm-up frame was a batch of its own.
    assert!(batches - 1.0 < 12.0, "no batching at all:\n{m}");
    assert_eq!(metric(&m, "vidflow_serve_sessions"), Some(0.0), "{m}");
}

#[test]
fn serve_bench_plays_real_time_sessions_and_reports_what_it_measured() {
    let dir = tmp("serve-bench");
    let server = Server::start(&dir, 4);
    let out = Command::new(env!("CARGO_BIN_EXE_vidflow"))
        .args([
            "serve-bench",
            "--target",
            &format!("127.0.0.1:{}", server.port),
            "--metrics",
            &format!("127.0.0.1:{}", server.metrics),
            "--kind",
            "frames",
            "--sessions",
            "2",
            "--fps",
            "10",
            "--seconds",
            "1",
            "--size",
            "16x16",
            "--json",
        ])
        .output()
        .expect("serve-bench runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
    // Two sessions of 10 frames each, every frame back and timed.
    assert_eq!(v["frames"], 20, "{v}");
    let sessions = v["per_session"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    for s in sessions {
        assert_eq!(
            (s["sent"].as_u64(), s["frames"].as_u64()),
            (Some(10), Some(10)),
            "{v}"
        );
        assert!(s["error"].is_null(), "{v}");
    }
    let p50 = v["latency_ms"]["p50"].as_f64().unwrap();
    assert!(
        p50 > 0.0 && p50 <= v["latency_ms"]["p99"].as_f64().unwrap(),
        "{v}"
    );
    // The server's batches over the run, from its counters: 20 frames through `sr`.
    let sr = v["batches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["node"] == "sr")
        .unwrap_or_else(|| panic!("no batches of `sr`: {v}"));
    let (n, mean) = (
        sr["batches"].as_f64().unwrap(),
        sr["mean"].as_f64().unwrap(),
    );
    assert!((n * mean - 20.0).abs() < 1e-6, "{v}");
}

#[test]
fn admission_refuses_one_too_many_and_a_disconnect_frees_the_slot_at_once() {
    let dir = tmp("admission");
    let server = Server::start(&dir, 2);
    let rt = runtime();
    rt.block_on(async {
        let a = open(&server.url()).await.expect("first session");
        let b = open(&server.url()).await.expect("second session");
        let refused = open(&server.url()).await.err().expect("third is refused");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("maximum of 2"), "{refused:?}");
        // The second client goes away without closing its stream.
        drop(b);
        let deadline = Instant::now() + Duration::from_secs(5);
        let c = loop {
            match open(&server.url()).await {
                Ok(c) => break c,
                Err(s) if s.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(s) => panic!("the slot was not freed: {s:?}"),
            }
        };
        // The first session still works.
        let mut a = a;
        a.tx.send(raw(1, 4, 4, 1)).await.unwrap();
        let reply = a.replies.message().await.unwrap().unwrap();
        assert!(matches!(reply.msg, Some(stream_reply::Msg::Frame(ref f)) if f.frame_id == 1));
        drop(c);
    });
    let m =
        server.wait_metrics(|m| metric(m, "vidflow_serve_sessions_rejected_total") >= Some(1.0));
    assert!(
        metric(&m, "vidflow_serve_sessions_admitted_total") >= Some(3.0),
        "{m}"
    );
}

#[test]
fn a_malformed_session_fails_alone_while_another_goes_on() {
    let dir = tmp("malformed");
    let server = Server::start(&dir, 4);
    let rt = runtime();
    rt.block_on(async {
        let good = open(&server.url()).await.unwrap();
        let mut bad = open(&server.url()).await.unwrap();
        good.tx.send(raw(0, 4, 4, 5)).await.unwrap();
        // 4x4 RGB is 48 bytes: 47 is malformed.
        let mut broken = raw(0, 4, 4, 9);
        if let Some(stream_request::Msg::Frame(f)) = &mut broken.msg {
            f.data.pop();
        }
        bad.tx.send(broken).await.unwrap();
        let status = frames(&mut bad).await.expect_err("the bad session fails");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("48 bytes, got 47"), "{status:?}");
        // A broken image too.
        let mut bad2 = open(&server.url()).await.unwrap();
        bad2.tx
            .send(StreamRequest {
                msg: Some(stream_request::Msg::Frame(pb::Frame {
                    frame_id: 3,
                    encoding: Encoding::Png as i32,
                    data: b"not a png".to_vec(),
                    ..Default::default()
                })),
            })
            .await
            .unwrap();
        let status = frames(&mut bad2).await.expect_err("the broken image fails");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("frame 3"), "{status:?}");
        // The good session goes on.
        for i in 1..4 {
            good.tx.send(raw(i, 4, 4, 5)).await.unwrap();
        }
        let got = frames(&mut good.closed())
            .await
            .expect("the good session ends ok");
        assert_eq!(
            got.iter().map(|f| f.frame_id).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    });
}

/// The health service's status of the Serve service.
async fn health(url: &str) -> i32 {
    let channel = tonic::transport::Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "vidflow.serve.v1.Serve".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[test]
fn health_and_ready_say_serving_only_after_the_warm_up() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let dir = tmp("health");
    // A 512x512 warm-up frame takes the CPU upscaler long enough to be seen warming up.
    let g = graph_with(&dir, "max_sessions: 2, warmup_size: 512");
    let server = Server::spawn(&dir, &g, "127.0.0.1", &[]);
    let rt = runtime();
    assert_eq!(
        rt.block_on(health(&server.url())),
        ServingStatus::NotServing as i32,
        "{}",
        server.log()
    );
    let (code, body) = server.get("/ready", None).unwrap();
    assert_eq!(code, 503, "{body}");
    assert_eq!(server.get("/live", None).unwrap().0, 200);
    server.wait_ready();
    assert_eq!(
        rt.block_on(health(&server.url())),
        ServingStatus::Serving as i32
    );
    assert!(
        server.log().contains("ready (warm-up frame"),
        "{}",
        server.log()
    );
    // A non-loopback address without `--insecure` is refused with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_vidflow"))
        .args(["serve", &graph(&dir, 2), "--listen", "0.0.0.0:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--insecure"),
        "{err}"
    );
}

#[test]
fn check_refuses_a_serve_graph_whose_sessions_could_mix() {
    let dir = tmp("mix");
    let path = dir.join("mix.yaml");
    std::fs::write(
        &path,
        "name: mix\nnodes:\n  - id: in\n    kind: session-in\n  - id: mid\n    kind: interpolate\n    inputs: { frames: in.frames }\n  - id: out\n    kind: session-out\n    inputs: { frames: mid.frames }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vidflow"))
        .args(["check", &path.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error[session-state]: node `mid`"), "{err}");
    assert!(err.contains("mix.yaml:6:11"), "{err}");
}

/// A self-signed certificate for `localhost` and 127.0.0.1 (an end-entity certificate, which
/// the client trusts directly), made with the `openssl` command: (cert, key) paths.
fn self_signed(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the `openssl` command (Debian: openssl; scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn off_loopback_the_server_needs_tls_and_a_token() {
    let dir = tmp("auth");
    let (cert, key) = self_signed(&dir);
    let token_file = dir.join("token");
    std::fs::write(&token_file, "0123456789abcdef\n").unwrap();
    let token_path = token_file.display().to_string();
    // Without TLS a token is not enough off loopback.
    let out = Command::new(env!("CARGO_BIN_EXE_vidflow"))
        .args(["serve", &graph(&dir, 2), "--listen", "0.0.0.0:1"])
        .args(["--token-file", &token_path])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs TLS") && err.contains("--tls-cert"),
        "{err}"
    );
    // An empty token file is refused, naming it.
    let empty = dir.join("empty");
    std::fs::write(&empty, "  \n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vidflow"))
        .args(["serve", &graph(&dir, 2), "--token-file"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // TLS and a token: listening on every address is allowed.
    let server = Server::spawn(
        &dir,
        &graph(&dir, 2),
        "0.0.0.0",
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--token-file",
            &token_path,
        ],
    );
    // The HTTP endpoints need the token too.
    assert_eq!(server.get("/metrics", None).unwrap().0, 401);
    assert_eq!(server.get("/ready", Some("nope")).unwrap().0, 401);
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.get("/ready", Some("0123456789abcdef")).unwrap().0 != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        server.get("/metrics", Some("0123456789abcdef")).unwrap().0,
        200
    );
    let port = server.port;
    let pem = std::fs::read(&cert).unwrap();
    let rt = runtime();
    rt.block_on(async move {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem))
            .domain_name("localhost");
        let channel = tonic::transport::Channel::from_shared(format!("https://127.0.0.1:{port}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .expect("a TLS connection");
        // One session with the given token (or none): its first frame back, or the status.
        let session = |token: Option<&'static str>| {
            let channel = channel.clone();
            async move {
                let mut client =
                    ServeClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
                        if let Some(t) = token {
                            r.metadata_mut()
                                .insert("authorization", format!("Bearer {t}").parse().unwrap());
                        }
                        Ok(r)
                    });
                let (tx, rx) = mpsc::channel(4);
                tx.send(config()).await.unwrap();
                tx.send(raw(7, 4, 4, 3)).await.unwrap();
                drop(tx);
                let mut replies = client.stream(ReceiverStream::new(rx)).await?.into_inner();
                let mut ids = vec![];
                while let Some(r) = replies.message().await? {
                    if let Some(stream_reply::Msg::Frame(f)) = r.msg {
                        ids.push(f.frame_id);
                    }
                }
                Ok::<_, tonic::Status>(ids)
            }
        };
        assert_eq!(session(Some("0123456789abcdef")).await.unwrap(), [7]);
        for token in [None, Some("0123456789abcdeX"), Some("0123456789abcdef0")] {
            let status = session(token).await.expect_err("refused");
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{token:?}: {status:?}"
            );
            assert!(
                !status.message().contains("0123456789abcdef"),
                "the token is never echoed: {status:?}"
            );
        }
    });
    assert!(
        !server.log().contains("0123456789abcdef"),
        "the token is never logged:\n{}",
        server.log()
    );
}

#[test]
fn sigterm_stops_admitting_finishes_the_frames_in_flight_and_exits_0() {
    let dir = tmp("sigterm");
    let mut server = Server::start(&dir, 4);
    let rt = runtime();
    let url = server.url();
    let pid = server.child.id();
    let got = rt.block_on(async {
        let s = open(&url).await.unwrap();
        for i in 0..6 {
            s.tx.send(raw(i, 16, 16, 2)).await.unwrap();
        }
        // Frames are in the graph when the signal comes.
        let mut s = s.closed();
        let first = s.replies.message().await.unwrap().unwrap();
        assert!(matches!(first.msg, Some(stream_reply::Msg::Frame(ref f)) if f.frame_id == 0));
        let kill = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let rest = frames(&mut s).await.expect("the session in flight ends ok");
        // No new session once stopping (refused, or the port already closed).
        let attempt = async {
            let mut c = ServeClient::connect(url.clone()).await.ok()?;
            let (tx, rx) = mpsc::channel(1);
            tx.send(config()).await.unwrap();
            let mut replies = c.stream(ReceiverStream::new(rx)).await.ok()?.into_inner();
            replies.message().await.ok()?
        };
        let admitted = tokio::time::timeout(Duration::from_secs(3), attempt).await;
        assert!(
            !matches!(admitted, Ok(Some(_))),
            "a session was admitted while stopping: {admitted:?}"
        );
        rest
    });
    assert_eq!(
        got.iter().map(|f| f.frame_id).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "still running:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", server.log());
}

/// grpcio's version in the virtualenv `scripts/install-deps.sh` makes.
const GRPCIO_VERSION: &str = "1.85.1";

/// A client not written in Rust: `tests/python/serve_client.py`, run with the grpcio
/// virtualenv, generates its stubs from the repository's `.proto` with grpcio-tools and checks
/// a session end to end (ready, frames in order with their ids and timestamps, ×2 sizes) and
/// that a frame before the config is refused with INVALID_ARGUMENT.
#[test]
fn a_python_grpcio_client_with_stubs_from_the_proto_runs_a_session() {
    let python = crate::common::installed_tool(&format!("grpcio-{GRPCIO_VERSION}/bin/python"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tmp("python");
    let server = Server::start(&dir, 4);
    let port = server.port;

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
    assert_eq!(session["graph"], "serve-test", "{summary}");
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

/// The Wav2Lip checkpoint with seeded random weights (the speed and the plumbing do not depend
/// on the values).
fn wav2lip_fixture() -> String {
    format!(
        "{}/nodes/tests/fixtures/wav2lip-random-seed0.fp16.pth",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A lip-sync session's config: a `w`×`h` raw RGB face of `seed`, its box, 16 kHz mono s16.
fn lip_config(w: u32, h: u32, seed: u8, face_box: [u32; 4]) -> pb::SessionConfig {
    let StreamRequest {
        msg: Some(stream_request::Msg::Frame(face)),
    } = raw(0, w, h, seed)
    else {
        unreachable!()
    };
    pb::SessionConfig {
        output_encoding: Encoding::RawRgb as i32,
        fps: 25.0,
        face: Some(face),
        face_box: Some(pb::FaceBox {
            x: face_box[0],
            y: face_box[1],
            width: face_box[2],
            height: face_box[3],
        }),
        audio: Some(pb::AudioFormat {
            sample_rate: 16_000,
            channels: 1,
            encoding: pb::AudioEncoding::PcmS16le as i32,
        }),
        ..Default::default()
    }
}

/// `n` chunks of 40 ms (640 samples) of a chirp with some noise, as s16le: speech-like enough
/// that consecutive mel windows differ.
fn speech(n: usize) -> Vec<Vec<u8>> {
    let mut state = 12345u32;
    (0..n)
        .map(|c| {
            (0..640)
                .flat_map(|k| {
                    let t = (c * 640 + k) as f32 / 16000.0;
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    let noise = (state >> 16) as f32 / 65536.0 - 0.5;
                    let v = 0.4 * (2.0 * std::f32::consts::PI * (200.0 + 300.0 * t) * t).sin()
                        + 0.1 * noise;
                    ((v * 32767.0) as i16).to_le_bytes()
                })
                .collect()
        })
        .collect()
}

fn audio_msg(id: u64, data: Vec<u8>) -> StreamRequest {
    StreamRequest {
        msg: Some(stream_request::Msg::Audio(pb::AudioChunk {
            chunk_id: id,
            data,
        })),
    }
}

/// A lip-sync serve graph on the fixture weights, its batches waiting long enough that
/// interleaved sessions share them.
fn lip_graph(dir: &Path) -> String {
    let path = dir.join("serve-lipsync.yaml");
    std::fs::write(
        &path,
        "name: lip-test\nserve: { max_sessions: 4, idle_timeout_s: 30, warmup_size: 96 }\nnodes:\n  - id: in\n    kind: session-in\n  - id: windows\n    kind: audio-window\n    params: { mode: mel, span: 1 }\n    inputs: { audio: in.audio, frames: in.frames }\n  - id: sync\n    kind: lipsync\n    params: { weights: WEIGHTS, smooth: 1 }\n    batch: { max: 8, wait_ms: 150 }\n    inputs: { frames: in.frames, windows: windows.windows }\n  - id: out\n    kind: session-out\n    inputs: { frames: sync.frames }\n"
            .replace("WEIGHTS", &wav2lip_fixture()),
    )
    .unwrap();
    path.display().to_string()
}

/// Opens a session configured with `config`; its `ready`, or the status it was refused with.
async fn open_with(url: &str, config: pb::SessionConfig) -> Result<Session, tonic::Status> {
    let mut client = ServeClient::connect(url.to_string())
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(64);
    tx.send(StreamRequest {
        msg: Some(stream_request::Msg::Config(config)),
    })
    .await
    .unwrap();
    let mut replies = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    match replies.message().await? {
        Some(StreamReply {
            msg: Some(stream_reply::Msg::Ready(r)),
        }) => Ok(Session {
            tx,
            replies,
            id: r.session_id,
        }),
        other => panic!("expected `ready`, got {other:?}"),
    }
}

/// Whether `frame` equals `face` outside `b` (x, y, w, h padded 10 px below, as the node pads
/// a box), and differs from it somewhere inside.
fn only_the_box_changed(frame: &pb::Frame, face: &[u8], w: u32, b: [u32; 4], h: u32) -> bool {
    let (x0, y0, x1, y1) = (b[0], b[1], b[0] + b[2], (b[1] + b[3] + 10).min(h));
    let mut inside_changed = false;
    for y in 0..h {
        for x in 0..w {
            let i = ((y * w + x) * 3) as usize;
            let same = frame.data[i..i + 3] == face[i..i + 3];
            let inside = x >= x0 && x < x1 && y >= y0 && y < y1;
            if !inside && !same {
                return false;
            }
            inside_changed |= inside && !same;
        }
    }
    inside_changed
}

#[test]
fn live_lip_sync_sessions_with_different_faces_each_get_their_own_frames() {
    let dir = tmp("lipsync");
    let s = Server::spawn(&dir, &lip_graph(&dir), "127.0.0.1", &[]);
    s.wait_ready();
    let rt = runtime();
    let (ba, bb) = ([8, 8, 40, 40], [10, 4, 48, 40]);
    let (fa, fb) = (lip_config(64, 64, 10, ba), lip_config(80, 60, 200, bb));
    let (face_a, face_b) = (
        fa.face.as_ref().unwrap().data.clone(),
        fb.face.as_ref().unwrap().data.clone(),
    );
    let (a, b) = rt.block_on(async {
        let a = open_with(&s.url(), fa).await.expect("session a");
        let b = open_with(&s.url(), fb).await.expect("session b");
        // 0.8 s of speech each, interleaved chunk by chunk; b's is the same speech.
        for (k, chunk) in speech(20).into_iter().enumerate() {
            a.tx.send(audio_msg(k as u64, chunk.clone())).await.unwrap();
            b.tx.send(audio_msg(k as u64, chunk)).await.unwrap();
        }
        let (mut a, mut b) = (a.closed(), b.closed());
        let (ra, rb) = tokio::join!(frames(&mut a), frames(&mut b));
        (ra.expect("a ends ok"), rb.expect("b ends ok"))
    });
    let ids = |f: &[pb::Frame]| f.iter().map(|f| f.frame_id).collect::<Vec<_>>();
    // One frame per 40 ms of audio, in order, each the session's own face.
    assert_eq!(ids(&a), (0..20).collect::<Vec<_>>(), "{}", s.log());
    assert_eq!(ids(&b), (0..20).collect::<Vec<_>>());
    for f in &a {
        assert_eq!((f.width, f.height), (64, 64));
        assert!((f.timestamp - f.frame_id as f64 / 25.0).abs() < 1e-9);
        assert!(
            only_the_box_changed(f, &face_a, 64, ba, 64),
            "frame {} of a",
            f.frame_id
        );
    }
    for f in &b {
        assert_eq!((f.width, f.height), (80, 60));
        assert!(
            only_the_box_changed(f, &face_b, 80, bb, 60),
            "frame {} of b",
            f.frame_id
        );
    }
    // The mouth follows the audio: frames of one session differ along the speech.
    assert!(a.windows(2).any(|p| p[0].data != p[1].data));
    // Every frame's latency through the server was measured.
    let m = s.wait_metrics(|m| metric(m, "vidflow_serve_frames_out_total") == Some(50.0));
    assert_eq!(
        metric(&m, "vidflow_serve_frame_latency_seconds_count"),
        Some(40.0),
        "{m}"
    );
}

#[test]
fn a_lip_sync_session_with_a_face_clip_loops_the_clip() {
    let dir = tmp("lipsync-clip");
    let s = Server::spawn(&dir, &lip_graph(&dir), "127.0.0.1", &[]);
    s.wait_ready();
    let rt = runtime();
    let b = [8, 8, 40, 40];
    // Three frames: the face and two more of other colours; a fourth of another size is refused.
    let mut config = lip_config(64, 64, 10, b);
    let frame = |seed| match raw(0, 64, 64, seed).msg {
        Some(stream_request::Msg::Frame(f)) => f,
        _ => unreachable!(),
    };
    config.face_clip = vec![frame(80), frame(160)];
    let faces: Vec<Vec<u8>> = [10, 80, 160].map(|seed| frame(seed).data).to_vec();
    let got = rt.block_on(async {
        let mut wrong = config.clone();
        wrong.face_clip.push(match raw(0, 32, 32, 1).msg {
            Some(stream_request::Msg::Frame(f)) => f,
            _ => unreachable!(),
        });
        let e = open_with(&s.url(), wrong).await.err().expect("refused");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("face_clip[2]"), "{}", e.message());
        let session = open_with(&s.url(), config).await.expect("session");
        for (k, chunk) in speech(7).into_iter().enumerate() {
            session.tx.send(audio_msg(k as u64, chunk)).await.unwrap();
        }
        let mut session = session.closed();
        frames(&mut session).await.expect("ends ok")
    });
    assert_eq!(got.len(), 7);
    for f in &got {
        let face = &faces[f.frame_id as usize % 3];
        assert!(
            only_the_box_changed(f, face, 64, b, 64),
            "frame {} is not clip frame {}",
            f.frame_id,
            f.frame_id % 3
        );
    }
}

#[test]
fn lip_sync_sessions_with_a_bad_config_or_audio_fail_alone() {
    let dir = tmp("lipsync-bad");
    let s = Server::spawn(&dir, &lip_graph(&dir), "127.0.0.1", &[]);
    s.wait_ready();
    let rt = runtime();
    rt.block_on(async {
        // A box outside the face image.
        let bad = open_with(&s.url(), lip_config(64, 64, 1, [40, 40, 40, 40])).await;
        let e = bad.err().expect("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("face_box"), "{}", e.message());
        // No face at all.
        let mut plain = lip_config(64, 64, 1, [8, 8, 40, 40]);
        plain.face = None;
        let e = open_with(&s.url(), plain).await.err().expect("refused");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("config.face"), "{}", e.message());
        // Audio that is not whole samples fails that session while another goes on.
        let good = open_with(&s.url(), lip_config(64, 64, 1, [8, 8, 40, 40]))
            .await
            .unwrap();
        let mut broken = open_with(&s.url(), lip_config(64, 64, 2, [8, 8, 40, 40]))
            .await
            .unwrap();
        broken.tx.send(audio_msg(0, vec![1, 2, 3])).await.unwrap();
        let e = frames(&mut broken)
            .await
            .expect_err("the broken session fails");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("whole number of samples"),
            "{}",
            e.message()
        );
        for (k, chunk) in speech(10).into_iter().enumerate() {
            good.tx.send(audio_msg(k as u64, chunk)).await.unwrap();
        }
        let mut good = good.closed();
        assert_eq!(
            frames(&mut good)
                .await
                .expect("the good session ends ok")
                .len(),
            10
        );
    });
}

#[test]
fn generate_batch_with_audio_needs_n_plus_15_chunks_and_matches_the_stream() {
    let dir = tmp("lipsync-unary");
    let graph = format!("{}/graphs/serve-lipsync.yaml", env!("CARGO_MANIFEST_DIR"));
    let weights = format!("weights={}", wav2lip_fixture());
    let s = Server::spawn(&dir, &graph, "127.0.0.1", &["--set", &weights]);
    s.wait_ready();
    let rt = runtime();
    let box_ = [8, 8, 40, 40];
    let chunks = speech(40);
    // Frames 13..17: chunk 0 of the call is chunk 5 of the stream, a whole number of mel
    // hops (5 × 640 = 3200 = 16 × 200 samples), so the call's windows are the stream's.
    let (start, n) = (13u64, 4u32);
    let call = |chunks: Vec<Vec<u8>>| {
        let url = s.url();
        async move {
            let mut c = ServeClient::connect(url).await.expect("connect");
            c.generate_batch_with_audio(pb::GenerateBatchRequest {
                config: Some(lip_config(64, 64, 10, box_)),
                start_frame_id: start,
                frame_count: n,
                audio_chunks: chunks,
            })
            .await
        }
    };
    let first = (start - 8) as usize;
    rt.block_on(async {
        let e = call(chunks[first..first + 18].to_vec())
            .await
            .expect_err("too few chunks");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("need 19 audio chunks"),
            "{}",
            e.message()
        );
        let got = call(chunks[first..first + 19].to_vec())
            .await
            .expect("the call answers")
            .into_inner()
            .frames;
        assert_eq!(
            got.iter().map(|f| f.frame_id).collect::<Vec<_>>(),
            (start..start + n as u64).collect::<Vec<_>>()
        );
        // A deadline shorter than the work: DEADLINE_EXCEEDED, and the session is dropped
        // (its slot is free again at once).
        let mut c = ServeClient::connect(s.url()).await.expect("connect");
        let mut slow = tonic::Request::new(pb::GenerateBatchRequest {
            config: Some(lip_config(64, 64, 10, box_)),
            start_frame_id: 8,
            frame_count: 25,
            audio_chunks: chunks[..40].to_vec(),
        });
        // The deadline as the header says it, without the client enforcing it itself: the
        // status comes from the server.
        slow.metadata_mut()
            .insert("grpc-timeout", "100m".parse().unwrap());
        let e = c
            .generate_batch_with_audio(slow)
            .await
            .expect_err("past its deadline");
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        s.wait_metrics(|m| metric(m, "vidflow_serve_sessions") == Some(0.0));
        // The same frames as a streaming session of the whole speech.
        let session = open_with(&s.url(), lip_config(64, 64, 10, box_))
            .await
            .unwrap();
        for (k, chunk) in chunks.iter().enumerate() {
            session
                .tx
                .send(audio_msg(k as u64, chunk.clone()))
                .await
                .unwrap();
        }
        let mut session = session.closed();
        let streamed = frames(&mut session).await.unwrap();
        for f in &got {
            let twin = &streamed[f.frame_id as usize];
            assert_eq!(twin.frame_id, f.frame_id);
            let diff = f
                .data
                .iter()
                .zip(&twin.data)
                .map(|(a, b)| a.abs_diff(*b))
                .max();
            assert_eq!(
                diff,
                Some(0),
                "frame {} differs from the stream's",
                f.frame_id
            );
        }
    });
}
