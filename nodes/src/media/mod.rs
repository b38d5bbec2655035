//! The media family: FFmpeg-backed `decode` and `encode`, and `split` / `stitch` for segmented
//! frame streams.
//!
//! Descriptors are always compiled, so `vidflow check` knows these kinds in every build; the
//! FFmpeg code (ffmpeg-the-third over the system libraries) sits behind the `media` feature, and
//! without it the factories of `decode`/`encode` (and `split` writing files) fail with a clear
//! message. `split` into frame streams and `stitch` are plain Rust and always work.

use vidflow_engine::{NodeError, PortType, Registry};

pub mod decode;
pub mod encode;
pub mod split;
pub mod stitch;

#[cfg(feature = "media")]
pub mod ff;
#[cfg(feature = "media")]
pub mod packets;
#[cfg(feature = "media")]
pub mod writer;

/// Compressed audio from `decode` for `encode` to mux untouched (items are
/// `packets::AudioPacket`; the first one describes the stream).
pub const AUDIO_PACKETS: PortType = PortType("audio_packets");

/// Registers this family's node kinds.
pub fn register(r: &mut Registry) {
    r.register(decode::kind());
    r.register(encode::kind());
    r.register(split::kind());
    r.register(stitch::kind());
}

/// The error of a media factory in a build without FFmpeg.
#[allow(dead_code)]
pub(crate) fn not_built(node: &str, what: &str) -> NodeError {
    NodeError::runtime(format!(
        "node `{node}`: {what} needs FFmpeg, but this vidflow was built without the `media` feature; rebuild with `--features media`"
    ))
}
