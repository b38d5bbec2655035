//! `upscale`: video super-resolution with Real-ESRGAN networks (SRVGGNetCompact and RRDBNet)
//! on the run's compute device, batched and tiled.
//!
//! Frames (u8 RGB) of a batch that share a size go through the network in one call:
//! u8 → f32 NCHW in [0, 1] → network → clamp to [0, 1] → ×255, rounded → u8, as
//! Real-ESRGAN's `RealESRGANer.enhance` does. With `tile > 0`, frames larger than the tile
//! run tile by tile, each tile read with `tile_pad` pixels of context on every side and only
//! its centre kept (RealESRGANer's `tile_process`), so tiles leave no seams.
//!
//! When `scale` differs from the network's own factor, the network's output is resized to
//! `scale` × the input size with a Lanczos-4 filter (8×8 taps, like Real-ESRGAN's `outscale`
//! with OpenCV's `INTER_LANCZOS4`; computed in f32 with replicated borders, so values can differ
//! from OpenCV's fixed-point result by a level or so).
//!
//! The networks and their detection live in [`crate::models::realesrgan`]; `bench` (with the
//! `neural` feature) is this kind's throughput benchmark, run by `benches/upscale.rs`.

#[cfg(feature = "neural")]
pub mod bench;

use vidflow_engine::{BatchConfig, NodeKind, ParamType, PortType, Problem, Temporal, params};

/// The built-in weights' name, as shown in messages.
pub const BUILTIN_NAME: &str = "built-in realesr-animevideov3-x4";

params! {
    /// The params of `upscale`.
    pub struct UpscaleParams {
        /// a Real-ESRGAN checkpoint (.pth or .safetensors; SRVGGNetCompact or RRDBNet,
        /// recognised from its keys); default (or empty): the built-in realesr-animevideov3 x4
        weights: Option<String> = optional(ParamType::Path),
        /// output size ÷ input size; default: the network's own factor. Other values resize
        /// the network's output with Lanczos-4 (Real-ESRGAN's `outscale`)
        scale: Option<f64> = optional(ParamType::float_in(0.1, 16.0)),
        /// run frames larger than this many pixels (width or height) tile by tile; 0: whole
        /// frames
        tile: usize = default(ParamType::int_in(0, 8192), 0),
        /// pixels of context read around each tile and then discarded (24 covers
        /// realesr-animevideov3's receptive field, so its tiles match the whole-frame result;
        /// Real-ESRGAN's default is 10)
        tile_pad: usize = default(ParamType::int_in(0, 512), 24),
        /// arithmetic precision; f16 where the device supports it (else f32, with a note)
        precision: String = default(ParamType::one_of(&["f32", "f16"]), "f32"),
    }
}

pub fn kind() -> NodeKind {
    NodeKind::gated(
        "upscale",
        "Video super-resolution with Real-ESRGAN (SRVGGNetCompact or RRDBNet weights, .pth or .safetensors), batched and optionally tiled, on the run's GPU or CPU.",
        "neural",
        crate::gated_factory!("neural", imp::build),
    )
    .input("frames", PortType::FRAMES, "RGB frames")
    .output("frames", PortType::FRAMES, "upscaled RGB frames, same index and time")
    .params::<UpscaleParams>()
    .temporal(Temporal::PerItem)
    .batched("frames", Some(BatchConfig { max: 8, wait_ms: 20 }))
    .check(|cx| {
        let Some(p) = cx.params::<UpscaleParams>() else {
            return vec![];
        };
        let mut problems = vec![];
        if p.tile > 0 && p.tile < 16 {
            problems.push(
                Problem::param("tile", format!("tile {} is too small", p.tile))
                    .help("use 0 (no tiling) or at least 16; 128 to 512 is typical"),
            );
        }
        problems
    })
    .example("- id: sr\n  kind: upscale\n  params: { scale: 4, tile: 256 }\n  batch: { max: 8, wait_ms: 20 }\n  inputs: { frames: src.frames }\n")
}

#[cfg(feature = "neural")]
pub use imp::*;

#[cfg(feature = "neural")]
mod imp {
    use super::{BUILTIN_NAME, UpscaleParams};
    use crate::gpu::device::Compute;
    use crate::gpu::pixels;
    use crate::models::realesrgan::{self, Arch, Network};
    use crate::weights::{self, Checkpoint, WeightsError};
    use burn::tensor::{DType, Device, Tensor, TensorData};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use vidflow_engine::Emitter;
    use vidflow_engine::{
        BuildCtx, Frame, Input, NodeError, Payload, PixelFormat, Process, Runtime,
    };

    /// The built-in weights: realesr-animevideov3 x4 (Real-ESRGAN, BSD-3-Clause; see
    /// `models/README.md`).
    pub static BUILTIN_WEIGHTS: &[u8] =
        include_bytes!("../../../../models/realesr-animevideov3-x4.safetensors");

    /// Loads a checkpoint file, or the built-in weights for `None`.
    pub fn load_checkpoint(path: Option<&Path>) -> Result<Checkpoint, WeightsError> {
        match path {
            Some(p) => weights::load(p),
            None => weights::from_bytes(Path::new(BUILTIN_NAME), BUILTIN_WEIGHTS),
        }
    }

    /// How frames are run.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct UpscaleOptions {
        /// Output size ÷ input size; `None`: the network's own factor.
        pub scale: Option<f64>,
        /// 0: whole frames.
        pub tile: usize,
        pub tile_pad: usize,
        pub f16: bool,
    }

    impl Default for UpscaleOptions {
        fn default() -> Self {
            UpscaleOptions {
                scale: None,
                tile: 0,
                tile_pad: 24,
                f16: false,
            }
        }
    }

    /// A loaded network on a device, with its run options: the part of the node that tests
    /// and benchmarks use directly.
    pub struct Upscaler {
        pub arch: Arch,
        net: Network,
        device: Device,
        dtype: DType,
        opts: UpscaleOptions,
        /// A note for the log (e.g. f16 unavailable).
        pub note: Option<String>,
    }

    impl Upscaler {
        /// Recognises the checkpoint's architecture and uploads its weights.
        pub fn new(
            ck: &Checkpoint,
            device: &Device,
            opts: UpscaleOptions,
        ) -> Result<Upscaler, WeightsError> {
            let arch = realesrgan::detect(ck)?;
            if arch.in_channels() != 3 || arch.out_channels() != 3 {
                return Err(WeightsError::Architecture {
                    path: ck.path.display().to_string(),
                    why: format!(
                        "{arch} takes {} and gives {} channels; the upscale node works on RGB (3 and 3)",
                        arch.in_channels(),
                        arch.out_channels()
                    ),
                });
            }
            let mut note = None;
            let dtype = if opts.f16 {
                if device.supports_dtype(DType::F16) {
                    DType::F16
                } else {
                    note =
                        Some("precision f16 is not supported by this device; running f32".into());
                    DType::F32
                }
            } else {
                DType::F32
            };
            let net = Network::load(&arch, ck, device, dtype);
            Ok(Upscaler {
                arch,
                net,
                device: device.clone(),
                dtype,
                opts,
                note,
            })
        }

        pub fn net_scale(&self) -> usize {
            self.arch.scale()
        }

        /// Runs the network on an f32 NCHW batch in [0, 1] and returns the raw (unclamped)
        /// output, `[N, 3, H·s, W·s]`, with tiling as configured.
        pub fn forward_nchw(&self, data: &[f32], shape: [usize; 4]) -> Vec<f32> {
            let x = Tensor::<4>::from_data(
                TensorData::new(data.to_vec(), shape.to_vec()),
                (&self.device, DType::F32),
            );
            self.forward_tensor(x, false)
                .into_data()
                .try_into_vec::<f32>()
                .expect("the network's output is f32")
        }

        /// Network over a batch tensor on the device, whole or tiled.
        ///
        /// # Shapes
        /// `[N, 3, H, W]` → `[N, 3, H·s, W·s]`, on the same device
        fn forward_tensor(&self, x: Tensor<4>, clamp: bool) -> Tensor<4> {
            let [n, c, h, w] = x.dims();
            let s = self.net_scale();
            let m = self.net.input_multiple();
            let tile = self.opts.tile;
            if tile == 0 || (w <= tile && h <= tile) {
                return self.run_whole(x, clamp);
            }
            // Tiles of `tile` pixels (a multiple of the network's input multiple), each read
            // with `tile_pad` more pixels of context around it where the frame has them; the
            // centres are put together on the device.
            let tile = tile.div_ceil(m) * m;
            let pad = self.opts.tile_pad.div_ceil(m) * m;
            let mut rows = vec![];
            for y0 in (0..h).step_by(tile) {
                let mut row = vec![];
                for x0 in (0..w).step_by(tile) {
                    let (y1, x1) = ((y0 + tile).min(h), (x0 + tile).min(w));
                    let (py0, px0) = (y0.saturating_sub(pad), x0.saturating_sub(pad));
                    let (py1, px1) = ((y1 + pad).min(h), (x1 + pad).min(w));
                    let part = x.clone().slice([0..n, 0..c, py0..py1, px0..px1]);
                    let y = self.run_whole(part, clamp);
                    let (cy, cx) = ((y0 - py0) * s, (x0 - px0) * s);
                    let (ch, cw) = ((y1 - y0) * s, (x1 - x0) * s);
                    row.push(y.slice([0..n, 0..c, cy..cy + ch, cx..cx + cw]));
                }
                rows.push(Tensor::cat(row, 3));
            }
            Tensor::cat(rows, 2)
        }

        /// The network on a whole batch, reflect-padded to the input multiple (RRDBNet x2/x1)
        /// and cropped back; f32 on the device.
        fn run_whole(&self, x: Tensor<4>, clamp: bool) -> Tensor<4> {
            let [_, _, h, w] = x.dims();
            let m = self.net.input_multiple();
            let (ph, pw) = ((m - h % m) % m, (m - w % m) % m);
            let x = if ph > 0 || pw > 0 {
                reflect_pad(x, ph, pw)
            } else {
                x
            };
            let x = if self.dtype == DType::F32 {
                x
            } else {
                x.cast(self.dtype)
            };
            let mut y = self.net.forward(x);
            if ph > 0 || pw > 0 {
                let [n, c, _, _] = y.dims();
                let s = self.net_scale();
                y = y.slice([0..n, 0..c, 0..h * s, 0..w * s]);
            }
            if clamp {
                y = y.clamp(0.0, 1.0);
            }
            if self.dtype != DType::F32 {
                y = y.cast(DType::F32);
            }
            y
        }

        /// Upscales frames that share a size, as one batch. Output frames keep index, time,
        /// rate and metadata.
        ///
        /// On the CPU device the pixels are converted on the host; on a GPU they cross the bus
        /// as one word per pixel and are converted there ([`pixels`](crate::gpu::pixels)).
        pub fn upscale_frames(&self, frames: &[&Frame]) -> Vec<Frame> {
            let Some(first) = frames.first() else {
                return vec![];
            };
            let (w, h) = (first.width as usize, first.height as usize);
            let n = frames.len();
            let data: Vec<&[u8]> = frames.iter().map(|f| f.data.as_slice()).collect();
            let on_host = self.device == Device::flex();
            let x = if on_host {
                Tensor::<4>::from_data(
                    TensorData::new(pixels::to_planar(&data, h, w), [n, 3, h, w]),
                    (&self.device, DType::F32),
                )
            } else {
                pixels::upload_rgb8(&data, h, w, &self.device)
            };
            let y = self.forward_tensor(x, true);
            let s = self.net_scale();
            let (oh, ow) = (h * s, w * s);
            let rgb = if on_host {
                let y = y
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("the network's output is f32");
                pixels::from_planar(&y, n, oh, ow)
            } else {
                pixels::download_rgb8(y)
            };
            let (tw, th) = match self.opts.scale {
                Some(f) if (f - s as f64).abs() > 1e-9 => (
                    ((w as f64 * f) as usize).max(1),
                    ((h as f64 * f) as usize).max(1),
                ),
                _ => (ow, oh),
            };
            frames
                .iter()
                .zip(rgb)
                .map(|(f, mut rgb)| {
                    if (tw, th) != (ow, oh) {
                        rgb = super::resize_lanczos4(&rgb, ow, oh, tw, th);
                    }
                    Frame {
                        index: f.index,
                        pts: f.pts,
                        rate: f.rate,
                        width: tw as u32,
                        height: th as u32,
                        data: Arc::new(rgb),
                        format: PixelFormat::Rgb24,
                        meta: f.meta.clone(),
                    }
                })
                .collect()
        }
    }

    /// `F.pad(x, (0, pw, 0, ph), mode='reflect')`.
    fn reflect_pad(x: Tensor<4>, ph: usize, pw: usize) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let mut x = x;
        if pw > 0 {
            let cols: Vec<Tensor<4>> = (0..pw)
                .map(|i| {
                    let src = w - 2 - i.min(w - 2);
                    x.clone().slice([0..n, 0..c, 0..h, src..src + 1])
                })
                .collect();
            let mut parts = vec![x];
            parts.extend(cols);
            x = Tensor::cat(parts, 3);
        }
        if ph > 0 {
            let w2 = w + pw;
            let rows: Vec<Tensor<4>> = (0..ph)
                .map(|i| {
                    let src = h - 2 - i.min(h - 2);
                    x.clone().slice([0..n, 0..c, src..src + 1, 0..w2])
                })
                .collect();
            let mut parts = vec![x];
            parts.extend(rows);
            x = Tensor::cat(parts, 2);
        }
        x
    }

    pub(super) fn build(ctx: &BuildCtx<'_>) -> Result<Runtime, NodeError> {
        let p: UpscaleParams = ctx.params()?;
        let node = ctx.node_id.to_string();
        // An empty string (a graph param left at its default) means the built-in weights.
        let path = p
            .weights
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(Path::new);
        let opts = UpscaleOptions {
            scale: p.scale,
            tile: p.tile,
            tile_pad: p.tile_pad,
            f16: p.precision == "f16",
        };
        let compute = Compute::for_run(ctx.shared)?;
        // Loaded once per run, job or worker: replicas and later chunks share it.
        let (key, version) = crate::weights::cache_key("upscale", path, opts);
        let (up, kept) = ctx
            .shared
            .keyed(&key, &version, || {
                let ck = load_checkpoint(path)?;
                let up = Upscaler::new(&ck, &compute.device, opts)?;
                Ok::<_, WeightsError>(Loaded { up, path: ck.path })
            })
            .map_err(|e| NodeError::input(format!("node `{node}`: {e}")))?;
        if !kept {
            vidflow_engine::progress::say(format!(
                "node `{node}`: {} from {}{}",
                up.up.arch,
                up.path.display(),
                up.up
                    .note
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ));
        }
        Ok(Runtime::Process(Box::new(UpscaleNode { node, up })))
    }

    /// A network as a run's `Shared` keeps it, with the file it came from (for the log).
    struct Loaded {
        up: Upscaler,
        path: PathBuf,
    }

    struct UpscaleNode {
        node: String,
        /// The network and the file it came from, shared through the run's `Shared`.
        up: Arc<Loaded>,
    }

    impl Process for UpscaleNode {
        fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
            let mut frames = Vec::with_capacity(input.items.len());
            for item in &input.items {
                match item.as_frame() {
                    Some(f) => frames.push(f),
                    None => {
                        return Err(NodeError::runtime(format!(
                            "node `{}`: expected frames, got {}",
                            self.node,
                            item.describe()
                        )));
                    }
                }
            }
            // Consecutive frames of one size run as one batch; order is kept.
            let mut start = 0;
            while start < frames.len() {
                let (w, h) = (frames[start].width, frames[start].height);
                let end = frames[start..]
                    .iter()
                    .position(|f| (f.width, f.height) != (w, h))
                    .map_or(frames.len(), |k| start + k);
                let outs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.up.up.upscale_frames(&frames[start..end])
                }))
                .map_err(|e| {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    NodeError::runtime(format!(
                        "node `{}`: the compute backend failed on {}x{} frames from {}: {msg}",
                        self.node, w, h, frames[start].index
                    ))
                })?;
                for f in outs {
                    out.emit(0, Payload::Frame(f))?;
                }
                start = end;
            }
            Ok(())
        }
    }
}

/// Resizes packed RGB u8 with an 8×8-tap Lanczos filter (a = 4), as OpenCV's
/// `INTER_LANCZOS4` (source position `(x + 0.5)·src/dst − 0.5`, taps `floor − 3 ..= floor + 4`,
/// weights normalised); borders are replicated.
///
/// The workspace's one Lanczos-4 on the CPU (`shaders/resize_lanczos4.wgsl` runs the same
/// filter on the GPU, and `nodes/tests/nodes/upscale_shaders.rs` compares the two); it stays here
/// because only `upscale` resizes this way.
pub fn resize_lanczos4(src: &[u8], w: usize, h: usize, nw: usize, nh: usize) -> Vec<u8> {
    fn taps(n_src: usize, n_dst: usize) -> Vec<(usize, [usize; 8], [f32; 8])> {
        let scale = n_src as f64 / n_dst as f64;
        (0..n_dst)
            .map(|d| {
                let fx = (d as f64 + 0.5) * scale - 0.5;
                let sx = fx.floor();
                let t = fx - sx;
                let mut idx = [0usize; 8];
                let mut wts = [0f32; 8];
                let mut sum = 0f64;
                let mut raw = [0f64; 8];
                for (i, r) in raw.iter_mut().enumerate() {
                    let dist = t + 3.0 - i as f64;
                    *r = if dist.abs() < 1e-9 {
                        1.0
                    } else {
                        let a = std::f64::consts::PI * dist;
                        4.0 * a.sin() * (a / 4.0).sin() / (a * a)
                    };
                    sum += *r;
                    let p = sx as i64 - 3 + i as i64;
                    idx[i] = p.clamp(0, n_src as i64 - 1) as usize;
                }
                for i in 0..8 {
                    wts[i] = (raw[i] / sum) as f32;
                }
                (d, idx, wts)
            })
            .collect()
    }
    let tx = taps(w, nw);
    let ty = taps(h, nh);
    // Horizontal pass into f32, then vertical.
    let mut mid = vec![0f32; h * nw * 3];
    for y in 0..h {
        for (x, idx, wts) in &tx {
            for c in 0..3 {
                let mut acc = 0f32;
                for k in 0..8 {
                    acc += wts[k] * src[(y * w + idx[k]) * 3 + c] as f32;
                }
                mid[(y * nw + x) * 3 + c] = acc;
            }
        }
    }
    let mut out = vec![0u8; nh * nw * 3];
    for (y, idx, wts) in &ty {
        for x in 0..nw {
            for c in 0..3 {
                let mut acc = 0f32;
                for k in 0..8 {
                    acc += wts[k] * mid[(idx[k] * nw + x) * 3 + c];
                }
                out[(y * nw + x) * 3 + c] = acc.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::resize_lanczos4;

    #[test]
    fn lanczos_keeps_flat_images_flat_and_sizes_right() {
        let src = vec![77u8; 10 * 6 * 3];
        let out = resize_lanczos4(&src, 10, 6, 15, 9);
        assert_eq!(out.len(), 15 * 9 * 3);
        assert!(out.iter().all(|&v| v == 77));
        let same = resize_lanczos4(
            &(0..60 * 3).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
            10,
            6,
            10,
            6,
        );
        assert_eq!(
            same,
            (0..60 * 3).map(|i| (i % 251) as u8).collect::<Vec<_>>()
        );
    }
}
