//! Helpers shared by the test modules: fixtures and `.npy` arrays, comparisons of pixels and
//! floats, temporary folders, the ffmpeg and ffprobe CLIs, run reports and JSON-lines files.
//! Each feature set uses a part of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use vidflow_engine::exec::RunReport;
use vidflow_engine::{CheckedGraph, Mode, Registry, SourceFile, check_source, parse_overrides};

// ---- fixtures ----

/// A file of `nodes/tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A float32 little-endian C-order `.npy` fixture (format 1 or 2): (shape, data).
pub fn read_npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    let path = fixture(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{name}: not a .npy file");
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{name}: {header}");
    assert!(
        header.contains("'fortran_order': False"),
        "{name}: {header}"
    );
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{name}");
    (shape, data)
}

// ---- comparisons ----

/// The largest absolute difference of two arrays of the same length.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// PSNR of two 8-bit images in dB; infinite where they are equal.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

// ---- temporary folders ----

/// A fresh, empty folder for one test, `vidflow-{name}-{pid}-{n}` in the system's temporary
/// folder: unique to each call, also between modules that use the same name. Not removed.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "vidflow-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// A [`temp_dir`] removed when the test passes (kept for a look when it fails).
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

/// A fresh [`TmpDir`].
pub fn tmp(name: &str) -> TmpDir {
    TmpDir(temp_dir(name))
}

// ---- the ffmpeg and ffprobe CLIs ----

/// Runs the ffmpeg CLI (quiet, overwriting); panics with its stderr when it fails.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("the ffmpeg CLI runs");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What ffprobe prints for `args` on `path`; panics with its stderr when it fails.
pub fn ffprobe(args: &[&str], path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe {args:?} {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

// ---- runs and their output ----

/// Checks graph `text` (named `name`, with `--set` overrides `sets`) for a run; panics with
/// the rendered diagnostics when it does not check.
pub fn load(name: &str, text: &str, sets: &[String], registry: &Registry) -> CheckedGraph {
    let overrides = parse_overrides(sets).unwrap();
    check_source(SourceFile::new(name, text), registry, &overrides, Mode::Run)
        .unwrap_or_else(|e| panic!("{}", e.render()))
}

/// Runs a checked graph with the CPU as the compute device.
#[cfg(feature = "neural")]
pub fn run_on_cpu(graph: &CheckedGraph) -> RunReport {
    let shared = vidflow_engine::node::Shared::default();
    shared.insert(vidflow_nodes::gpu::device::DevicePreference::Cpu);
    vidflow_engine::exec::run(
        graph,
        vidflow_engine::exec::RunOptions {
            shared: std::sync::Arc::new(shared),
            ..Default::default()
        },
    )
}

/// Asserts that a run succeeded, with its failure as the message.
pub fn assert_ok(report: &RunReport) {
    assert!(
        report.ok(),
        "run failed: {:?}",
        report.failure.as_ref().map(|f| f.to_string())
    );
}

/// The records of a JSON-lines file.
pub fn read_records(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}
