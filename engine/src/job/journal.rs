//! The journal of a job directory: `job.json` says what the job is (a hash of the checked
//! graph, of every input and model file, the chunks), and `chunks/NNNNN.json` records one
//! finished chunk (its range, frames, output files with size and SHA-256, seconds taken).
//!
//! Every file is written to a unique temporary name, fsynced, renamed into place and the folder
//! fsynced, so a crash at any moment leaves either the old file or the new one, never half of
//! one. A record is written only after the chunk's outputs are in place, and trusted on resume
//! only if they still have the recorded size and hash: a half-written, truncated or edited
//! output means the chunk runs again.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub const JOB_FILE: &str = "job.json";
pub const CHUNKS_DIR: &str = "chunks";
/// The journal's format; a job directory of another version is refused.
pub const VERSION: u32 = 1;

/// What a job is: fixed when it starts, compared on every resume.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobFile {
    pub version: u32,
    /// This job's own name, made when it starts (`--restart` makes a new one): two jobs of the
    /// same graph in two folders, or one folder started over, are different jobs.
    pub id: String,
    /// The vidflow version that started the job (built-in weights belong to it).
    pub vidflow: String,
    /// SHA-256 of `graph`.
    pub graph_hash: String,
    /// The checked graph, params substituted: nodes (id, kind, params) and connections.
    pub graph: serde_json::Value,
    pub inputs: Vec<FileId>,
    pub models: Vec<FileId>,
    pub chunk_seconds: f64,
    pub chunks: Vec<ChunkSpec>,
}

/// A file the job reads.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileId {
    pub path: String,
    pub bytes: u64,
    /// Modification time, nanoseconds since the Unix epoch. Recorded, but a file touched
    /// without changing its content (same size and hash) is still the same input.
    pub mtime_ns: u128,
    pub sha256: String,
}

/// One chunk: the source frames it owns and the frames it reads (with context).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChunkSpec {
    pub index: usize,
    /// Seconds: the pts of its first frame and of the next chunk's first frame (`None`: the
    /// last chunk, to the end).
    pub range: (f64, Option<f64>),
    /// Frames it owns, and the index of the first in the source's timeline.
    pub first: usize,
    pub frames: usize,
    /// What it decodes: from the pts of its first context frame to before `read.1`.
    pub read: (f64, Option<f64>),
}

/// A finished chunk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub index: usize,
    pub range: (f64, Option<f64>),
    pub frames: usize,
    pub outputs: Vec<OutputRecord>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OutputRecord {
    /// The sink node that wrote it.
    pub node: String,
    /// Relative to the job directory.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A chunk that failed every attempt; removed when it later succeeds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Failed {
    pub index: usize,
    pub range: (f64, Option<f64>),
    /// One error per attempt.
    pub errors: Vec<String>,
}

pub fn chunk_dir(job: &Path, index: usize) -> PathBuf {
    job.join(CHUNKS_DIR).join(format!("{index:05}"))
}
pub fn record_path(job: &Path, index: usize) -> PathBuf {
    job.join(CHUNKS_DIR).join(format!("{index:05}.json"))
}
pub fn failed_path(job: &Path, index: usize) -> PathBuf {
    job.join(CHUNKS_DIR).join(format!("{index:05}.failed.json"))
}

/// Every failed attempt of a chunk by a worker, one JSON line each ([`ErrorLine`]), appended
/// by the workers (and by a coordinator for a delivery whose worker could not say it).
pub fn chunk_errors_path(job: &Path, index: usize) -> PathBuf {
    job.join(CHUNKS_DIR)
        .join(format!("{index:05}.errors.jsonl"))
}

/// One failed delivery of a chunk, a line of its `NNNNN.errors.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorLine {
    pub worker: String,
    pub delivered: i64,
    pub error: String,
    /// The job gave up on the chunk with this failure (its last allowed delivery). Lines
    /// written before this field existed read as `false`.
    #[serde(default)]
    pub last: bool,
}

impl std::fmt::Display for ErrorLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "worker `{}` (delivery {}): {}",
            self.worker, self.delivered, self.error
        )
    }
}

/// Every failed delivery a chunk has had so far, oldest first (lines that do not parse, such
/// as a half-written last one, are skipped).
pub fn error_lines(job: &Path, index: usize) -> Vec<ErrorLine> {
    std::fs::read_to_string(chunk_errors_path(job, index))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Appends a failed delivery to the chunk's error log. `Err` says why it could not (a job
/// folder this machine does not see, a full disk): the caller must report it, since the
/// failure is then known only to whoever holds the message.
pub fn append_error(job: &Path, index: usize, line: &ErrorLine) -> Result<(), String> {
    let path = chunk_errors_path(job, index);
    let mut text = serde_json::to_vec(line).map_err(|e| e.to_string())?;
    text.push(b'\n');
    // One `write` of a whole line to a file opened for appending: lines of workers writing
    // at once do not interleave.
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&text))
        .map_err(|e| format!("cannot append to `{}`: {e}", path.display()))
}

/// The errors of a chunk's last `n` failed attempts, oldest first, each naming its worker.
pub fn chunk_errors(job: &Path, index: usize, n: usize) -> Vec<String> {
    let lines: Vec<String> = error_lines(job, index)
        .iter()
        .map(ToString::to_string)
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// Failed attempts a chunk has had by workers so far.
pub fn attempts(job: &Path, index: usize) -> usize {
    std::fs::read_to_string(chunk_errors_path(job, index))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// How many times the job gave up on a chunk (its failures on a last allowed delivery). A
/// rerun retries such a chunk under a new task id; failures on earlier deliveries do not
/// change the id, so a restarted coordinator finds a task still queued as a duplicate.
pub fn final_failures(job: &Path, index: usize) -> usize {
    error_lines(job, index).iter().filter(|l| l.last).count()
}

/// Records a chunk as failed, its range read from the job's `job.json` (for a worker that
/// could not load the job itself).
pub fn write_failed(job: &Path, index: usize, errors: Vec<String>) {
    let Ok(file) = read_json::<JobFile>(&job.join(JOB_FILE)) else {
        return;
    };
    if let Some(c) = file.chunks.get(index) {
        let failed = Failed {
            index,
            range: c.range,
            errors,
        };
        let _ = write_json(&failed_path(job, index), &failed);
    }
}

/// Writes a chunk's `failed.json`; `Err` says why it could not.
pub fn try_write_failed(job: &Path, failed: &Failed) -> Result<(), String> {
    let path = failed_path(job, failed.index);
    write_json(&path, failed).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

/// Writes `value` as pretty JSON to `path` durably: a unique temporary file beside it,
/// fsynced, renamed over `path`, and the folder fsynced so the rename itself survives a crash.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        let mut text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
        text.push(b'\n');
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Fsyncs a folder, so renames and new files in it are on disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Reads a JSON file of the journal; any problem (missing, half-written, not ours) is a reason
/// not to trust it.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&text).map_err(|e| format!("unreadable ({e})"))
}

/// Size and SHA-256 (hex) of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((bytes, hex(&hasher.finalize())))
}

pub fn hash_bytes(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Identifies a file the job reads.
pub fn file_id(path: &Path) -> std::io::Result<FileId> {
    let meta = std::fs::metadata(path)?;
    let mtime_ns = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let (bytes, sha256) = hash_file(path)?;
    Ok(FileId {
        path: path.display().to_string(),
        bytes,
        mtime_ns,
        sha256,
    })
}

/// Whether a record can be trusted: it is the chunk's, and every output it names is there with
/// the recorded size and hash. `Err` says why not.
pub fn verify(job: &Path, spec: &ChunkSpec, record: &Record) -> Result<(), String> {
    if record.index != spec.index || record.range != spec.range || record.frames != spec.frames {
        return Err("its record describes another chunk".into());
    }
    for out in &record.outputs {
        let path = job.join(&out.path);
        let bytes = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(_) => return Err(format!("its output `{}` is missing", out.path)),
        };
        if bytes != out.bytes {
            return Err(format!(
                "its output `{}` has {bytes} bytes, not the {} recorded",
                out.path, out.bytes
            ));
        }
        let (_, sha) = hash_file(&path).map_err(|e| format!("cannot read `{}`: {e}", out.path))?;
        if sha != out.sha256 {
            return Err(format!(
                "its output `{}` does not have the recorded SHA-256",
                out.path
            ));
        }
    }
    Ok(())
}

/// What differs between the job directory's `job.json` and the job asked for now, one line
/// each (empty: the same job).
pub fn differences(old: &JobFile, new: &JobFile) -> Vec<String> {
    let mut out = vec![];
    if old.version != new.version {
        out.push(format!(
            "the journal's format is version {}, this vidflow writes {}",
            old.version, new.version
        ));
        return out;
    }
    if old.graph_hash != new.graph_hash {
        out.extend(graph_differences(&old.graph, &new.graph));
        if out.is_empty() {
            out.push("the graph changed".into());
        }
    }
    out.extend(file_differences("input", &old.inputs, &new.inputs));
    out.extend(file_differences("model", &old.models, &new.models));
    if old.vidflow != new.vidflow {
        out.push(format!(
            "it was started by vidflow {}, this is {} (built-in weights and nodes may differ)",
            old.vidflow, new.vidflow
        ));
    }
    if old.chunk_seconds != new.chunk_seconds {
        out.push(format!(
            "`--chunk-seconds` was {}, now {}",
            old.chunk_seconds, new.chunk_seconds
        ));
    } else if old.chunks != new.chunks && out.is_empty() {
        out.push("the source's timeline cuts into different chunks".into());
    }
    out
}

pub fn graph_differences(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let nodes = |g: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        g["nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| (n["id"].as_str().unwrap_or("?").to_string(), n.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (old_nodes, new_nodes) = (nodes(old), nodes(new));
    let mut out = vec![];
    for (id, o) in &old_nodes {
        match new_nodes.iter().find(|(i, _)| i == id) {
            None => out.push(format!("node `{id}` was removed")),
            Some((_, n)) if o["kind"] != n["kind"] => out.push(format!(
                "node `{id}` changed kind from {} to {}",
                o["kind"], n["kind"]
            )),
            Some((_, n)) => {
                let empty = serde_json::Map::new();
                let op = o["params"].as_object().unwrap_or(&empty);
                let np = n["params"].as_object().unwrap_or(&empty);
                let mut keys: Vec<&String> = op.keys().chain(np.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let (a, b) = (
                        op.get(k).unwrap_or(&serde_json::Value::Null),
                        np.get(k).unwrap_or(&serde_json::Value::Null),
                    );
                    if a != b {
                        out.push(format!("node `{id}` param `{k}` changed: {a} → {b}"));
                    }
                }
            }
        }
    }
    for (id, _) in &new_nodes {
        if !old_nodes.iter().any(|(i, _)| i == id) {
            out.push(format!("node `{id}` was added"));
        }
    }
    if out.is_empty() && old["edges"] != new["edges"] {
        out.push("the connections between nodes changed".into());
    }
    out
}

fn file_differences(what: &str, old: &[FileId], new: &[FileId]) -> Vec<String> {
    let mut out = vec![];
    for o in old {
        match new.iter().find(|n| n.path == o.path) {
            None => out.push(format!("{what} `{}` is no longer read", o.path)),
            Some(n) if n.bytes != o.bytes => out.push(format!(
                "{what} `{}` changed: {} bytes, was {}",
                o.path, n.bytes, o.bytes
            )),
            Some(n) if n.sha256 != o.sha256 => {
                out.push(format!("{what} `{}` changed: its content differs", o.path))
            }
            Some(_) => {}
        }
    }
    for n in new {
        if !old.iter().any(|o| o.path == n.path) {
            out.push(format!("{what} `{}` is new", n.path));
        }
    }
    out
}
