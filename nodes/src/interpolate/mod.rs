//! Frame interpolation with RIFE: Practical-RIFE's IFNet v4.25 written in Burn ([`ifnet`]),
//! the `interpolate` node ([`node`]): frame-rate conversion of a stream (`multi: N` or
//! `fps: x`), and the `fill` mode that generates travel frames between anchors through the
//! travel [`Generator`](crate::travel::generate::Generator) trait ([`generator`]).
//!
//! The built-in weights are `models/rife-v4.25-flownet.pkl` (Practical-RIFE's flownet.pkl for
//! v4.25, MIT), compiled into the binary; `weights:` takes any v4.25 `flownet.pkl` or the same
//! keys as `.safetensors`.

pub mod generator;
#[cfg(feature = "neural")]
pub mod ifnet;
pub mod node;

use vidflow_engine::Registry;

pub use node::KIND;

/// Registers this family's node kinds.
pub fn register(r: &mut Registry) {
    r.register(node::kind());
}

/// The built-in checkpoint's name, as messages show it.
pub const BUILTIN_WEIGHTS: &str = "models/rife-v4.25-flownet.pkl";

#[cfg(feature = "neural")]
pub use imp::*;

#[cfg(feature = "neural")]
mod imp {
    use super::ifnet::{IfNet, SCALES};
    use crate::neural::pixels;
    use crate::neural::weights::{self, Checkpoint, WeightsError};
    use burn::tensor::Device;
    use std::path::Path;
    use std::sync::Arc;

    /// The built-in RIFE v4.25 checkpoint.
    pub static BUILTIN: &[u8] = include_bytes!("../../../models/rife-v4.25-flownet.pkl");

    /// Loads `path`, or the built-in checkpoint when `None`.
    pub fn load_checkpoint(path: Option<&Path>) -> Result<Checkpoint, WeightsError> {
        match path {
            Some(p) => weights::load(p),
            None => weights::from_bytes(Path::new(super::BUILTIN_WEIGHTS), BUILTIN),
        }
    }

    /// A loaded interpolator: the network, its scale and the most frames per network call.
    #[derive(Clone, Debug)]
    pub struct Rife {
        pub net: Arc<IfNet>,
        /// 1.0, 0.5 (for large frames: flow estimated at half resolution) or 0.25.
        pub scale: f32,
        /// Output frames per network call; more are split into several calls.
        pub max_batch: usize,
    }

    impl Rife {
        pub fn new(ck: &Checkpoint, device: &Device, scale: f32) -> Result<Rife, WeightsError> {
            assert!(SCALES.contains(&scale), "scale {scale} is not supported");
            Ok(Rife {
                net: Arc::new(IfNet::load(ck, device)?),
                scale,
                max_batch: 8,
            })
        }

        /// Interpolates packed RGB24 pairs of one size. `items` are (pair index, timestep in
        /// (0, 1)); returns one packed RGB24 frame per item. All items go through the network
        /// in calls of up to `max_batch` frames (the batch dimension is the timesteps).
        pub fn interpolate_rgb(
            &self,
            pairs: &[(&[u8], &[u8])],
            width: usize,
            height: usize,
            items: &[(usize, f32)],
        ) -> Vec<Vec<u8>> {
            self.interpolate_rgb_with(pairs, width, height, items, &|_| {})
        }

        /// [`interpolate_rgb`](Self::interpolate_rgb), telling `progress` how many frames are
        /// made after each network call.
        pub fn interpolate_rgb_with(
            &self,
            pairs: &[(&[u8], &[u8])],
            width: usize,
            height: usize,
            items: &[(usize, f32)],
            progress: &dyn Fn(usize),
        ) -> Vec<Vec<u8>> {
            let mut out = Vec::with_capacity(items.len());
            for chunk in items.chunks(self.max_batch.max(1)) {
                // Only the pairs this chunk uses, renumbered.
                let mut used: Vec<usize> = chunk.iter().map(|&(k, _)| k).collect();
                used.sort_unstable();
                used.dedup();
                let planar: Vec<(Vec<f32>, Vec<f32>)> = used
                    .iter()
                    .map(|&k| {
                        (
                            pixels::to_planar(&[pairs[k].0], height, width),
                            pixels::to_planar(&[pairs[k].1], height, width),
                        )
                    })
                    .collect();
                let refs: Vec<(&[f32], &[f32])> = planar
                    .iter()
                    .map(|(a, b)| (a.as_slice(), b.as_slice()))
                    .collect();
                let local: Vec<(usize, f32)> = chunk
                    .iter()
                    .map(|&(k, t)| (used.binary_search(&k).expect("listed"), t))
                    .collect();
                for f in self
                    .net
                    .interpolate(&refs, height, width, &local, self.scale)
                {
                    out.extend(pixels::from_planar(&f, 1, height, width));
                }
                progress(out.len());
            }
            out
        }
    }
}
