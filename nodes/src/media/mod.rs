//! FFmpeg glue shared by the media kinds (`decode`, `encode`, `split` writing files; see
//! [`crate::kinds`]): the FFmpeg wrappers (`ff`), compressed audio packets (`packets`) and the
//! file writer with its encoder params (`writer`), plus the `audio_packets` port type and the
//! error a factory gives in a build without FFmpeg.
//!
//! The FFmpeg code (ffmpeg-the-third over the system libraries) sits behind the `media`
//! feature; without it the factories of `decode`/`encode` (and `split` writing files) fail with
//! `not_built`'s message. `split` into frame streams and `stitch` are plain Rust and always
//! work.

use vidflow_engine::{NodeError, PortType};

#[cfg(feature = "media")]
pub mod ff;
#[cfg(feature = "media")]
pub mod packets;
#[cfg(feature = "media")]
pub mod writer;

/// Compressed audio from `decode` for `encode` to mux untouched (items are
/// `packets::AudioPacket`; the first one describes the stream).
pub const AUDIO_PACKETS: PortType = PortType("audio_packets");

/// The error of a media factory in a build without FFmpeg.
#[allow(dead_code)]
pub(crate) fn not_built(node: &str, what: &str) -> NodeError {
    NodeError::runtime(format!(
        "node `{node}`: {what} needs FFmpeg, but this vidflow was built without the `media` feature; rebuild with `--features media`"
    ))
}
