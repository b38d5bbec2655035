//! What a node kind tells jobs (`vidflow run --job`) so a long run can be cut into chunks of the
//! source's timeline: its temporal context ([`Temporal`]: what an output at time t depends on),
//! and, for the kinds at the two ends, how to restrict a source to one chunk
//! ([`ChunkSource`]) and how a sink writes one chunk and joins the chunks at the end
//! ([`ChunkSink`]). The job planner in `job/` reads these; this module knows nothing of it.

use super::{NodeError, Params, ValidateCtx};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the outputs of a node at time t depend on.
#[derive(Clone, Debug, PartialEq)]
pub enum Temporal {
    /// Each output depends on one input item: a chunk boundary anywhere is exact.
    PerItem,
    /// Outputs near a frame depend on up to `before` frames before it and `after` frames after
    /// it: a chunk reads that many extra frames on each side and its outputs outside its own
    /// range are dropped, so seams are exact.
    Frames { before: u32, after: u32 },
    /// Outputs depend on the audio around their frame's time: `before` ms plus `frames_before`
    /// frame durations before it, and `after` ms plus `frames_after` frame durations after it
    /// (frames at the video's rate, which only a job's timeline knows). A job feeds that audio
    /// from a source of its own, restricted to each chunk's time plus this context
    /// ([`ChunkSource::restrict_audio`]), so the node's outputs in the chunk are exact.
    AudioMs {
        before: u32,
        after: u32,
        frames_before: u32,
        frames_after: u32,
    },
    /// The node needs the whole stream; the text says why (it ends the diagnostic).
    Whole(String),
}

/// How a kind declares its temporal context: fixed, or decided by its params and wiring.
pub type TemporalFn = Arc<dyn Fn(&ValidateCtx<'_>) -> Temporal + Send + Sync>;

/// A source's frames as a job cuts them: every frame's presentation time (seconds, the same
/// values the node gives `Frame::pts`), ascending, and which frames a decoder can start from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    pub pts: Vec<f64>,
    /// Indices into `pts` of the frames decoding can start at (keyframes), ascending.
    pub keyframes: Vec<usize>,
    /// The files the source reads, for the job's record of its inputs.
    pub files: Vec<PathBuf>,
}

/// A source a job can cut: it reads its timeline without decoding, and emits one range of it.
pub trait ChunkSource: Send + Sync {
    /// The frames the node would emit with these params, or why it cannot be cut.
    fn timeline(&self, node_id: &str, params: &Params) -> Result<Timeline, NodeError>;
    /// Rewrites the params so the node emits exactly the frames with `start <= pts < end`
    /// (`end: None`: to the end of its timeline).
    fn restrict(&self, params: &mut Params, start: f64, end: Option<f64>);
    /// Rewrites the params of a source that only feeds audio (to a node with
    /// [`Temporal::AudioMs`] context, or to a sink's whole input) so that it emits its audio
    /// for `start <= t < end`, within its own window, each sample exactly as the unrestricted
    /// node would emit it. The default: as [`ChunkSource::restrict`].
    fn restrict_audio(&self, params: &mut Params, start: f64, end: Option<f64>) {
        self.restrict(params, start, end)
    }
    /// Where the node's audio ends (seconds, as its audio times count), if it is known without
    /// decoding: a chunk past that end still reads the audio's last stretch, which nodes that
    /// clamp their windows to the end of the audio use.
    fn audio_end(&self, _node_id: &str, _params: &Params) -> Result<Option<f64>, NodeError> {
        Ok(None)
    }
}

/// One finished chunk output, for [`ChunkSink::assemble`].
#[derive(Clone, Debug)]
pub struct ChunkPiece {
    pub path: PathBuf,
    /// When the chunk's first frame is shown, in seconds from the job's first frame.
    pub start: f64,
}

/// An input of a sink that a job does not feed per chunk but gives the assembly once, over the
/// whole job (the source audio, copied once so chunk seams have no gaps or clicks).
#[derive(Clone, Debug)]
pub struct WholeInput {
    pub port: usize,
    /// The kind and params of the node that feeds it (a chunk source).
    pub source_kind: &'static str,
    pub source_params: Params,
    /// The job's range of the source: its first frame's pts, and the end (None: to the end).
    pub start: f64,
    pub end: Option<f64>,
}

/// A sink a job can cut: it writes one chunk's output to a file of the job, and joins the
/// chunk files into its real output.
pub trait ChunkSink: Send + Sync {
    /// The file the node writes with these params (`None`: it writes no file), or why a job
    /// cannot cut it (standard output, an image sequence…), for the diagnostic.
    fn output(&self, params: &Params) -> Result<Option<PathBuf>, String>;
    /// Rewrites the params so the node writes to `path` (a file in the job directory).
    fn redirect(&self, params: &mut Params, path: &Path);
    /// The input ports a job feeds once at assembly instead of per chunk.
    fn whole_inputs(&self) -> &'static [usize] {
        &[]
    }
    /// Checks, before any chunk runs, that the assembly will be able to write `output`
    /// (e.g. that the container holds the source audio's codec).
    fn prepare(
        &self,
        _node_id: &str,
        _params: &Params,
        _whole: &[WholeInput],
    ) -> Result<(), NodeError> {
        Ok(())
    }
    /// Joins the chunk files, in order, into `output` (written under a temporary name and
    /// renamed when complete).
    fn assemble(
        &self,
        node_id: &str,
        params: &Params,
        pieces: &[ChunkPiece],
        whole: &[WholeInput],
        output: &Path,
    ) -> Result<(), NodeError>;
}
