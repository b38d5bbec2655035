//! FFmpeg glue shared by the media kinds (`decode`, `encode`, `split` writing files; see
//! [`crate::kinds`]): the FFmpeg wrappers (`ff`), compressed audio packets (`packets`) and the
//! file writer with its encoder settings (`writer`), plus the `audio_packets` port type.
//!
//! The FFmpeg code (ffmpeg-the-third over the system libraries) sits behind the `media`
//! feature; without it `decode` and `encode` are declared but not built (the engine's message
//! says how to rebuild), and `split` fails only when asked to write files. `split` into frame
//! streams and `stitch` are plain Rust and always work.

use vidflow_engine::PortType;

#[cfg(feature = "media")]
pub mod ff;
#[cfg(feature = "media")]
pub mod packets;
#[cfg(feature = "media")]
pub mod writer;

/// Compressed audio from `decode` for `encode` to mux untouched (items are
/// `packets::AudioPacket`; the first one describes the stream).
pub const AUDIO_PACKETS: PortType = PortType("audio_packets");
