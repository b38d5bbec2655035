//! Writing outputs safely: a file is written under a temporary name beside its destination and
//! renamed into place only when complete, so a failed or interrupted run never leaves a file
//! that looks finished. Also the JSON line an item is written as ([`line_for`]), shared by
//! the `jsonl` sink and `exec`'s stdin.

use serde_json::json;
use std::path::{Path, PathBuf};
use vidflow_engine::Payload;

/// Makes `.{name}.{pid}-{n}.partial` in `dir` with `create` (which must fail when it exists),
/// trying the next `n` until one is new: every run writes its own temporary file, so two runs
/// writing the same output never write into one file, and the last to finish replaces the
/// output whole.
pub fn unique_temp(
    dir: &Path,
    name: &str,
    create: impl Fn(&Path) -> std::io::Result<()>,
) -> std::io::Result<PathBuf> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = dir.join(format!(".{name}.{}-{n}.partial", std::process::id()));
        match create(&temp) {
            Ok(()) => return Ok(temp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A destination path and its temporary sibling (`out.mp4` → `.out.mp4.<pid>-<n>.partial`),
/// created empty, for this run alone.
#[derive(Debug, Clone)]
pub struct AtomicPath {
    pub target: PathBuf,
    pub temp: PathBuf,
}

impl AtomicPath {
    /// Checks that the destination folder exists and is writable, before any work is done.
    pub fn new(
        node: &str,
        target: impl AsRef<Path>,
    ) -> Result<AtomicPath, vidflow_engine::NodeError> {
        let target = target.as_ref().to_path_buf();
        let name = target.file_name().ok_or_else(|| {
            vidflow_engine::NodeError::input(format!(
                "node `{node}`: output path `{}` names no file",
                target.display()
            ))
        })?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(vidflow_engine::NodeError::input(format!(
                "node `{node}`: cannot write `{}`: folder `{}` does not exist; create it or choose another output path",
                target.display(),
                dir.display()
            )));
        }
        if target.is_dir() {
            return Err(vidflow_engine::NodeError::input(format!(
                "node `{node}`: cannot write `{}`: it is a folder; give a file name",
                target.display()
            )));
        }
        let temp = unique_temp(&dir, &name.to_string_lossy(), |p| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p)
                .map(drop)
        })
        .map_err(|e| {
            vidflow_engine::NodeError::input(format!(
                "node `{node}`: cannot write `{}` (a temporary file in folder `{}`): {e}",
                target.display(),
                dir.display()
            ))
        })?;
        Ok(AtomicPath { target, temp })
    }
    /// Moves the finished temporary file into place, its data on disk first, so a crash
    /// never leaves the real name on a file whose blocks were not written (and a full disk
    /// that only shows at the flush is an error here, not a silently short file).
    pub fn commit(&self, node: &str) -> Result<(), vidflow_engine::NodeError> {
        std::fs::File::open(&self.temp)
            .and_then(|f| f.sync_all())
            .map_err(|e| {
                vidflow_engine::NodeError::runtime(format!(
                    "node `{node}`: cannot flush the output `{}` to disk: {e}",
                    self.temp.display()
                ))
            })?;
        std::fs::rename(&self.temp, &self.target).map_err(|e| {
            vidflow_engine::NodeError::runtime(format!(
                "node `{node}`: cannot move the finished output to `{}`: {e}",
                self.target.display()
            ))
        })
    }
    /// Removes the temporary file of a failed run.
    pub fn abandon(&self) {
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// The JSON line written for an item.
pub fn line_for(item: &Payload) -> serde_json::Value {
    match item {
        Payload::Record(r) => (**r).clone(),
        Payload::Frame(f) => {
            json!({"type": "frame", "index": f.index, "pts": f.pts, "width": f.width, "height": f.height, "rate": f.rate.to_string()})
        }
        Payload::Audio(a) => {
            json!({"type": "audio", "pts": a.pts, "sample_rate": a.sample_rate, "channels": a.channels, "samples": a.samples.len()})
        }
        Payload::Custom(c) => json!({"type": "custom", "description": c.describe()}),
    }
}
