//! What flows along edges. Heavy data (pixels, samples) sits behind `Arc`, so fan-out to several
//! consumers and retries clone pointers, never buffers.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// A frame rate or time base as a rational number (30000/1001 for NTSC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub num: u32,
    pub den: u32,
}

impl Rate {
    pub fn new(num: u32, den: u32) -> Rate {
        Rate {
            num,
            den: den.max(1),
        }
    }
    pub fn fps(self) -> f64 {
        self.num as f64 / self.den as f64
    }
    /// The closest rational with a small denominator (25.0 → 25/1, 29.97 → 30000/1001).
    pub fn from_fps(fps: f64) -> Rate {
        let rounded = fps.round();
        if (fps - rounded).abs() < 1e-6 {
            return Rate::new(rounded as u32, 1);
        }
        let ntsc = (fps * 1.001).round();
        if (fps - ntsc / 1.001).abs() < 1e-4 {
            return Rate::new(ntsc as u32 * 1000, 1001);
        }
        Rate::new((fps * 1000.0).round() as u32, 1000)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

/// How a frame's pixels are laid out in [`Frame::data`]: rows top to bottom, no padding.
///
/// Every node that takes frames takes RGB24. A node may also accept (inputs) or offer
/// (outputs) other formats in its descriptor; the plan then picks, per output port, the
/// first format it offers that all its consumers accept (as GStreamer negotiates caps), so a
/// decode → encode graph keeps the decoder's YUV and never converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed R, G, B bytes.
    Rgb24,
    /// 8-bit planar Y, then U and V at half the width and height (rounded up): what most
    /// video decoders produce and encoders take.
    Yuv420p,
}

impl PixelFormat {
    /// Every format, for ports that take frames as they come.
    pub const ALL: &[PixelFormat] = &[PixelFormat::Rgb24, PixelFormat::Yuv420p];

    /// Bytes of a `width` × `height` picture.
    pub fn byte_len(self, width: u32, height: u32) -> usize {
        let last = *self
            .planes(width, height)
            .last()
            .expect("a format has planes");
        last.offset + last.row * last.rows
    }
    /// Where each plane of a `width` × `height` picture lies in its buffer, in order: RGB24
    /// has one, YUV 4:2:0 three (Y, U, V), one after another with no padding.
    pub fn planes(self, width: u32, height: u32) -> smallvec::SmallVec<[Plane; 3]> {
        let (w, h) = (width as usize, height as usize);
        let plane = |offset, row, rows| Plane { offset, row, rows };
        match self {
            PixelFormat::Rgb24 => smallvec::smallvec![plane(0, w * 3, h)],
            PixelFormat::Yuv420p => {
                let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
                smallvec::smallvec![
                    plane(0, w, h),
                    plane(w * h, cw, ch),
                    plane(w * h + cw * ch, cw, ch)
                ]
            }
        }
    }
    /// The name the CLI and FFmpeg use for it.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Rgb24 => "rgb24",
            PixelFormat::Yuv420p => "yuv420p",
        }
    }
}

/// One plane of a picture in its buffer (see [`PixelFormat::planes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plane {
    /// Where its first row starts, in bytes.
    pub offset: usize,
    /// Bytes of one row.
    pub row: usize,
    /// How many rows.
    pub rows: usize,
}

/// One video frame, 8 bits per sample, in `format` (RGB24 unless the plan negotiated another
/// format for the edge it travels on).
#[derive(Clone, Debug)]
pub struct Frame {
    /// Position in the stream the frame belongs to (after sampling: the source index).
    pub index: u64,
    /// Presentation time in seconds.
    pub pts: f64,
    /// The stream's nominal rate.
    pub rate: Rate,
    pub width: u32,
    pub height: u32,
    pub data: Arc<Vec<u8>>,
    pub format: PixelFormat,
    /// Optional per-frame annotations from upstream nodes (segment index, mask value…).
    pub meta: Option<Arc<serde_json::Value>>,
}

impl Frame {
    /// An RGB24 frame.
    pub fn new(index: u64, pts: f64, rate: Rate, width: u32, height: u32, data: Vec<u8>) -> Frame {
        Frame::with_format(index, pts, rate, width, height, PixelFormat::Rgb24, data)
    }
    pub fn with_format(
        index: u64,
        pts: f64,
        rate: Rate,
        width: u32,
        height: u32,
        format: PixelFormat,
        data: Vec<u8>,
    ) -> Frame {
        Frame::shared(index, pts, rate, width, height, format, Arc::new(data))
    }
    /// A frame over pixels that may be shared already (e.g. a buffer a decoder reuses once
    /// every frame made from it has been dropped).
    pub fn shared(
        index: u64,
        pts: f64,
        rate: Rate,
        width: u32,
        height: u32,
        format: PixelFormat,
        data: Arc<Vec<u8>>,
    ) -> Frame {
        debug_assert_eq!(data.len(), format.byte_len(width, height));
        Frame {
            index,
            pts,
            rate,
            width,
            height,
            data,
            format,
            meta: None,
        }
    }
    /// Bytes of a `width` × `height` RGB24 picture.
    pub fn byte_len(width: u32, height: u32) -> usize {
        PixelFormat::Rgb24.byte_len(width, height)
    }
}

/// A run of decoded audio samples, interleaved f32.
#[derive(Clone, Debug)]
pub struct AudioChunk {
    pub pts: f64,
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: Arc<Vec<f32>>,
}

impl AudioChunk {
    pub fn duration(&self) -> f64 {
        self.samples.len() as f64 / (self.sample_rate as f64 * self.channels.max(1) as f64)
    }
}

/// Payload types defined outside the engine (compressed packets, plans, tensors) implement
/// this to travel on edges.
pub trait CustomPayload: Any + Send + Sync + fmt::Debug {
    /// Short human description for messages ("audio packet at 1.20 s").
    fn describe(&self) -> String;
    fn as_any(&self) -> &dyn Any;
}

/// The item type of every edge.
#[derive(Clone, Debug)]
pub enum Payload {
    Frame(Frame),
    Audio(AudioChunk),
    Record(Arc<serde_json::Value>),
    Custom(Arc<dyn CustomPayload>),
}

impl Payload {
    pub fn record(v: serde_json::Value) -> Payload {
        Payload::Record(Arc::new(v))
    }
    pub fn as_frame(&self) -> Option<&Frame> {
        match self {
            Payload::Frame(f) => Some(f),
            _ => None,
        }
    }
    pub fn as_audio(&self) -> Option<&AudioChunk> {
        match self {
            Payload::Audio(a) => Some(a),
            _ => None,
        }
    }
    pub fn as_record(&self) -> Option<&serde_json::Value> {
        match self {
            Payload::Record(r) => Some(r),
            _ => None,
        }
    }
    pub fn downcast<T: CustomPayload>(&self) -> Option<&T> {
        match self {
            Payload::Custom(c) => c.as_any().downcast_ref::<T>(),
            _ => None,
        }
    }
    /// The frame inside, or the input error a node that takes only frames reports.
    pub fn frame_for(&self, node: &str) -> Result<&Frame, crate::error::NodeError> {
        self.as_frame().ok_or_else(|| {
            crate::error::NodeError::input(format!(
                "node `{node}`: expected frames, got {}",
                self.describe()
            ))
        })
    }
    /// How the item is named in error messages and the run summary.
    pub fn describe(&self) -> String {
        match self {
            Payload::Frame(f) => format!("frame {} (t={:.3}s)", f.index, f.pts),
            Payload::Audio(a) => format!("audio chunk at {:.3}s", a.pts),
            Payload::Record(r) => match r.get("index").or_else(|| r.get("frame")) {
                Some(i) => format!("record {i}"),
                None => "record".to_string(),
            },
            Payload::Custom(c) => c.describe(),
        }
    }
}

/// The type of a port, checked when two ports are wired together. `any` matches every type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortType(pub &'static str);

impl PortType {
    pub const FRAMES: PortType = PortType("frames");
    pub const AUDIO: PortType = PortType("audio");
    pub const RECORDS: PortType = PortType("records");
    pub const ANY: PortType = PortType("any");

    pub fn accepts(self, other: PortType) -> bool {
        self == other || self == PortType::ANY || other == PortType::ANY
    }
}

impl fmt::Display for PortType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_lie_one_after_another_with_chroma_rounded_up() {
        let plane = |offset, row, rows| Plane { offset, row, rows };
        assert_eq!(
            PixelFormat::Yuv420p.planes(5, 3).as_slice(),
            [plane(0, 5, 3), plane(15, 3, 2), plane(21, 3, 2)]
        );
        assert_eq!(PixelFormat::Yuv420p.byte_len(5, 3), 27);
        assert_eq!(
            PixelFormat::Rgb24.planes(5, 3).as_slice(),
            [plane(0, 15, 3)]
        );
        assert_eq!(PixelFormat::Rgb24.byte_len(5, 3), 45);
        assert_eq!(PixelFormat::Yuv420p.byte_len(1280, 720), 1280 * 720 * 3 / 2);
    }
}
