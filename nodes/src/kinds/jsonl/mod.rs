//! `jsonl`: a sink that writes one JSON object per line. Records are written as they are;
//! frames and audio chunks as a line of their metadata. The file is written under a temporary
//! name and renamed when the stream ends, so an interrupted run leaves no finished-looking file.
//! `path: "-"` writes to standard output. In a job each chunk writes its own file, and the
//! files are joined in order at the end.

use crate::output::{AtomicPath, line_for};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use vidflow_engine::{
    ChunkPiece, ChunkSink, Emitter, End, Input, NodeError, NodeKind, ParamType, Params, PortType,
    Process, Runtime, Temporal, WholeInput, params,
};

params! {
    /// The params of `jsonl`.
    pub struct JsonlParams {
        /// output file (`-` for standard output)
        path: String = required(ParamType::Path),
    }
}

pub fn kind() -> NodeKind {
    NodeKind::new("jsonl", "Writes one JSON object per item to a JSON-lines file (records as they are; frames and audio as metadata).", |ctx| {
        let node = ctx.node_id.to_string();
        let p: JsonlParams = ctx.params()?;
        let path = p.path.as_str();
        let (writer, file): (Box<dyn Write + Send>, Option<AtomicPath>) = if path == "-" {
            (Box::new(std::io::stdout()), None)
        } else {
            let file = AtomicPath::new(&node, path)?;
            let f = std::fs::File::create(&file.temp).map_err(|e| {
                NodeError::input(format!("node `{node}`: cannot write `{}` (temporary file `{}`): {e}", file.target.display(), file.temp.display()))
            })?;
            (Box::new(f), Some(file))
        };
        let shown = file.as_ref().map_or_else(|| "standard output".to_string(), |f| format!("`{}`", f.target.display()));
        Ok(Runtime::Process(Box::new(Jsonl { node, out: BufWriter::new(writer), file, shown, lines: 0 })))
    })
    .input("items", PortType::ANY, "records (or frames/audio, written as metadata)")
    .params::<JsonlParams>()
    .writes("path")
    .example("- id: out\n  kind: jsonl\n  params: { path: results.jsonl }\n  inputs: { items: analyze.records }\n")
    .temporal(Temporal::PerItem)
    .chunk_sink(JsonlChunks)
}

/// How a job cuts a `jsonl`: one file per chunk, concatenated in order.
pub struct JsonlChunks;

impl ChunkSink for JsonlChunks {
    fn output(&self, params: &Params) -> Result<Option<PathBuf>, String> {
        let path: String = params.parse("path").map_err(|e| e.to_string())?;
        if path == "-" {
            return Err("it writes to standard output (`path: -`), which a job cannot assemble; write to a file".into());
        }
        Ok(Some(PathBuf::from(path)))
    }

    fn redirect(&self, params: &mut Params, path: &Path) {
        params
            .values
            .insert("path".into(), path.to_string_lossy().into_owned().into());
    }

    fn assemble(
        &self,
        node_id: &str,
        _params: &Params,
        pieces: &[ChunkPiece],
        _whole: &[WholeInput],
        output: &Path,
    ) -> Result<(), NodeError> {
        let file = AtomicPath::new(node_id, output)?;
        if let Err(e) = join_files(pieces, &file.temp) {
            file.abandon();
            return Err(NodeError::runtime(format!(
                "node `{node_id}`: cannot join the chunks into `{}`: {e}",
                output.display()
            )));
        }
        file.commit(node_id).inspect_err(|_| file.abandon())
    }
}

/// Writes the pieces' files one after the other into `to`.
fn join_files(pieces: &[ChunkPiece], to: &Path) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(to)?);
    for piece in pieces {
        let mut f = std::fs::File::open(&piece.path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("`{}`: {e}", piece.path.display()))
        })?;
        std::io::copy(&mut f, &mut out)?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

struct Jsonl {
    node: String,
    out: BufWriter<Box<dyn Write + Send>>,
    file: Option<AtomicPath>,
    /// The destination as messages name it.
    shown: String,
    /// Records written so far.
    lines: u64,
}

impl Process for Jsonl {
    fn process(&mut self, input: Input, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in &input.items {
            let mut line = serde_json::to_vec(&line_for(item)).expect("JSON value serialises");
            line.push(b'\n');
            self.out.write_all(&line).map_err(|e| {
                NodeError::runtime(format!(
                    "node `{}`: cannot write {}: {e}",
                    self.node, self.shown
                ))
            })?;
            self.lines += 1;
        }
        Ok(())
    }
    fn finish(&mut self, _out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
        let flushed = self.out.flush();
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        if end == End::Stopped {
            self.keep_partial(file, flushed.is_ok());
            return Ok(());
        }
        if let Err(e) = flushed {
            file.abandon();
            return Err(NodeError::runtime(format!(
                "node `{}`: cannot write {}: {e}",
                self.node, self.shown
            )));
        }
        file.commit(&self.node).inspect_err(|_| file.abandon())
    }
}

impl Jsonl {
    /// A stopped run (Ctrl-C, a failure elsewhere) keeps the records written so far, each a
    /// complete line, as `<output>.partial` beside the output: they may have cost a model
    /// call each. Never under the output's own name, which would look finished.
    fn keep_partial(&self, file: AtomicPath, flushed: bool) {
        if !flushed || self.lines == 0 {
            file.abandon();
            return;
        }
        let mut kept = file.target.clone().into_os_string();
        kept.push(".partial");
        let kept = PathBuf::from(kept);
        match std::fs::rename(&file.temp, &kept) {
            Ok(()) => vidflow_engine::progress::say(format!(
                "node `{}`: stopped; the {} complete records written so far are in `{}`",
                self.node,
                self.lines,
                kept.display()
            )),
            Err(e) => {
                file.abandon();
                vidflow_engine::progress::say(format!(
                    "warning: node `{}`: cannot keep the records written so far as `{}`: {e}",
                    self.node,
                    kept.display()
                ));
            }
        }
    }
}

impl Drop for Jsonl {
    /// A sink dropped without a complete `finish` leaves no temporary file behind.
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            file.abandon();
        }
    }
}
