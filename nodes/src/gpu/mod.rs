//! The compute context and pixel conversion: which device a run computes on ([`device`]:
//! `--device`, one Burn device per run, `vidflow devices`), the raw wgpu device shader nodes
//! dispatch on (`raw`, with the `neural` feature) and the conversion between packed RGB24
//! frames and the planar f32 the networks take (`pixels`, with the `neural` feature).
//!
//! [`device`] compiles in every build (the CLI parses `--device` either way); the rest needs
//! Burn.

pub mod device;
#[cfg(feature = "neural")]
pub mod pixels;
#[cfg(feature = "neural")]
pub mod raw;

#[cfg(feature = "neural")]
pub use raw::Gpu;
