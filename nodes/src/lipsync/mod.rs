//! The lip-sync family: `audio-window` (Wav2Lip mel features, one window per video frame,
//! computed once per stream) and `lipsync` (the Wav2Lip network in Burn, batched).

pub mod audio_window;
pub mod mel;
pub mod node;
#[cfg(feature = "neural")]
pub mod wav2lip;

use vidflow_engine::Registry;

/// Registers this family's node kinds.
pub fn register(r: &mut Registry) {
    r.register(audio_window::kind());
    r.register(node::kind());
}
