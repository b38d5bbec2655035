//! RIFE for the `interpolate` kind, shared by its stream mode (`kinds/interpolate/mod.rs`) and
//! its fill mode (`generator.rs`) and importing neither: the built-in checkpoint, the loaded
//! interpolator [`Rife`] over Practical-RIFE's IFNet v4.25 in Burn
//! ([`IfNet`](crate::models::ifnet::IfNet)), the kind's params ([`InterpolateParams`]), and
//! loading the network from them.
//!
//! The built-in weights are `models/rife-v4.25-flownet.pkl` (Practical-RIFE's flownet.pkl for
//! v4.25, MIT), compiled into the binary; `weights:` takes any v4.25 `flownet.pkl` or the same
//! keys as `.safetensors`.

#[cfg(feature = "neural")]
use vidflow_engine::{BuildCtx, NodeError};
use vidflow_engine::{node::ParamType, params};

/// The kind's name, in the messages of both modes.
pub const KIND: &str = "interpolate";

/// The built-in checkpoint's name, as messages show it.
pub const BUILTIN_WEIGHTS: &str = "models/rife-v4.25-flownet.pkl";

params! {
    /// The params of `interpolate`, shared by both modes.
    pub struct InterpolateParams {
        /// stream mode: output frames per input frame (N-1 new frames between each pair)
        multi: u32 = default(ParamType::int_in(2, 64), 2),
        /// stream mode: the output frame rate instead of `multi`
        fps: Option<f64> = optional(ParamType::float_in(0.001, 1000.0)),
        /// flow resolution: 1.0, or 0.5 for large frames (1080p and up), or 0.25 (4K)
        scale: f64 = default(ParamType::float_in(0.25, 1.0), 1.0),
        /// stream mode: a pair whose mean absolute difference (0…1) exceeds this is a scene
        /// cut: its new frames repeat the earlier frame; 1.0 never cuts
        scene_threshold: f64 = default(ParamType::float_in(0.0, 1.0), 0.2),
        /// a RIFE v4.25 checkpoint (Practical-RIFE flownet.pkl or .safetensors); default (or
        /// empty): the built-in models/rife-v4.25-flownet.pkl
        weights: Option<String> = optional(ParamType::Path),
        /// most frames per network call (the batch dimension); more are split into several
        /// calls
        max_batch: usize = default(ParamType::int_in(1, 1024), 8),
        /// fill mode: tries a batch again this many times before it falls back to its segments
        retries: u32 = default(ParamType::int_in(0, 100), 1),
    }
}

/// Loads the node's weights on the run's device.
#[cfg(feature = "neural")]
pub(crate) fn load_rife(ctx: &BuildCtx<'_>, p: &InterpolateParams) -> Result<Rife, NodeError> {
    use crate::gpu::device::Compute;
    let compute = Compute::for_run(ctx.shared)?;
    // An empty string (a graph param left at its default) means the built-in weights.
    let path = p
        .weights
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(std::path::PathBuf::from);
    // Loaded once per run, job or worker: later chunks (and other nodes on the same file)
    // share the network.
    let (key, version) = crate::weights::cache_key("rife", path.as_deref(), p.scale);
    let (rife, _) = ctx
        .shared
        .keyed(&key, &version, || {
            let ck = load_checkpoint(path.as_deref())?;
            Rife::new(&ck, &compute.device, p.scale as f32)
        })
        .map_err(|e| NodeError::input(format!("node `{}`: {e}", ctx.node_id)))?;
    let mut rife = Rife::clone(&rife);
    rife.max_batch = p.max_batch;
    Ok(rife)
}

#[cfg(feature = "neural")]
pub use imp::*;

#[cfg(feature = "neural")]
mod imp {
    use crate::gpu::pixels;
    use crate::models::ifnet::{Encoded, IfNet, SCALES};
    use crate::weights::{self, Checkpoint, WeightsError};
    use burn::tensor::Device;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    /// The built-in RIFE v4.25 checkpoint.
    pub static BUILTIN: &[u8] = include_bytes!("../../../../models/rife-v4.25-flownet.pkl");

    /// Loads `path`, or the built-in checkpoint when `None`.
    pub fn load_checkpoint(path: Option<&Path>) -> Result<Checkpoint, WeightsError> {
        match path {
            Some(p) => weights::load(p),
            None => weights::from_bytes(
                Path::new(crate::kinds::interpolate::rife::BUILTIN_WEIGHTS),
                BUILTIN,
            ),
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
        /// The frames of the last network call's last pair, encoded.
        recent: Recent,
    }

    /// Encoded frames kept from one network call to the next, with their packed RGB bytes: when
    /// a clip's rate is raised, each call's first frame is the one before's last, and the
    /// reference implementation encodes each frame once, so this does too. A frame is only
    /// reused for the same bytes at the same size (a copy is compared, not an address, which a
    /// new frame could reuse). Not shared between clones: each node keeps its own.
    #[derive(Default)]
    struct Recent(Mutex<Vec<Kept>>);

    struct Kept {
        rgb: Vec<u8>,
        size: (usize, usize),
        frame: Arc<Encoded>,
    }

    /// Frames kept: the last pair's two.
    const KEEP: usize = 2;

    impl Clone for Recent {
        fn clone(&self) -> Recent {
            Recent::default()
        }
    }

    impl std::fmt::Debug for Recent {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Recent")
        }
    }

    impl Rife {
        pub fn new(ck: &Checkpoint, device: &Device, scale: f32) -> Result<Rife, WeightsError> {
            assert!(SCALES.contains(&scale), "scale {scale} is not supported");
            Ok(Rife {
                net: Arc::new(IfNet::load(ck, device)?),
                scale,
                max_batch: 8,
                recent: Recent::default(),
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
        pub fn interpolate_rgb_with<'a>(
            &self,
            pairs: &[(&'a [u8], &'a [u8])],
            width: usize,
            height: usize,
            items: &[(usize, f32)],
            progress: &dyn Fn(usize),
        ) -> Vec<Vec<u8>> {
            let mut out = Vec::with_capacity(items.len());
            let mut recent =
                std::mem::take(&mut *self.recent.0.lock().unwrap_or_else(|e| e.into_inner()));
            for chunk in items.chunks(self.max_batch.max(1)) {
                // Only the pairs this chunk uses, renumbered.
                let mut used: Vec<usize> = chunk.iter().map(|&(k, _)| k).collect();
                used.sort_unstable();
                used.dedup();
                // Each distinct frame encoded once: found among this chunk's frames by address
                // (one frame passed for two pairs), else among the kept ones by content.
                let mut frames: Vec<(&'a [u8], Arc<Encoded>)> = vec![];
                let mut index = |rgb: &'a [u8]| -> usize {
                    if let Some(k) = frames.iter().position(|(f, _)| std::ptr::eq(*f, rgb)) {
                        return k;
                    }
                    let kept = recent
                        .iter()
                        .find(|k| k.size == (width, height) && k.rgb == rgb)
                        .map(|k| k.frame.clone());
                    let frame = kept.unwrap_or_else(|| {
                        let planar = pixels::to_planar(&[rgb], height, width);
                        Arc::new(self.net.encode(&planar, height, width, self.scale))
                    });
                    frames.push((rgb, frame));
                    frames.len() - 1
                };
                let idx: Vec<(usize, usize)> = used
                    .iter()
                    .map(|&k| (index(pairs[k].0), index(pairs[k].1)))
                    .collect();
                let refs: Vec<(&Encoded, &Encoded)> = idx
                    .iter()
                    .map(|&(a, b)| (&*frames[a].1, &*frames[b].1))
                    .collect();
                let local: Vec<(usize, f32)> = chunk
                    .iter()
                    .map(|&(k, t)| (used.binary_search(&k).expect("listed"), t))
                    .collect();
                for f in self.net.interpolate_encoded(&refs, &local) {
                    out.extend(pixels::from_planar(&f, 1, height, width));
                }
                progress(out.len());
                // Keep the last pair's frames for the next call; the rest go back to the
                // network's buffers.
                let last = idx.last().map(|&(a, b)| [a, b]).unwrap_or_default();
                let mut next: Vec<Kept> = vec![];
                for (k, (rgb, frame)) in frames.into_iter().enumerate() {
                    if last.contains(&k) && next.len() < KEEP {
                        next.push(Kept {
                            rgb: rgb.to_vec(),
                            size: (width, height),
                            frame,
                        });
                    } else {
                        self.release(frame);
                    }
                }
                for old in std::mem::replace(&mut recent, next) {
                    self.release(old.frame);
                }
            }
            *self.recent.0.lock().unwrap_or_else(|e| e.into_inner()) = recent;
            out
        }

        /// Gives an encoded frame's buffer back to the network, unless it is still kept.
        fn release(&self, frame: Arc<Encoded>) {
            if let Ok(frame) = Arc::try_unwrap(frame) {
                self.net.recycle(frame);
            }
        }
    }
}
