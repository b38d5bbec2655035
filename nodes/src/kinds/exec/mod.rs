//! `exec`: a plugin in any language. Runs a command and streams items through its standard
//! input and output, the way ffmpeg pipes do: raw RGB frames of a declared size (`format:
//! rgb24`) or one JSON object per line (`format: jsonl`). Without a connected input it is a
//! source that reads the command's output. A command that exits with an error, produces a
//! partial frame, or neither reads nor writes for `timeout_s` is an error naming the command
//! and quoting the end of its stderr.
//!
//! Output frame `k` takes the index, time, rate and annotations of input frame `k`; frames
//! beyond the inputs continue at the input's rate.
//!
//! The command runs in its own process group, so a Ctrl-C on the terminal reaches vidflow
//! only; vidflow then stops the command itself and reports the run as interrupted rather than
//! as a failure of the command.

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, bounded};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vidflow_engine::{
    Emitter, End, Frame, Input, NodeError, NodeKind, ParamType, Payload, PortType, Process, Rate,
    Runtime, Source, Temporal, params,
};

const FRAMES: usize = 0;
const RECORDS: usize = 1;
/// How often waits wake up to look at the run's stop flag.
const POLL: Duration = Duration::from_millis(20);
/// How long to wait for the stderr reader to catch up before quoting it in an error.
const STDERR_GRACE: Duration = Duration::from_millis(500);
/// Bytes written to the command per `write` call, so progress is seen within a large frame.
const WRITE_SLICE: usize = 1 << 16;

params! {
    /// The params of `exec`.
    pub struct ExecParams {
        /// program and arguments as a list, or one string run by `sh -c`
        command: CommandParam = required(ParamType::one_or_list(ParamType::Str)),
        /// what flows through the pipes
        format: String = default(ParamType::one_of(&["rgb24", "jsonl"]), "rgb24"),
        /// width of the frames the command writes (default: that of the input)
        width: Option<u32> = optional(ParamType::int_in(1, 16384)),
        /// height of the frames the command writes (default: that of the input)
        height: Option<u32> = optional(ParamType::int_in(1, 16384)),
        /// frame rate of the output when it is a source (default 25)
        rate: Option<f64> = optional(ParamType::float_in(0.001, 1000.0)),
        /// error when the command neither reads nor writes for this long
        timeout_s: f64 = default(ParamType::float_from(0.01), 30.0),
    }
}

/// The `command` param: one string run by `sh -c`, or the program and its arguments.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum CommandParam {
    Shell(String),
    Argv(Vec<String>),
}

pub fn kind() -> NodeKind {
    NodeKind::new(
        "exec",
        "Runs a command and pipes items through it: raw RGB24 frames (`format: rgb24`) or JSON lines (`format: jsonl`) on its stdin and stdout.",
        |ctx| {
            let with_input = ctx.connected_inputs.first().copied().unwrap_or(false);
            let cfg = Config::from_params(ctx.node_id, ctx.params()?, with_input)?;
            let (used, unused) = if cfg.jsonl {
                ("records", FRAMES)
            } else {
                ("frames", RECORDS)
            };
            if ctx.output_consumers.get(unused).copied().unwrap_or(0) > 0 {
                return Err(NodeError::input(format!(
                    "node `{}`: with `format: {}` the command's output comes out of `{used}`, but the graph reads `{}`, which would stay empty",
                    cfg.node,
                    if cfg.jsonl { "jsonl" } else { "rgb24" },
                    if cfg.jsonl { "frames" } else { "records" },
                )));
            }
            let node = Exec::start(cfg, with_input)?;
            Ok(if with_input {
                Runtime::Process(Box::new(node))
            } else {
                Runtime::Source(Box::new(node))
            })
        },
    )
    .optional_input("items", PortType::ANY, "frames (rgb24) or records (jsonl) written to the command's stdin")
    .output("frames", PortType::FRAMES, "frames read from stdout (format rgb24)")
    .output("records", PortType::RECORDS, "records read from stdout (format jsonl)")
    .params::<ExecParams>()
    .temporal_with(|cx| match cx.params::<ExecParams>() {
        Some(p) if p.format == "jsonl" => Temporal::Whole(
            "a `format: jsonl` command reads the whole stream and may keep state across records; a `format: rgb24` command is taken as per frame".into(),
        ),
        _ => Temporal::PerItem,
    })
    .example("- id: invert\n  kind: exec\n  params:\n    command: [python3, invert.py]\n    format: rgb24\n  inputs: { items: src.frames }\n")
}

#[derive(Clone)]
struct Config {
    node: String,
    argv: Vec<String>,
    /// The command as messages show it: as written for a string, else the joined list.
    shown: String,
    jsonl: bool,
    size: Option<(u32, u32)>,
    rate: Rate,
    timeout: Duration,
}

impl Config {
    fn from_params(node: &str, p: ExecParams, with_input: bool) -> Result<Config, NodeError> {
        let (argv, shown) = match p.command {
            CommandParam::Shell(s) => (vec!["sh".into(), "-c".into(), s.clone()], s),
            CommandParam::Argv(argv) => {
                let shown = argv.join(" ");
                (argv, shown)
            }
        };
        if argv.is_empty() || argv[0].is_empty() {
            return Err(NodeError::input(format!(
                "node `{node}`: `command` is empty"
            )));
        }
        let size = match (p.width, p.height) {
            (Some(w), Some(h)) => Some((w, h)),
            (None, None) => None,
            _ => {
                return Err(NodeError::input(format!(
                    "node `{node}`: give both `width` and `height`, or neither"
                )));
            }
        };
        let jsonl = p.format == "jsonl";
        if !jsonl && !with_input && size.is_none() {
            return Err(NodeError::input(format!(
                "node `{node}`: as a source (no `items` input) with `format: rgb24`, set `width` and `height` of the frames the command writes"
            )));
        }
        Ok(Config {
            node: node.to_string(),
            argv,
            shown,
            jsonl,
            size,
            rate: Rate::from_fps(p.rate.unwrap_or(25.0)),
            timeout: Duration::from_secs_f64(p.timeout_s),
        })
    }
    fn shown(&self) -> &str {
        &self.shown
    }
}

/// What the reader thread gets from stdout.
enum Out {
    Bytes(Vec<u8>),
    Record(serde_json::Value),
    Error(String),
}

/// Index, time, rate and annotations of an input frame not yet matched by an output frame.
type Stamp = (u64, f64, Rate, Option<Arc<serde_json::Value>>);

struct Exec {
    cfg: Config,
    child: Child,
    /// Chunks for the writer thread; dropping it closes the command's stdin.
    stdin: Option<Sender<Arc<Vec<u8>>>>,
    writer: Option<JoinHandle<Result<(), String>>>,
    /// Bytes the writer thread has handed to the command so far (progress for `timeout_s`).
    written: Arc<AtomicU64>,
    outputs: Receiver<Out>,
    /// The frame size the reader expects, set once known (from params or the first input).
    size: Arc<Mutex<Option<(u32, u32)>>>,
    stderr: Arc<Mutex<String>>,
    /// Disconnected once the stderr reader has seen the end of the command's stderr.
    stderr_done: Receiver<()>,
    pending: VecDeque<Stamp>,
    emitted: u64,
    last: Option<(u64, f64, Rate)>,
}

impl Exec {
    fn start(cfg: Config, with_input: bool) -> Result<Exec, NodeError> {
        let mut command = Command::new(&cfg.argv[0]);
        command
            .args(&cfg.argv[1..])
            .stdin(if with_input {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(unix)]
        {
            // Its own process group: a terminal Ctrl-C goes to vidflow, which stops the command.
            use std::os::unix::process::CommandExt as _;
            command.process_group(0);
        }
        let mut child = command.spawn().map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                "; is it installed and on PATH?"
            } else {
                ""
            };
            NodeError::input(format!(
                "node `{}`: cannot start `{}`: {e}{hint}",
                cfg.node,
                cfg.shown()
            ))
        })?;

        let stderr = Arc::new(Mutex::new(String::new()));
        let (stderr_tx, stderr_done) = bounded::<()>(0);
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let tail = stderr.clone();
        std::thread::spawn(move || {
            let _done = stderr_tx; // dropped at the end of the stream
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
                    let cut = (cut..t.len())
                        .find(|i| t.is_char_boundary(*i))
                        .unwrap_or(t.len());
                    t.drain(..cut);
                }
            }
        });

        let written = Arc::new(AtomicU64::new(0));
        let (stdin, writer) = if with_input {
            let (tx, rx) = bounded::<Arc<Vec<u8>>>(4);
            let mut pipe = child.stdin.take().expect("stdin is piped");
            let progress = written.clone();
            let handle = std::thread::spawn(move || -> Result<(), String> {
                for chunk in rx {
                    for piece in chunk.chunks(WRITE_SLICE) {
                        pipe.write_all(piece).map_err(|e| e.to_string())?;
                        progress.fetch_add(piece.len() as u64, Relaxed);
                    }
                }
                pipe.flush().map_err(|e| e.to_string())
                // `pipe` drops here: the command sees the end of its input.
            });
            (Some(tx), Some(handle))
        } else {
            (None, None)
        };

        let size = Arc::new(Mutex::new(cfg.size));
        let (out_tx, out_rx) = bounded::<Out>(16);
        let stdout = child.stdout.take().expect("stdout is piped");
        let (jsonl, reader_size) = (cfg.jsonl, size.clone());
        std::thread::spawn(move || {
            if jsonl {
                read_lines(stdout, out_tx)
            } else {
                read_frames(stdout, out_tx, reader_size)
            }
        });
        Ok(Exec {
            cfg,
            child,
            stdin,
            writer,
            written,
            outputs: out_rx,
            size,
            stderr,
            stderr_done,
            pending: VecDeque::new(),
            emitted: 0,
            last: None,
        })
    }

    /// Stops the command (if it still runs) and builds the error: the command, what went
    /// wrong, how it exited when it already had, and the end of its stderr.
    fn fail(&mut self, what: String) -> NodeError {
        let exited = match self.child.try_wait() {
            Ok(Some(status)) if !status.success() => format!(" (it {})", exit_text(status)),
            _ => String::new(),
        };
        self.report(what, exited)
    }

    /// [`Exec::fail`] for an exit status that already says how the command ended.
    fn fail_exit(&mut self, status: ExitStatus) -> NodeError {
        self.report(exit_text(status), String::new())
    }

    fn report(&mut self, what: String, exited: String) -> NodeError {
        self.kill();
        // The stderr pipe closes when the command is gone; give the reader a moment to finish.
        let _ = self.stderr_done.recv_timeout(STDERR_GRACE);
        let stderr = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .trim()
            .to_string();
        let tail = if stderr.is_empty() {
            String::new()
        } else {
            format!("; its stderr ends with:\n{stderr}")
        };
        NodeError::runtime(format!(
            "node `{}`: command `{}` {what}{exited}{tail}",
            self.cfg.node,
            self.cfg.shown()
        ))
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // The whole process group: a shell's children (`sh -c "a | b"`) must not outlive it.
            #[cfg(unix)]
            // SAFETY: kill(2) with a negative pid signals the group we created at spawn.
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    fn deliver(&mut self, item: Out, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        match item {
            Out::Error(e) => Err(self.fail(e)),
            Out::Record(r) => out.emit(RECORDS, Payload::record(r)),
            Out::Bytes(data) => {
                let (w, h) = self
                    .size
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("size known before frames are read");
                let (index, pts, rate, meta) = match self.pending.pop_front() {
                    Some(stamp) => stamp,
                    None => match self.last {
                        Some((i, t, r)) => (i + 1, t + 1.0 / r.fps(), r, None),
                        None => (
                            self.emitted,
                            self.emitted as f64 / self.cfg.rate.fps(),
                            self.cfg.rate,
                            None,
                        ),
                    },
                };
                self.last = Some((index, pts, rate));
                self.emitted += 1;
                let mut frame = Frame::new(index, pts, rate, w, h, data);
                frame.meta = meta;
                out.emit(FRAMES, Payload::Frame(frame))
            }
        }
    }

    /// Emits whatever the command has written so far, without waiting. True if anything came.
    fn drain_ready(&mut self, out: &mut Emitter<'_>) -> Result<bool, NodeError> {
        let mut any = false;
        while let Ok(item) = self.outputs.try_recv() {
            any = true;
            self.deliver(item, out)?;
        }
        Ok(any)
    }

    fn secs(&self) -> f64 {
        self.cfg.timeout.as_secs_f64()
    }

    /// The next output item, `None` at the end of the command's stdout. Fails when the command
    /// neither writes nor reads for `timeout`; returns `Stopped` as soon as the run stops.
    fn next_output(&mut self, out: &Emitter<'_>) -> Result<Option<Out>, NodeError> {
        let mut seen = self.written.load(Relaxed);
        let mut quiet_since = Instant::now();
        loop {
            if out.stopping() {
                return Err(NodeError::Stopped);
            }
            match self.outputs.recv_timeout(POLL) {
                Ok(item) => return Ok(Some(item)),
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
                Err(RecvTimeoutError::Timeout) => {
                    let now = self.written.load(Relaxed);
                    if now != seen {
                        (seen, quiet_since) = (now, Instant::now());
                    } else if quiet_since.elapsed() >= self.cfg.timeout {
                        return Err(self.fail(format!(
                            "produced no output for {:.1} s; it may be hanging (raise `timeout_s` if it is just slow)",
                            self.secs()
                        )));
                    }
                }
            }
        }
    }

    /// Waits for the command to exit after closing its stdout.
    fn wait_exit(&mut self, out: &Emitter<'_>) -> Result<ExitStatus, NodeError> {
        let deadline = Instant::now() + self.cfg.timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if out.stopping() => return Err(NodeError::Stopped),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Ok(None) => {
                    return Err(self.fail(format!(
                        "closed its output but did not exit within {:.1} s",
                        self.secs()
                    )));
                }
                Err(e) => return Err(self.fail(format!("could not be waited for: {e}"))),
            }
        }
    }

    /// Reads the command's output to its end and checks how it exited.
    fn drain_to_end(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        while let Some(item) = self.next_output(out)? {
            self.deliver(item, out)?;
        }
        let status = self.wait_exit(out)?;
        if status.success() {
            Ok(())
        } else {
            Err(self.fail_exit(status))
        }
    }

    /// The writer thread's outcome, once it has ended (the command has exited by now, so its
    /// stdin is closed and the thread cannot stay blocked, unless a child of the command
    /// still holds the pipe).
    fn join_writer(&mut self) -> Result<(), String> {
        let Some(handle) = self.writer.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + self.cfg.timeout;
        while !handle.is_finished() {
            if Instant::now() >= deadline {
                return Err("its input pipe is still held open".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        handle
            .join()
            .unwrap_or_else(|_| Err("the writer thread panicked".into()))
    }

    /// Hands bytes to the writer thread, emitting the command's output meanwhile so that it
    /// never blocks on a full stdout. Fails when the command stops reading.
    fn write(&mut self, bytes: Arc<Vec<u8>>, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let mut bytes = bytes;
        let mut seen = self.written.load(Relaxed);
        let mut quiet_since = Instant::now();
        loop {
            if self.drain_ready(out)? {
                quiet_since = Instant::now();
            }
            if out.stopping() {
                return Err(NodeError::Stopped);
            }
            let tx = self.stdin.as_ref().expect("a process node has stdin");
            match tx.send_timeout(bytes, POLL) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(b)) => {
                    bytes = b;
                    let now = self.written.load(Relaxed);
                    if now != seen {
                        (seen, quiet_since) = (now, Instant::now());
                    } else if quiet_since.elapsed() >= self.cfg.timeout {
                        return Err(self.fail(format!(
                            "did not read its input for {:.1} s; it may be hanging",
                            self.secs()
                        )));
                    }
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    // The writer thread ended with an error: the command closed its stdin,
                    // most likely by exiting. Say how it exited when it did.
                    let why = self.join_writer().err().unwrap_or_default();
                    let deadline = Instant::now() + Duration::from_secs(1).min(self.cfg.timeout);
                    while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    return Err(match self.child.try_wait() {
                        Ok(Some(status)) if !status.success() => self.fail_exit(status),
                        Ok(Some(_)) => {
                            self.fail(format!("exited before reading all its input ({why})"))
                        }
                        _ => self.fail(format!("stopped reading its input ({why})")),
                    });
                }
            }
        }
    }

    /// Maps errors to `Stopped` while the run is stopping: the command was stopped by us.
    fn settle<T>(&mut self, r: Result<T, NodeError>, out: &Emitter<'_>) -> Result<T, NodeError> {
        match r {
            Err(_) if out.stopping() => {
                self.kill();
                Err(NodeError::Stopped)
            }
            Err(NodeError::Stopped) => {
                self.kill();
                Err(NodeError::Stopped)
            }
            r => r,
        }
    }

    fn process_items(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            let bytes = match (&item, self.cfg.jsonl) {
                (Payload::Frame(f), false) => {
                    let expected = *self
                        .size
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert((f.width, f.height));
                    if self.cfg.size.is_none() && expected != (f.width, f.height) {
                        return Err(NodeError::input(format!(
                            "node `{}`: {} is {}x{}, but earlier frames were {}x{}; set `width` and `height` of the command's output",
                            self.cfg.node,
                            item.describe(),
                            f.width,
                            f.height,
                            expected.0,
                            expected.1
                        )));
                    }
                    self.pending
                        .push_back((f.index, f.pts, f.rate, f.meta.clone()));
                    f.data.clone()
                }
                (_, true) => {
                    let mut line = serde_json::to_vec(&crate::output::line_for(&item))
                        .expect("JSON value serialises");
                    line.push(b'\n');
                    Arc::new(line)
                }
                (other, false) => {
                    return Err(NodeError::input(format!(
                        "node `{}`: `format: rgb24` takes frames, got {}; use `format: jsonl` for records",
                        self.cfg.node,
                        other.describe()
                    )));
                }
            };
            self.write(bytes, out)?;
        }
        self.drain_ready(out).map(|_| ())
    }

    fn finish_complete(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        // Closing stdin tells the command its input is over. Its remaining output is read
        // while the writer thread still hands it queued input, so neither side can block.
        self.stdin = None;
        self.drain_to_end(out)?;
        match self.join_writer() {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(format!("exited before reading all its input ({e})"))),
        }
    }
}

/// "exited with code 3", "was killed by signal 9".
fn exit_text(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(sig) = status.signal() {
            return format!("was killed by signal {sig}");
        }
    }
    format!("ended with {status}")
}

fn read_lines(stdout: impl Read, tx: Sender<Out>) {
    for line in BufReader::new(stdout).lines() {
        let msg = match line {
            Ok(l) if l.trim().is_empty() => continue,
            Ok(l) => match serde_json::from_str(&l) {
                Ok(v) => Out::Record(v),
                Err(e) => Out::Error(format!(
                    "wrote a line that is not JSON ({e}): {}",
                    l.chars().take(120).collect::<String>()
                )),
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
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(Out::Error(format!("output could not be read: {e}")));
                return;
            }
        }
        // The size is known by now: from params, or from the first input frame written.
        let Some((w, h)) = *size.lock().unwrap_or_else(|e| e.into_inner()) else {
            let _ = tx.send(Out::Error(
                "wrote output before any frame size was known; set `width` and `height`".into(),
            ));
            return;
        };
        let len = Frame::byte_len(w, h);
        let mut buf = vec![0u8; len];
        buf[0] = first[0];
        let mut got = 1;
        while got < len {
            match stdout.read(&mut buf[got..]) {
                Ok(0) => {
                    let _ = tx.send(Out::Error(format!(
                        "ended with a partial frame ({got} of {len} bytes for {w}x{h} RGB24)"
                    )));
                    return;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
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
        let r = self.process_items(input, out);
        self.settle(r, out)
    }

    fn finish(&mut self, out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
        if end == End::Stopped {
            self.kill();
            return Ok(());
        }
        let r = self.finish_complete(out);
        self.settle(r, out)
    }
}

impl Source for Exec {
    fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let r = self.drain_to_end(out);
        self.settle(r, out)
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        self.stdin = None;
        self.kill();
    }
}
