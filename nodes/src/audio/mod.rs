//! Audio features shared by the kinds `audio-window` (which computes them) and `lipsync`
//! (which consumes them): the per-frame window payload ([`AudioWindow`] on the
//! [`AUDIO_WINDOWS`] port, pointing into a shared [`Span`]) and Wav2Lip's mel spectrogram
//! ([`mel`]), whose 80 bands x 16 steps are the windows' shape.

pub mod mel;

use mel::N_MELS;
use std::sync::Arc;
use vidflow_engine::PortType;
use vidflow_engine::payload::CustomPayload;

/// Port type of `audio-window`'s output: [`AudioWindow`] items.
pub const AUDIO_WINDOWS: PortType = PortType("audio_windows");

/// Columns of a mel window (200 ms).
pub const MEL_STEPS: usize = 16;

/// What a span holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// Mel columns: `data` is column-major, 80 values per column.
    Mel,
    /// Raw audio chunks of `samples` mono samples each: `data` is chunk after chunk.
    Chunks { samples: usize },
}

/// Audio features shared by a group of consecutive frames.
#[derive(Debug)]
pub struct Span {
    pub kind: SpanKind,
    /// Absolute index (column or chunk) of the span's first unit; may be negative in chunk
    /// mode (padding before the stream).
    pub first: i64,
    /// Units (columns or chunks) in the span.
    pub units: usize,
    pub data: Vec<f32>,
    /// Frames that share this span.
    pub frames: usize,
}

impl Span {
    /// Values per unit: 80 for a mel column, the chunk length for chunks.
    pub fn unit_len(&self) -> usize {
        match self.kind {
            SpanKind::Mel => N_MELS,
            SpanKind::Chunks { samples } => samples,
        }
    }
}

/// One frame's window: `len` units of a shared [`Span`] from `offset`.
///
/// # Shapes
/// Mel mode: [`AudioWindow::mel`] gives 80 x 16 (row = mel band, column = time step), the
/// `1x80x16` input of Wav2Lip. Chunk mode: [`AudioWindow::values`] gives `len` chunks of
/// `samples` each, one after the other.
#[derive(Clone, Debug)]
pub struct AudioWindow {
    /// The video frame this window belongs to.
    pub frame: u64,
    /// The frame's time in seconds.
    pub pts: f64,
    pub span: Arc<Span>,
    pub offset: usize,
    pub len: usize,
}

impl AudioWindow {
    /// The window's values unit after unit (mel: column-major 16 x 80).
    pub fn values(&self) -> &[f32] {
        let u = self.span.unit_len();
        &self.span.data[self.offset * u..(self.offset + self.len) * u]
    }
    /// Mel mode: the window as 80 rows x `len` columns, row-major.
    pub fn mel(&self) -> Vec<f32> {
        let v = self.values();
        let mut out = vec![0.0; N_MELS * self.len];
        for t in 0..self.len {
            for m in 0..N_MELS {
                out[m * self.len + t] = v[t * N_MELS + m];
            }
        }
        out
    }
    /// Absolute index of the window's first unit.
    pub fn first_unit(&self) -> i64 {
        self.span.first + self.offset as i64
    }
}

impl CustomPayload for AudioWindow {
    fn describe(&self) -> String {
        format!("audio window of frame {} (t={:.3}s)", self.frame, self.pts)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
