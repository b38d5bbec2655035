//! Helpers shared by the CLI test files that work on media: a scratch folder per test, the
//! ffmpeg CLI to make clips, ffprobe to read results, and the `vidflow` binary.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// `prefix` names the test file, `name` the test.
pub fn tmp(prefix: &str, name: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("vidflow-{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

pub fn ffmpeg(args: &[&str]) {
    ffmpeg_stdout(args);
}

/// Runs the ffmpeg CLI quietly (overwriting outputs), asserts it succeeded and returns what
/// it wrote to stdout.
fn ffmpeg_stdout(args: &[&str]) -> Vec<u8> {
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

pub fn vidflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vidflow"))
        .args(args)
        .output()
        .expect("vidflow runs")
}

/// A graph file of the repository, by name (`upscale` → `graphs/upscale.yaml`).
pub fn graph(name: &str) -> String {
    format!("{}/graphs/{name}.yaml", env!("CARGO_MANIFEST_DIR"))
}

/// `vidflow run` must have succeeded; its stderr otherwise.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pixels of an image file (any format ffmpeg reads) as packed RGB24.
pub fn rgb24(path: &Path) -> Vec<u8> {
    let path = path.to_str().expect("test paths are UTF-8");
    ffmpeg_stdout(&["-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
}

/// The files of `dir`, sorted by name.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}
