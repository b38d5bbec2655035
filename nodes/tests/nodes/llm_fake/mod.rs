//! An OpenAI-compatible chat completions server for tests, on 127.0.0.1 with a free port,
//! std only. It answers like a cooperative vision model (one entry per frame of the frame
//! list, naming each frame), checks every request (model, prompt, image parts as base64 JPEG
//! data URIs within the size and count budgets, the Authorization header), counts requests in
//! flight, and injects the faults a policy asks for: 429 with Retry-After, 500, a hang past
//! the client's timeout, a malformed body, malformed JSON content, the wrong number of
//! entries, a dropped connection.
//!
//! Shared by the `nodes` test binary (`nodes/tests/nodes/llm_*.rs`) and the CLI tests
//! (`tests/cli/llm.rs`, through `#[path]`).

#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to do with one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    None,
    /// 429 with `Retry-After: secs`.
    TooMany {
        retry_after_s: f64,
    },
    /// HTTP 500.
    ServerError,
    /// Another status, with an OpenAI-style error body.
    Status(u16, &'static str),
    /// No answer until the client gives up (it is held at most this long).
    Hang(Duration),
    /// 200 with a body that is not JSON.
    MalformedBody,
    /// 200 with answer text that is not JSON.
    MalformedContent,
    /// 200 with one entry too few.
    WrongCount,
    /// The connection is closed without an answer.
    Drop,
    /// A normal answer, this much later than the others.
    Slow(Duration),
}

/// A request as the policy sees it.
#[derive(Clone, Debug)]
pub struct Req {
    /// 0-based number of the request, in arrival order.
    pub n: usize,
    /// The frames of the frame list in the prompt.
    pub frames: Vec<u64>,
    /// The frame a one-frame request asks about.
    pub target: Option<u64>,
    /// Earlier requests with the same frames and target (0 on the first attempt).
    pub attempt: usize,
}

pub type Policy = Arc<dyn Fn(&Req) -> Fault + Send + Sync>;

#[derive(Clone)]
pub struct Options {
    pub latency: Duration,
    pub model: String,
    /// Images must be at most this many pixels on their longer side.
    pub max_side: u32,
    pub max_images: usize,
    /// Text every prompt must contain.
    pub prompt_contains: Option<String>,
    /// The exact Authorization header expected (None: no header expected).
    pub auth: Option<String>,
    pub images_expected: bool,
    /// Tokens reported per request: prompt tokens, completion tokens per frame.
    pub usage: (u64, u64),
    pub policy: Policy,
    /// Reject `response_format` with a 400 (like a server without JSON mode).
    pub reject_response_format: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            latency: Duration::ZERO,
            model: "fake-vision".into(),
            max_side: 768,
            max_images: 5,
            prompt_contains: None,
            auth: None,
            images_expected: true,
            usage: (100, 10),
            policy: Arc::new(|_| Fault::None),
            reject_response_format: false,
        }
    }
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Arrival time since the server started.
    pub at: Duration,
    pub req: Req,
    pub images: usize,
    /// Width and height of each image.
    pub sizes: Vec<(u32, u32)>,
    pub text: String,
    pub body: Value,
    pub fault: Fault,
}

struct State {
    opts: Options,
    started: Instant,
    seen: Mutex<Vec<Seen>>,
    problems: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    stop: AtomicBool,
}

pub struct FakeServer {
    pub base_url: String,
    state: Arc<State>,
}

impl FakeServer {
    pub fn start(opts: Options) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(State {
            opts,
            started: Instant::now(),
            seen: Mutex::new(vec![]),
            problems: Mutex::new(vec![]),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(SeqCst) {
                    break;
                }
                if let Ok(stream) = conn {
                    let st = st.clone();
                    std::thread::spawn(move || handle(&st, stream));
                }
            }
        });
        FakeServer {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            state,
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        let mut v = self.state.seen.lock().unwrap().clone();
        v.sort_by_key(|s| s.req.n);
        v
    }
    pub fn count(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }
    /// Everything the server found wrong with the requests it received.
    pub fn problems(&self) -> Vec<String> {
        self.state.problems.lock().unwrap().clone()
    }
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.state.stop.store(true, SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(
            self.base_url
                .trim_start_matches("http://")
                .trim_end_matches("/v1"),
        );
    }
}

fn handle(st: &State, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut head = String::new();
    let mut content_length = 0usize;
    let mut auth = None;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:") {
            auth = Some(line["authorization:".len()..].trim().to_string());
        }
        head.push_str(&line);
    }
    let mut body = vec![0u8; content_length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let now = st.in_flight.fetch_add(1, SeqCst) + 1;
    st.max_in_flight.fetch_max(now, SeqCst);
    let at = st.started.elapsed();
    let (status, extra_headers, reply) = respond(st, &head, &body, auth, at);
    let mut stream = stream;
    match reply {
        Reply::Hang(limit) => {
            // Hold the request until the client hangs up (or `limit` passes).
            let _ = stream.set_read_timeout(Some(Duration::from_millis(2)));
            let end = Instant::now() + limit;
            let mut buf = [0u8; 64];
            while Instant::now() < end {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            st.in_flight.fetch_sub(1, SeqCst);
        }
        Reply::Drop => {
            std::thread::sleep(st.opts.latency);
            st.in_flight.fetch_sub(1, SeqCst);
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        Reply::Body(text) => {
            std::thread::sleep(st.opts.latency);
            // Counted out before the answer leaves, so the client's next request never
            // overlaps this one in the count.
            st.in_flight.fetch_sub(1, SeqCst);
            let reason = match status {
                200 => "OK",
                400 => "Bad Request",
                401 => "Unauthorized",
                404 => "Not Found",
                429 => "Too Many Requests",
                _ => "Error",
            };
            let msg = format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n{text}",
                text.len()
            );
            let _ = stream.write_all(msg.as_bytes());
            let _ = stream.flush();
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
    }
}

enum Reply {
    Body(String),
    Hang(Duration),
    Drop,
}

fn problem(st: &State, p: String) {
    st.problems.lock().unwrap().push(p);
}

/// The frames of the frame list (`- frame 12 at 0.480 s`) and the frame a one-frame request
/// asks about (`Answer about frame 12 at ...`).
pub fn parse_frames(text: &str) -> (Vec<u64>, Option<u64>) {
    let mut frames = vec![];
    for line in text.lines() {
        if let Some(rest) = line.trim().strip_prefix("- frame ")
            && let Some(i) = rest.split_whitespace().next().and_then(|i| i.parse().ok())
            && !frames.contains(&i)
        {
            frames.push(i);
        }
    }
    let target = text.find("Answer about frame ").and_then(|p| {
        text[p + "Answer about frame ".len()..]
            .split_whitespace()
            .next()
            .and_then(|i| i.parse().ok())
    });
    (frames, target)
}

fn respond(
    st: &State,
    _head: &str,
    body: &[u8],
    auth: Option<String>,
    at: Duration,
) -> (u16, String, Reply) {
    let o = &st.opts;
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            problem(st, format!("request body is not JSON: {e}"));
            return (
                400,
                String::new(),
                Reply::Body(r#"{"error":{"message":"bad json"}}"#.into()),
            );
        }
    };
    if v["model"] != o.model.as_str() {
        problem(st, format!("model {} instead of {}", v["model"], o.model));
    }
    if auth != o.auth {
        problem(
            st,
            format!("authorization header {auth:?} instead of {:?}", o.auth),
        );
    }
    let user = v["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut text = String::new();
    let mut sizes = vec![];
    match &user["content"] {
        Value::String(s) => text.push_str(s),
        Value::Array(parts) => {
            for p in parts {
                match p["type"].as_str() {
                    Some("text") => {
                        text.push_str(p["text"].as_str().unwrap_or(""));
                        text.push('\n');
                    }
                    Some("image_url") => {
                        let url = p["image_url"]["url"].as_str().unwrap_or("");
                        match check_image(url, o.max_side) {
                            Ok(size) => sizes.push(size),
                            Err(e) => problem(st, e),
                        }
                    }
                    other => problem(st, format!("unknown content part type {other:?}")),
                }
            }
        }
        other => problem(st, format!("user content is {other}")),
    }
    if let Some(p) = &o.prompt_contains
        && !text.contains(p.as_str())
    {
        problem(st, format!("prompt does not contain {p:?}: {text}"));
    }
    let (frames, target) = parse_frames(&text);
    if frames.is_empty() && target.is_none() {
        problem(st, format!("no frame list in the prompt: {text}"));
    }
    if sizes.len() > o.max_images {
        problem(
            st,
            format!("{} images, more than {}", sizes.len(), o.max_images),
        );
    }
    if o.images_expected {
        let want = if target.is_some() { 1 } else { frames.len() };
        if sizes.len() != want {
            problem(st, format!("{} images for {want} frames", sizes.len()));
        }
    } else if !sizes.is_empty() {
        problem(
            st,
            format!("{} images where none were expected", sizes.len()),
        );
    }
    let json_mode = v.get("response_format").is_some();
    let mut seen = st.seen.lock().unwrap();
    let attempt = seen
        .iter()
        .filter(|s| s.req.frames == frames && s.req.target == target)
        .count();
    let req = Req {
        n: seen.len(),
        frames: frames.clone(),
        target,
        attempt,
    };
    let fault = if o.reject_response_format && json_mode {
        Fault::Status(400, "response_format is not supported by this server")
    } else {
        (o.policy)(&req)
    };
    seen.push(Seen {
        at,
        req: req.clone(),
        images: sizes.len(),
        sizes,
        text: text.clone(),
        body: v.clone(),
        fault: fault.clone(),
    });
    drop(seen);

    let answered: Vec<u64> = match target {
        Some(t) => vec![t],
        None => frames.clone(),
    };
    let content = match (&fault, target) {
        (Fault::MalformedContent, _) => "{\"frames\": [{\"index\": ".to_string(),
        (_, Some(t)) => json!({"analysis": format!("seen frame {t}")}).to_string(),
        (_, None) => {
            let mut entries: Vec<Value> = answered
                .iter()
                .map(|i| json!({"index": i, "analysis": format!("seen frame {i}")}))
                .collect();
            if fault == Fault::WrongCount {
                entries.pop();
            }
            json!({"frames": entries}).to_string()
        }
    };
    let completion = o.usage.1 * answered.len() as u64;
    let ok = json!({
        "id": format!("chatcmpl-{}", req.n),
        "object": "chat.completion",
        "model": o.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": o.usage.0, "completion_tokens": completion, "total_tokens": o.usage.0 + completion},
    })
    .to_string();
    let err = |m: &str| json!({"error": {"message": m, "type": "fake"}}).to_string();
    match fault {
        Fault::None | Fault::MalformedContent | Fault::WrongCount => {
            (200, String::new(), Reply::Body(ok))
        }
        Fault::Slow(d) => {
            std::thread::sleep(d);
            (200, String::new(), Reply::Body(ok))
        }
        Fault::TooMany { retry_after_s } => (
            429,
            format!("retry-after: {retry_after_s}\r\n"),
            Reply::Body(err("rate limited")),
        ),
        Fault::ServerError => (500, String::new(), Reply::Body(err("internal error"))),
        Fault::Status(code, m) => (code, String::new(), Reply::Body(err(m))),
        Fault::Hang(d) => (0, String::new(), Reply::Hang(d)),
        Fault::MalformedBody => (
            200,
            String::new(),
            Reply::Body("{\"choices\": [{\"mess".into()),
        ),
        Fault::Drop => (0, String::new(), Reply::Drop),
    }
}

/// Checks a `data:image/jpeg;base64,` URI: valid base64 of a JPEG (SOI, a frame header, EOI)
/// whose longer side is at most `max_side`. Returns its size.
pub fn check_image(url: &str, max_side: u32) -> Result<(u32, u32), String> {
    let b64 = url.strip_prefix("data:image/jpeg;base64,").ok_or_else(|| {
        format!(
            "image URL is not a base64 JPEG data URI: {}",
            &url[..url.len().min(40)]
        )
    })?;
    let bytes = base64_decode(b64).ok_or("image data is not valid base64")?;
    if bytes.len() < 4 || bytes[..2] != [0xFF, 0xD8] || bytes[bytes.len() - 2..] != [0xFF, 0xD9] {
        return Err("image data is not a complete JPEG".into());
    }
    let (w, h) = jpeg_size(&bytes).ok_or("JPEG without a frame header")?;
    if w == 0 || h == 0 || w.max(h) > max_side {
        return Err(format!("image is {w}x{h}, over the {max_side} px budget"));
    }
    Ok((w, h))
}

/// Width and height from a JPEG's SOFn segment.
pub fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    while i + 9 < b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let marker = b[i + 1];
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            let h = u16::from_be_bytes([b[i + 5], b[i + 6]]) as u32;
            let w = u16::from_be_bytes([b[i + 7], b[i + 8]]) as u32;
            return Some((w, h));
        }
        i += 2 + len;
    }
    None
}

/// Standard base64 with padding.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (k, chunk) in s.chunks(4).enumerate() {
        let last = k == s.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// A graph: `testsrc` (`count` frames of 320x180) → `llm-analyze` (with `params`, YAML flow
/// entries, and an optional `batch:` line) → `jsonl` at `out`.
pub fn graph(
    base_url: &str,
    count: u64,
    params: &str,
    batch: Option<&str>,
    out: &std::path::Path,
) -> String {
    let batch = batch
        .map(|b| format!("    batch: {b}\n"))
        .unwrap_or_default();
    format!(
        "name: llm-test\nnodes:\n  - id: src\n    kind: testsrc\n    params: {{ width: 320, height: 180, count: {count}, rate: 25 }}\n  - id: analyze\n    kind: llm-analyze\n{batch}    params: {{ base_url: \"{base_url}\", model: fake-vision, {params} }}\n    inputs: {{ frames: src.frames }}\n  - id: out\n    kind: jsonl\n    params: {{ path: \"{}\" }}\n    inputs: {{ items: analyze.records }}\n",
        out.display()
    )
}
