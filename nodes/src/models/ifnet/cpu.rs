//! IFNet v4.25 on the CPU device, on plain `f32` buffers and the kernels of `vidflow-kernels`
//! instead of Burn tensors: the same layers and the same arithmetic as the Burn path (the
//! parity tests hold it to the PyTorch reference), without what made that path slow on two
//! cores:
//! - every step is a parallel kernel, so no phase runs on one core (Burn's CPU backend ran
//!   the resizes, the concatenations, the pixel shuffles and the strided convolutions on
//!   one);
//! - buffers come from a pool that keeps them between calls: fresh multi-megabyte allocations
//!   are fresh pages from the kernel, and faulting them in took a fifth of the time;
//! - the elementwise steps between the layers are fused into the passes that produce their
//!   input: a frame and its features are warped together, and only at the pixels the next
//!   level's downscale reads (4 of every s², bit for bit the same result), straight into
//!   their channels of that level's input (no full-resolution warp, no concatenation); the
//!   flow update rides on the resize that brings a level's output to full resolution;
//! - a frame is encoded once ([`Net::encode`]), so a frame shared by two pairs is not.

use super::{BLOCK_CHANNELS, SCALE_LIST, convt_as_conv3, pad_clamped};
use crate::weights::Checkpoint;
use rayon::prelude::*;
use std::sync::Mutex;
use vidflow_kernels::resize::resize_bilinear_with;
use vidflow_kernels::warp::backward_warp_resized;
use vidflow_kernels::{Activation, Conv3x3, Conv3x3s2};

/// Channels of an encoded frame: the clamped RGB frame, then its 4 Head features.
pub(super) const ENCODED: usize = 7;

const LEAKY: Activation<'static> = Activation::Leaky(0.2);

/// The network's CPU kernels.
#[derive(Debug)]
pub(super) struct Net {
    head: HeadCpu,
    blocks: Vec<Block>,
    /// Buffers of earlier calls, taken and given back by each call.
    pool: Mutex<Pool>,
}

#[derive(Debug)]
struct HeadCpu {
    cnn0: Conv3x3s2,
    cnn1: Conv3x3,
    cnn2: Conv3x3,
    /// The transposed convolution as a 3x3 convolution to 4·4 channels (see `ConvT`).
    cnn3: Conv3x3,
}

#[derive(Debug)]
struct Block {
    conv0a: Conv3x3s2,
    conv0b: Conv3x3s2,
    /// Each `ResConv`'s convolution and `beta`.
    res: Vec<(Conv3x3, Vec<f32>)>,
    /// The transposed convolution as a 3x3 convolution to 4·52 channels (see `ConvT`).
    last: Conv3x3,
}

fn stride2(ck: &Checkpoint, name: &str) -> Conv3x3s2 {
    let w = &ck.tensors[&format!("{name}.weight")];
    let b = &ck.tensors[&format!("{name}.bias")];
    Conv3x3s2::new(&w.data, &b.data, w.shape[0], w.shape[1])
}

fn conv(ck: &Checkpoint, name: &str) -> Conv3x3 {
    let w = &ck.tensors[&format!("{name}.weight")];
    let b = &ck.tensors[&format!("{name}.bias")];
    Conv3x3::new(&w.data, &b.data, w.shape[0], w.shape[1])
}

/// A transposed convolution as the 3x3 convolution `ConvT` runs.
fn convt(ck: &Checkpoint, name: &str) -> Conv3x3 {
    let (w3, bias, cout4, cin) = convt_as_conv3(ck, name);
    Conv3x3::new(&w3, &bias, cout4, cin)
}

impl Net {
    /// The kernels of a checked v4.25 checkpoint.
    pub(super) fn new(ck: &Checkpoint) -> Net {
        Net {
            head: HeadCpu {
                cnn0: stride2(ck, "encode.cnn0"),
                cnn1: conv(ck, "encode.cnn1"),
                cnn2: conv(ck, "encode.cnn2"),
                cnn3: convt(ck, "encode.cnn3"),
            },
            blocks: (0..BLOCK_CHANNELS.len())
                .map(|i| Block {
                    conv0a: stride2(ck, &format!("block{i}.conv0.0.0")),
                    conv0b: stride2(ck, &format!("block{i}.conv0.1.0")),
                    res: (0..8)
                        .map(|r| {
                            let name = format!("block{i}.convblock.{r}");
                            let beta = ck.tensors[&format!("{name}.beta")].data.clone();
                            (conv(ck, &format!("{name}.conv")), beta)
                        })
                        .collect(),
                    last: convt(ck, &format!("block{i}.lastconv.0")),
                })
                .collect(),
            pool: Mutex::new(Pool::default()),
        }
    }

    fn pool(&self) -> Pool {
        std::mem::take(&mut *self.pool.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Gives a call's buffers back. Calls may overlap (the network is shared by a job's
    /// chunks and a node's replicas), so they join what other calls gave back meanwhile.
    fn put_pool(&self, pool: Pool) {
        let mut kept = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        for buf in pool.0 {
            kept.give(buf);
        }
    }

    /// Gives a buffer (an encoded frame that is no longer needed) back to the pool.
    pub(super) fn recycle(&self, buf: Vec<f32>) {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .give(buf);
    }

    /// One frame `[3, h, w]` padded to `[ph, pw]` and clamped to [0, 1] (as `IfNet::encode`
    /// says), then its `encode` Head features: `[7, ph, pw]`, the frame then its features.
    pub(super) fn encode(&self, frame: &[f32], size: [usize; 2], [ph, pw]: [usize; 2]) -> Vec<f32> {
        let plane = ph * pw;
        let mut pool = self.pool();
        let mut out = pool.take(ENCODED * plane);
        pad_clamped(frame, size, [ph, pw], &mut out[..3 * plane]);
        let frame = &out[..3 * plane];
        let (h2, w2) = Conv3x3s2::out_size(ph, pw);
        let mut a = pool.take(16 * h2 * w2);
        let mut b = pool.take(16 * h2 * w2);
        let HeadCpu {
            cnn0,
            cnn1,
            cnn2,
            cnn3,
        } = &self.head;
        cnn0.forward_into(frame, 1, ph, pw, LEAKY, &mut a);
        cnn1.forward_into(&a, 1, h2, w2, LEAKY, &mut b);
        cnn2.forward_into(&b, 1, h2, w2, LEAKY, &mut a);
        cnn3.forward_into(&a, 1, h2, w2, Activation::None, &mut b);
        pixel_shuffle(&b, 1, 4, h2, w2, 1, &mut out[3 * plane..]);
        pool.give(a);
        pool.give(b);
        self.put_pool(pool);
        out
    }

    /// The network on encoded frames (`[7, ph, pw]` each, from [`encode`](Self::encode)):
    /// `pairs` of frames, `items` (pair index, timestep) per output. The result is a pool
    /// buffer: give it back with [`recycle`](Self::recycle).
    ///
    /// # Shapes
    /// → `[items.len(), 3, ph, pw]`, not clamped
    pub(super) fn forward(
        &self,
        pairs: &[(&[f32], &[f32])],
        [ph, pw]: [usize; 2],
        items: &[(usize, f32)],
        scale: f32,
    ) -> Vec<f32> {
        let plane = ph * pw;
        let n = items.len();
        let mut pool = self.pool();
        let frame = |j: usize, side: usize| {
            let (a, b) = pairs[items[j].0];
            if side == 0 { a } else { b }
        };
        // The flow `[n, 4, ph, pw]` and the last level's mask and features `[n, 9, ph, pw]`.
        let mut flow = pool.take(n * 4 * plane);
        let mut mask_feat = pool.take(n * 9 * plane);
        for (i, block) in self.blocks.iter().enumerate() {
            let s = SCALE_LIST[i] / scale;
            let si = s.round() as usize;
            let (hs, ws) = (ph / si, pw / si);
            let cin = if i == 0 { 15 } else { 28 };
            let mut x = pool.take(n * cin * hs * ws);
            x.par_chunks_mut(cin * hs * ws)
                .enumerate()
                .for_each(|(j, x)| {
                    let small = hs * ws;
                    let (f0, f1) = (frame(j, 0), frame(j, 1));
                    // `F.interpolate(x, scale_factor=1/s)` of each part, written into its
                    // channels of the level's input:
                    // img0, img1, f0, f1 (warped from the second level on)…
                    let mut planes: Vec<&mut [f32]> = x.chunks_exact_mut(small).collect();
                    for (side, f) in [f0, f1].into_iter().enumerate() {
                        let (img, rest) = planes.split_at_mut(6);
                        let (feat, _) = rest.split_at_mut(8);
                        let mut out: Vec<&mut [f32]> = (img[3 * side..3 * side + 3].iter_mut())
                            .chain(&mut feat[4 * side..4 * side + 4])
                            .map(|p| &mut **p)
                            .collect();
                        if i == 0 {
                            let (out_img, out_feat) = out.split_at_mut(3);
                            down(&f[..3 * plane], [ph, pw], [hs, ws], out_img);
                            down(&f[3 * plane..], [ph, pw], [hs, ws], out_feat);
                        } else {
                            let fl = &flow[(j * 4 + 2 * side) * plane..][..2 * plane];
                            backward_warp_resized(f, fl, [7, ph, pw], [hs, ws], &mut out);
                        }
                    }
                    // …the timestep map, which is constant, and a bilinear downscale by a
                    // power of two averages equal values with weights 1/4: the constant…
                    x[14 * small..15 * small].fill(items[j].1);
                    // …mask, features and the flow / s.
                    if i > 0 {
                        let mf = &mask_feat[j * 9 * plane..][..9 * plane];
                        let dst = &mut x[15 * small..24 * small];
                        resize_bilinear_with(mf, [9, ph, pw], [hs, ws], dst, |o, v| *o = v);
                        let fl = &flow[j * 4 * plane..][..4 * plane];
                        let dst = &mut x[24 * small..28 * small];
                        resize_bilinear_with(fl, [4, ph, pw], [hs, ws], dst, |o, v| *o = v / s);
                    }
                });
            let tmp = block.forward(&x, n, [hs, ws], &mut pool);
            pool.give(x);
            // `F.interpolate(tmp, scale_factor=s)`: flow (·s, added to the flow so far),
            // mask and features at full resolution.
            for j in 0..n {
                let t = &tmp[j * 13 * hs * ws..][..13 * hs * ws];
                let (t_flow, t_rest) = t.split_at(4 * hs * ws);
                let fl = &mut flow[j * 4 * plane..][..4 * plane];
                if i == 0 {
                    resize_bilinear_with(t_flow, [4, hs, ws], [ph, pw], fl, |o, v| *o = v * s);
                } else {
                    resize_bilinear_with(t_flow, [4, hs, ws], [ph, pw], fl, |o, v| *o += v * s);
                }
                let mf = &mut mask_feat[j * 9 * plane..][..9 * plane];
                resize_bilinear_with(t_rest, [9, hs, ws], [ph, pw], mf, |o, v| *o = v);
            }
            pool.give(tmp);
        }
        // Both frames along the final flow, blended by the mask:
        // warped_img0 · sigmoid(mask) + warped_img1 · (1 − sigmoid(mask)).
        let mut out = pool.take(n * 3 * plane);
        let mut warped1 = pool.take(3 * plane);
        for (j, out) in out.chunks_exact_mut(3 * plane).enumerate() {
            for (f, side, dst) in [(frame(j, 0), 0, &mut *out), (frame(j, 1), 1, &mut warped1)] {
                let fl = &flow[(j * 4 + 2 * side) * plane..][..2 * plane];
                let mut planes: Vec<&mut [f32]> = dst.chunks_exact_mut(plane).collect();
                backward_warp_resized(&f[..3 * plane], fl, [3, ph, pw], [ph, pw], &mut planes);
            }
            let m = &mask_feat[j * 9 * plane..][..plane];
            let (r, rest) = out.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            let chunk = 1 << 14;
            (r.par_chunks_mut(chunk).zip(g.par_chunks_mut(chunk)))
                .zip(b.par_chunks_mut(chunk))
                .enumerate()
                .for_each(|(k, ((r, g), b))| {
                    let m = &m[k * chunk..][..r.len()];
                    let w1 = |c: usize| &warped1[c * plane + k * chunk..][..r.len()];
                    let (r1, g1, b1) = (w1(0), w1(1), w1(2));
                    for p in 0..r.len() {
                        let m = 1.0 / (1.0 + (-m[p]).exp());
                        r[p] = r[p] * m + r1[p] * (1.0 - m);
                        g[p] = g[p] * m + g1[p] * (1.0 - m);
                        b[p] = b[p] * m + b1[p] * (1.0 - m);
                    }
                });
        }
        pool.give(warped1);
        pool.give(flow);
        pool.give(mask_feat);
        self.put_pool(pool);
        out
    }
}

/// `F.interpolate(x, size)` of the `[c, h, w]` planes `x` into the `c` planes `out`.
fn down(x: &[f32], [h, w]: [usize; 2], [oh, ow]: [usize; 2], out: &mut [&mut [f32]]) {
    for (src, dst) in x.chunks_exact(h * w).zip(out) {
        resize_bilinear_with(src, [1, h, w], [oh, ow], dst, |o, v| *o = v);
    }
}

impl Block {
    /// One refinement level on its resized input `[n, cin, hs, ws]`: the convolutions and the
    /// two pixel shuffles. Returns `[n, 13, hs, ws]` (flow 4, mask 1, features 8), not yet
    /// brought to full resolution.
    fn forward(&self, x: &[f32], n: usize, [hs, ws]: [usize; 2], pool: &mut Pool) -> Vec<f32> {
        let c = self.conv0b.out_channels();
        let (h1, w1) = Conv3x3s2::out_size(hs, ws);
        let (h2, w2) = Conv3x3s2::out_size(h1, w1);
        let mut a = pool.take(n * (c / 2) * h1 * w1);
        self.conv0a.forward_into(x, n, hs, ws, LEAKY, &mut a);
        let mut f = pool.take(n * c * h2 * w2);
        self.conv0b.forward_into(&a, n, h1, w1, LEAKY, &mut f);
        pool.give(a);
        let mut g = pool.take(n * c * h2 * w2);
        for (conv, beta) in &self.res {
            conv.forward_scaled_residual_into(&f, n, h2, w2, beta, LEAKY, &mut g);
            std::mem::swap(&mut f, &mut g);
        }
        pool.give(g);
        let mut last = pool.take(n * 4 * 52 * h2 * w2);
        self.last
            .forward_into(&f, n, h2, w2, Activation::None, &mut last);
        pool.give(f);
        // ConvTranspose2d's pixel shuffle and then `nn.PixelShuffle(2)`: one gather.
        let mut tmp = pool.take(n * 13 * 16 * h2 * w2);
        pixel_shuffle(&last, n, 13, h2, w2, 2, &mut tmp);
        pool.give(last);
        debug_assert_eq!((4 * h2, 4 * w2), (hs, ws));
        tmp
    }
}

/// `F.pixel_shuffle(x, 2)` applied `times` (1 or 2) times, as one gather:
/// `out[c][2y + a][2x + b] = in[4c + 2a + b][y][x]`, and twice
/// `out[c][4y + 2a₁ + a₂][4x + 2b₁ + b₂] = in[4(4c + 2a₂ + b₂) + 2a₁ + b₁][y][x]`.
///
/// # Shapes
/// `x`: `[n, c·4^times, h, w]` → `out`: `[n, c, h·2^times, w·2^times]`
fn pixel_shuffle(x: &[f32], n: usize, c: usize, h: usize, w: usize, times: u32, out: &mut [f32]) {
    let r = 1usize << times;
    let (oh, ow) = (h * r, w * r);
    assert_eq!(x.len(), n * c * r * r * h * w);
    assert_eq!(out.len(), n * c * oh * ow);
    // The sub-pixel position (sy, sx) of a block of r x r outputs → the input channel
    // offset: for r = 4, (a₁, a₂) = (sy / 2, sy % 2) and (b₁, b₂) = (sx / 2, sx % 2).
    let sub = |sy: usize, sx: usize| match times {
        1 => sy * 2 + sx,
        _ => ((sy % 2) * 2 + sx % 2) * 4 + (sy / 2) * 2 + sx / 2,
    };
    out.par_chunks_mut(ow).enumerate().for_each(|(row, out)| {
        let (plane, oy) = (row / oh, row % oh);
        let (b, co) = (plane / c, plane % c);
        let (y, sy) = (oy / r, oy % r);
        let at = |sx: usize| &x[((b * c + co) * r * r + sub(sy, sx)) * h * w + y * w..][..w];
        let srcs: [&[f32]; 4] = std::array::from_fn(|sx| at(sx.min(r - 1)));
        for (xx, o) in out.chunks_exact_mut(r).enumerate() {
            for (o, src) in o.iter_mut().zip(&srcs) {
                *o = src[xx];
            }
        }
    });
}

/// Buffers kept between calls (see the module's doc). A buffer is taken at the length a step
/// needs and every kernel writes all of it, so what it held before does not matter.
#[derive(Debug, Default)]
struct Pool(Vec<Vec<f32>>);

impl Pool {
    /// A buffer of `len` floats: the smallest kept one that holds them, else a new one.
    fn take(&mut self, len: usize) -> Vec<f32> {
        let best = (self.0.iter().enumerate())
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        let mut v = best.map_or_else(Vec::new, |i| self.0.swap_remove(i));
        // Shortening writes nothing; only a longer buffer's new tail is zeroed.
        v.truncate(len);
        v.resize(len, 0.0);
        v
    }

    fn give(&mut self, v: Vec<f32>) {
        // Enough for one call's buffers; beyond that (another size of frame), the oldest go.
        const KEEP: usize = 24;
        if self.0.len() >= KEEP {
            self.0.remove(0);
        }
        self.0.push(v);
    }
}
