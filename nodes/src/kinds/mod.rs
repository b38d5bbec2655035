//! The built-in node kinds, one folder per kind (the kind's name with `-` written `_`). A
//! kind's folder holds its descriptor (`kind()`), its runtime, its unit tests and the code only
//! it uses; code several kinds share lives in the crate's shared modules ([`crate::media`],
//! [`crate::travel`], [`crate::gpu`], [`crate::models`], [`crate::weights`],
//! [`crate::audio`], [`crate::output`]).
//!
//! [`register_all`] registers every kind, in the order `vidflow kinds` lists them.

pub mod audio_window;
pub mod batch_planner;
pub mod blend;
pub mod decode;
pub mod encode;
pub mod exec;
pub mod face_detect;
pub mod interpolate;
pub mod jsonl;
pub mod lipsync;
pub mod llm_analyze;
pub mod mask;
pub mod null;
pub mod session_in;
pub mod session_out;
pub mod shader;
pub mod split;
pub mod stitch;
pub mod testsrc;
pub mod upscale;

use vidflow_engine::Registry;

/// Registers every built-in node kind.
pub fn register_all(r: &mut Registry) {
    r.register(testsrc::kind());
    r.register(null::kind());
    r.register(jsonl::kind());
    r.register(exec::kind());
    r.register(shader::kind());
    r.register(decode::kind());
    r.register(encode::kind());
    r.register(split::kind());
    r.register(stitch::kind());
    r.register(upscale::kind());
    r.register(interpolate::kind());
    r.register(batch_planner::kind());
    r.register(mask::kind());
    r.register(blend::kind());
    r.register(audio_window::kind());
    r.register(face_detect::kind());
    r.register(lipsync::kind());
    r.register(llm_analyze::kind());
    r.register(session_in::kind());
    r.register(session_out::kind());
}
