//! The integration tests of `vidflow-nodes`, as one test binary (`--test nodes`): one link of
//! Burn and FFmpeg instead of one per file. Each module is one former test file; pick them by
//! path, e.g. `cargo test -p vidflow-nodes --all-features --test nodes -- upscale:: media::`.
//! Helpers shared by several modules live in `common`.

mod common;
#[cfg(feature = "llm")]
mod llm_fake;

mod check_golden;
mod exec_node;
#[cfg(feature = "neural")]
mod face_detect;
#[cfg(feature = "neural")]
mod interpolate;
#[cfg(feature = "media")]
mod jobs_media;
mod lipsync_audio;
#[cfg(feature = "neural")]
mod lipsync_model;
mod lipsync_paste;
#[cfg(feature = "llm")]
mod llm_analyze;
#[cfg(feature = "llm")]
mod llm_bench;
#[cfg(not(feature = "llm"))]
mod llm_without_feature;
#[cfg(feature = "media")]
mod media;
#[cfg(feature = "neural")]
mod shader;
mod travel_generate;
#[cfg(feature = "media")]
mod travel_media;
mod travel_pipeline;
mod travel_plan;
#[cfg(feature = "neural")]
mod upscale;
mod upscale_shaders;
