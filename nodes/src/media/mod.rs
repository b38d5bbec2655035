//! FFmpeg glue shared by the media kinds (`decode`, `encode`, `split` writing files; see
//! [`crate::kinds`]): the FFmpeg wrappers (`ff`), compressed audio packets (`packets`) and the
//! file writer (`writer`) with its encoder settings checked before a run and their defaults
//! per container (`settings`), plus the `audio_packets` port type. For
//! jobs (`vidflow run --job`): a source's timeline read from its packets, with the timing rules
//! `decode` shares with it (`probe`), and the joining of chunk files without re-encoding
//! (`concat`).
//!
//! The FFmpeg code (ffmpeg-the-third over the system libraries) sits behind the `media`
//! feature; without it `decode` and `encode` are declared but not built (the engine's message
//! says how to rebuild), and `split` fails only when asked to write files. `split` into frame
//! streams and `stitch` are plain Rust and always work.

use vidflow_engine::PortType;

#[cfg(feature = "media")]
pub mod concat;
#[cfg(feature = "media")]
pub mod ff;
#[cfg(feature = "media")]
pub mod packets;
#[cfg(feature = "media")]
pub mod probe;
#[cfg(feature = "media")]
pub mod settings;
#[cfg(feature = "media")]
pub mod writer;

/// Compressed audio from `decode` for `encode` to mux untouched (items are
/// `packets::AudioPacket`; the first one describes the stream).
pub const AUDIO_PACKETS: PortType = PortType("audio_packets");

/// The error of a job step (timeline, assembly) of a media kind in a build without `media`:
/// the same words as the engine's for a node that cannot run.
#[cfg(not(feature = "media"))]
pub(crate) fn not_built(node_id: &str, kind: &str) -> vidflow_engine::NodeError {
    vidflow_engine::NodeError::input(format!(
        "node `{node_id}`: this vidflow was built without the `media` feature, so `{kind}` cannot run; rebuild with `--features media`"
    ))
}

/// True when `path` is a printf image pattern (`out/%05d.png`), which names a sequence of files.
pub fn is_printf_pattern(path: &str) -> bool {
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j < b.len() && b[j] == b'd' {
                return true;
            }
        }
        i += 1;
    }
    false
}
