//! `exec`: a plugin in any language. Runs a command and streams items through its standard
//! input and output, the way ffmpeg pipes do: raw RGB frames of a declared size (`format:
//! rgb24`) or one JSON object per line (`format: jsonl`). Without a connected input it is a
//! source that reads the command's output. A command that exits with an error, produces a
//! partial frame, or goes silent for `timeout_s` is an error naming the command.

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, bounded};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vidflow_engine::{End, Frame, Input, NodeError, NodeKind, ParamSpec, ParamType, Payload, PortType, Process, Rate, Runtime, Source, exec::Emitter};

const FRAMES: usize = 0;
const RECORDS: usize = 1;

pub fn kind() -> NodeKind {
    NodeKind::new(
        "exec",
        "Runs a command and pipes items through it: raw RGB24 frames (`format: rgb24`) or JSON lines (`format: jsonl`) on its stdin and stdout.",
        |ctx| {
            let cfg = Config::from_params(ctx.node_id, ctx.params)?;
            if ctx.connected_inputs.first().copied().unwrap_or(false) {
                Ok(Runtime::Process(Box::new(Exec::start(cfg, true)?)))
            } else {
                Ok(Runtime::Source(Box::new(Exec::start(cfg, false)?)))
            }
        },
    )
    .optional_input("items", PortType::ANY, "frames (rgb24) or records (jsonl) written to the command's stdin")
    .output("frames", PortType::FRAMES, "frames read from stdout (format rgb24)")
    .output("records", PortType::RECORDS, "records read from stdout (format jsonl)")
    .param(ParamSpec::required("command", ParamType::one_or_list(ParamType::Str), "program and arguments as a list, or one string run by `sh -c`"))
    .param(ParamSpec::with_default("format", ParamType::Enum(vec!["rgb24", "jsonl"]), "rgb24", "what flows through the pipes"))
    .param(ParamSpec::optional("width", ParamType::Int { min: Some(1), max: Some(16384) }, "width of the frames the command writes (default: that of the input)"))
    .param(ParamSpec::optional("height", ParamType::Int { min: Some(1), max: Some(16384) }, "height of the frames the command writes (default: that of the input)"))
    .param(ParamSpec::optional("rate", ParamType::Float { min: Some(0.001), max: Some(1000.0) }, "frame rate of the output when it is a source (default 25)"))
    .param(ParamSpec::with_default("timeout_s", ParamType::Float { min: Some(0.01), max: None }, 30.0, "error when the command neither reads nor writes for this long"))
    .example("- id: invert\n  kind: exec\n  params:\n    command: [python3, invert.py]\n    format: rgb24\n  inputs: { items: src.frames }\n")
}

#[derive(Clone)]
struct Config {
    node: String,
    argv: Vec<String>,
    jsonl: bool,
    size: Option<(u32, u32)>,
    rate: Rate,
    timeout: Duration,
}

impl Config {
    fn from_params(node: &str, p: &vidflow_engine::Params) -> Result<Config, NodeError> {
        let argv = match p.get("command") {
            Some(serde_json::Value::String(s)) => vec!["sh".into(), "-c".into(), s.clone()],
            _ => p.parse::<Vec<String>>("command")?,
        };
        if argv.is_empty() {
            return Err(NodeError::input(format!("node `{node}`: `command` is empty")));
        }
        let size = match (p.opt_u64("width"), p.opt_u64("height")) {
            (Some(w), Some(h)) => Some((w as u32, h as u32)),
            (None, None) => None,
            _ => return Err(NodeError::input(format!("node `{node}`: give both `width` and `height`, or neither"))),
        };
        Ok(Config {
            node: node.to_string(),
            argv,
            jsonl: p.str("format")? == "jsonl",
            size,
            rate: Rate::from_fps(p.opt_f64("rate").unwrap_or(25.0)),
            timeout: Duration::from_secs_f64(p.f64("timeout_s")?),
        })
    }
    fn shown(&self) -> String {
        self.argv.join(" ")
    }
}

/// What the reader thread gets from stdout.
enum Out {
    Bytes(Vec<u8>),
    Record(serde_json::Value),
    Error(String),
}

struct Exec {
    cfg: Config,
    child: Child,
    stdin: Option<Sender<Vec<u8>>>,
    writer: Option<JoinHandle<Result<(), String>>>,
    outputs: Receiver<Out>,
    /// The frame size the reader expects, set once known (from params or the first input).
    size: Arc<Mutex<Option<(u32, u32)>>>,
    stderr: Arc<Mutex<String>>,
    /// Index/time of input frames not yet matched by an output frame.
    pending: VecDeque<(u64, f64, Rate)>,
    emitted: u64,
    last: Option<(u64, f64, Rate)>,
}

impl Exec {
    fn start(cfg: Config, with_input: bool) -> Result<Exec, NodeError> {
        let mut child = Command::new(&cfg.argv[0])
            .args(&cfg.argv[1..])
            .stdin(if with_input { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NodeError::input(format!("node `{}`: cannot start `{}`: {e}", cfg.node, cfg.shown())))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("piped");
        let tail = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.push_str(&String::from_utf8_lossy(&buf[..n]));
                // Keep the last few KiB: enough to show why a command failed.
                if t.len() > 8192 {
                    let cut = t.len() - 4096;
                    let cut = (cut..t.len()).find(|i| t.is_char_boundary(*i)).unwrap_or(t.len());
                    t.drain(..cut);
                }
            }
        });
        let (stdin, writer) = if with_input {
            let (tx, rx) = bounded::<Vec<u8>>(4);
            let mut pipe = child.stdin.take().expect("piped");
            let handle = std::thread::spawn(move || -> Result<(), String> {
                for chunk in rx {
                    pipe.write_all(&chunk).map_err(|e| e.to_string())?;
                }
                pipe.flush().map_err(|e| e.to_string())
            });
            (Some(tx), Some(handle))
        } else {
            (None, None)
        };
        let size = Arc::new(Mutex::new(cfg.size));
        let (out_tx, out_rx) = bounded::<Out>(16);
        let stdout = child.stdout.take().expect("piped");
        let (jsonl, reader_size) = (cfg.jsonl, size.clone());
        std::thread::spawn(move || {
            if jsonl {
                read_lines(stdout, out_tx)
            } else {
                read_frames(stdout, out_tx, reader_size)
            }
        });
        Ok(Exec { cfg, child, stdin, writer, outputs: out_rx, size, stderr, pending: VecDeque::new(), emitted: 0, last: None })
    }

    fn fail(&mut self, what: String) -> NodeError {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr.lock().unwrap_or_else(|e| e.into_inner()).trim().to_string();
        let tail = if stderr.is_empty() { String::new() } else { format!("; its stderr ends with:\n{stderr}") };
        NodeError::runtime(format!("node `{}`: command `{}` {what}{tail}", self.cfg.node, self.cfg.shown()))
    }

    fn deliver(&mut self, item: Out, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        match item {
            Out::Error(e) => Err(self.fail(e)),
            Out::Record(r) => out.emit(RECORDS, Payload::record(r)),
            Out::Bytes(data) => {
                let (w, h) = self.size.lock().unwrap_or_else(|e| e.into_inner()).expect("size known before frames are read");
                // Output frame k takes the index and time of input frame k; extra frames
                // continue at the input's rate.
                let (index, pts, rate) = match self.pending.pop_front() {
                    Some(m) => m,
                    None => match self.last {
                        Some((i, t, r)) => (i + 1, t + 1.0 / r.fps(), r),
                        None => (self.emitted, self.emitted as f64 / self.cfg.rate.fps(), self.cfg.rate),
                    },
                };
                self.last = Some((index, pts, rate));
                self.emitted += 1;
                out.emit(FRAMES, Payload::Frame(Frame::new(index, pts, rate, w, h, data)))
            }
        }
    }

    /// Emits whatever the command has written so far, without waiting.
    fn drain_ready(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        while let Ok(item) = self.outputs.try_recv() {
            self.deliver(item, out)?;
        }
        Ok(())
    }

    /// Reads the command's output to its end, failing if it goes silent for `timeout`.
    fn drain_to_end(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        loop {
            match self.outputs.recv_timeout(self.cfg.timeout) {
                Ok(item) => self.deliver(item, out)?,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.fail(format!("produced no output for {:.1} s; it may be hanging (raise `timeout_s` if it is just slow)", self.cfg.timeout.as_secs_f64())));
                }
            }
        }
        let deadline = Instant::now() + self.cfg.timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(self.fail(format!("exited with {status}"))),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) => return Err(self.fail(format!("closed its output but did not exit within {:.1} s", self.cfg.timeout.as_secs_f64()))),
                Err(e) => return Err(self.fail(format!("could not be waited for: {e}"))),
            }
        }
    }

    fn write(&mut self, bytes: Vec<u8>, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let started = Instant::now();
        let mut bytes = bytes;
        loop {
            self.drain_ready(out)?;
            let tx = self.stdin.as_ref().expect("a process node has stdin");
            match tx.send_timeout(bytes, Duration::from_millis(20)) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(b)) if started.elapsed() < self.cfg.timeout => bytes = b,
                Err(SendTimeoutError::Timeout(_)) => {
                    return Err(self.fail(format!("did not read its input for {:.1} s; it may be hanging", self.cfg.timeout.as_secs_f64())));
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    let why = self.writer.take().and_then(|h| h.join().ok()).and_then(Result::err).unwrap_or_default();
                    return Err(self.fail(format!("stopped reading its input ({why})")));
                }
            }
        }
    }
}

fn read_lines(stdout: impl Read, tx: Sender<Out>) {
    for line in BufReader::new(stdout).lines() {
        let msg = match line {
            Ok(l) if l.trim().is_empty() => continue,
            Ok(l) => match serde_json::from_str(&l) {
                Ok(v) => Out::Record(v),
                Err(e) => Out::Error(format!("wrote a line that is not JSON ({e}): {}", l.chars().take(120).collect::<String>())),
            },
            Err(e) => Out::Error(format!("output could not be read: {e}")),
        };
        let stop = matches!(msg, Out::Error(_));
        if tx.send(msg).is_err() || stop {
            return;
        }
    }
}

fn read_frames(mut stdout: impl Read, tx: Sender<Out>, size: Arc<Mutex<Option<(u32, u32)>>>) {
    loop {
        let mut first = [0u8; 1];
        match stdout.read(&mut first) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Out::Error(format!("output could not be read: {e}")));
                return;
            }
        }
        // The size is known by now: from params, or from the first input frame written.
        let Some((w, h)) = *size.lock().unwrap_or_else(|e| e.into_inner()) else {
            let _ = tx.send(Out::Error("wrote output before any frame size was known; set `width` and `height`".into()));
            return;
        };
        let len = Frame::byte_len(w, h);
        let mut buf = vec![0u8; len];
        buf[0] = first[0];
        let mut got = 1;
        while got < len {
            match stdout.read(&mut buf[got..]) {
                Ok(0) => {
                    let _ = tx.send(Out::Error(format!("ended with a partial frame ({got} of {len} bytes for {w}x{h} RGB24)")));
                    return;
                }
                Ok(n) => got += n,
                Err(e) => {
                    let _ = tx.send(Out::Error(format!("output could not be read: {e}")));
                    return;
                }
            }
        }
        if tx.send(Out::Bytes(buf)).is_err() {
            return;
        }
    }
}

impl Process for Exec {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            let bytes = match (&item, self.cfg.jsonl) {
                (Payload::Frame(f), false) => {
                    self.size.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert((f.width, f.height));
                    self.pending.push_back((f.index, f.pts, f.rate));
                    f.data.as_ref().clone()
                }
                (_, true) => {
                    let mut line = serde_json::to_vec(&crate::jsonl::line_for(&item)).expect("JSON value serialises");
                    line.push(b'\n');
                    line
                }
                (other, false) => {
                    return Err(NodeError::input(format!("node `{}`: `format: rgb24` takes frames, got {}", self.cfg.node, other.describe())));
                }
            };
            self.write(bytes, out)?;
        }
        self.drain_ready(out)
    }

    fn finish(&mut self, out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
        if end == End::Stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return Ok(());
        }
        // Closing stdin tells the command its input is over.
        self.stdin = None;
        if let Some(Err(e)) = self.writer.take().map(|h| h.join().unwrap_or(Ok(()))) {
            return Err(self.fail(format!("stopped reading its input ({e})")));
        }
        self.drain_to_end(out)
    }
}

impl Source for Exec {
    fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        if !self.cfg.jsonl && self.cfg.size.is_none() {
            return Err(NodeError::input(format!("node `{}`: as a source with `format: rgb24`, set `width` and `height`", self.cfg.node)));
        }
        let r = self.drain_to_end(out);
        if matches!(r, Err(NodeError::Stopped)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        r
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
