//! Backward warping, `F.grid_sample(x, grid + flow / div, mode='bilinear',
//! padding_mode='border', align_corners=True)` with the identity grid, the way RIFE moves
//! frames and features along a flow. On Burn's CPU backend the same sampling composed of
//! tensor operations takes some thirty passes over the frame and four gathers through
//! `[N, C, H·W]` index tensors; here it is one pass.
//!
//! The arithmetic is PyTorch's CPU kernel's, operation by operation (the normalised grid
//! coordinate, unnormalised as `(g + 1)·(size − 1)/2`, clipped to the border, then the four
//! corner weights), because RIFE's flow on textured input is chaotic enough that a
//! differently rounded coordinate moves the result by more than 1e-4.

use crate::resize::axis;
use crate::simd::with_avx2;
use crate::winograd::OutPtr;
use rayon::prelude::*;

/// `torch.linspace(-1, 1, n)` in f32, computed the way PyTorch does (from both ends).
pub fn linspace(n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![-1.0];
    }
    let step = 2.0f32 / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                -1.0 + step * i as f32
            } else {
                1.0 - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// Samples every pixel of `x` moved by `flow` (in pixels; channel 0 along x, 1 along y).
///
/// # Shapes
/// `x`: `[n, c, h, w]`, `flow`: `[n, 2, h, w]`, row-major → `[n, c, h, w]`
pub fn backward_warp(x: &[f32], flow: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    backward_warp_into(x, flow, n, c, h, w, &mut out);
    out
}

/// [`backward_warp`] into a buffer the caller reuses; every element of `out` is written.
/// All channels of one image move with the same flow, so warping a frame and its features
/// together (as `[c1 + c2, h, w]`) finds each pixel's taps once.
pub fn backward_warp_into(
    x: &[f32],
    flow: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    out: &mut [f32],
) {
    assert_eq!(x.len(), n * c * h * w, "input is not [n, c, h, w]");
    assert_eq!(flow.len(), n * 2 * h * w, "flow is not [n, 2, h, w]");
    assert_eq!(out.len(), x.len(), "output is not [n, c, h, w]");
    if out.is_empty() {
        return;
    }
    let grid = Grid::new(h, w);
    let dst = OutPtr(out.as_mut_ptr());
    // One job per output row: first where each of its pixels samples from (four corner offsets,
    // four weights), shared by all channels; then the channels.
    (0..n * h).into_par_iter().for_each_init(
        || vec![Tap::default(); w],
        |taps, row| {
            let (b, y) = (row / h, row % h);
            let fx = &flow[((b * 2) * h + y) * w..][..w];
            let fy = &flow[((b * 2 + 1) * h + y) * w..][..w];
            with_avx2(|| {
                for (xx, tap) in taps.iter_mut().enumerate() {
                    *tap = grid.tap(y, xx, fx[xx], fy[xx]);
                }
            });
            for ch in 0..c {
                let plane = &x[(b * c + ch) * h * w..][..h * w];
                // SAFETY: job (b, y) writes only row y of each channel of image b: the jobs'
                // rows are disjoint, and `out` outlives the parallel loop.
                let o = unsafe { dst.slice(((b * c + ch) * h + y) * w, w) };
                for (o, t) in o.iter_mut().zip(taps.iter()) {
                    *o = t.sample(plane);
                }
            }
        },
    );
}

/// `resize_bilinear(backward_warp(x, flow), oh, ow)` for one image, computed only where the
/// resize looks: RIFE warps each frame and its features along the flow and then shrinks them
/// to the next refinement level's size, where a bilinear downscale by s reads 4 of every s²
/// warped pixels. Each of those is warped exactly as [`backward_warp`] does and they are
/// combined exactly as [`resize_bilinear`](crate::resize_bilinear) does, so the result is the
/// same, bit for bit. At the same size it is the warp alone.
///
/// # Shapes
/// `x`: `[c, h, w]`, `flow`: `[2, h, w]`, `out`: `c` planes of `oh·ow`, row-major
pub fn backward_warp_resized(
    x: &[f32],
    flow: &[f32],
    [c, h, w]: [usize; 3],
    [oh, ow]: [usize; 2],
    out: &mut [&mut [f32]],
) {
    assert_eq!(x.len(), c * h * w, "input is not [c, h, w]");
    assert_eq!(flow.len(), 2 * h * w, "flow is not [2, h, w]");
    assert_eq!(out.len(), c, "not one output plane per channel");
    assert!(
        out.iter().all(|p| p.len() == oh * ow),
        "an output plane is not oh x ow"
    );
    if c == 0 || oh * ow == 0 {
        return;
    }
    let grid = Grid::new(h, w);
    let tap = |y: usize, xx: usize| grid.tap(y, xx, flow[y * w + xx], flow[(h + y) * w + xx]);
    let same = (oh, ow) == (h, w);
    let (ys, xs) = (axis(h, oh), axis(w, ow));
    let planes: Vec<OutPtr> = out.iter_mut().map(|p| OutPtr(p.as_mut_ptr())).collect();
    // One job per output row: the taps of the warped pixels it reads, then every channel.
    (0..oh).into_par_iter().for_each_init(
        || Vec::<Tap>::with_capacity(4 * ow),
        |taps, oy| {
            taps.clear();
            let a = ys[oy];
            with_avx2(|| {
                if same {
                    taps.extend((0..ow).map(|ox| tap(oy, ox)));
                } else {
                    // Per output pixel: (row lo, col lo), (lo, hi), (hi, lo), (hi, hi).
                    for t in &xs {
                        for y in [a.lo, a.lo + a.step] {
                            taps.push(tap(y, t.lo));
                            taps.push(tap(y, t.lo + t.step));
                        }
                    }
                }
            });
            for (ch, dst) in planes.iter().enumerate() {
                let plane = &x[ch * h * w..][..h * w];
                // SAFETY: job oy writes only row oy of each output plane: the jobs' rows are
                // disjoint, and `out` outlives the parallel loop.
                let row = unsafe { dst.slice(oy * ow, ow) };
                with_avx2(|| {
                    if same {
                        for (o, t) in row.iter_mut().zip(taps.iter()) {
                            *o = t.sample(plane);
                        }
                    } else {
                        for ((o, t), q) in row.iter_mut().zip(&xs).zip(taps.chunks_exact(4)) {
                            let p: [f32; 4] = std::array::from_fn(|k| q[k].sample(plane));
                            // `resize_bilinear`'s sum, in its order.
                            *o = p[0] * t.w_lo * a.w_lo
                                + p[1] * t.w_hi * a.w_lo
                                + p[2] * t.w_lo * a.w_hi
                                + p[3] * t.w_hi * a.w_hi;
                        }
                    }
                });
            }
        },
    );
}

/// Where one output pixel samples from: four offsets into the plane (top-left, top-right,
/// bottom-left, bottom-right) and their bilinear weights.
#[derive(Clone, Copy, Default)]
struct Tap {
    at: [u32; 4],
    weight: [f32; 4],
}

impl Tap {
    /// The bilinear sample of `plane` at this tap.
    #[inline(always)]
    fn sample(&self, plane: &[f32]) -> f32 {
        let v = self.at.map(|i| plane[i as usize]);
        v[0] * self.weight[0]
            + v[1] * self.weight[1]
            + v[2] * self.weight[2]
            + v[3] * self.weight[3]
    }
}

/// The identity grid of an `h` × `w` plane and its constants, for [`Grid::tap`].
struct Grid {
    lx: Vec<f32>,
    ly: Vec<f32>,
    div: (f32, f32),
    max: (f32, f32),
    h: usize,
    w: usize,
}

impl Grid {
    fn new(h: usize, w: usize) -> Grid {
        assert!(
            h * w <= u32::MAX as usize,
            "a plane of {h}x{w} pixels is too large"
        );
        Grid {
            lx: linspace(w),
            ly: linspace(h),
            div: ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0),
            max: ((w - 1) as f32, (h - 1) as f32),
            h,
            w,
        }
    }

    /// Where the warped pixel (y, x) samples from when moved by (`fx`, `fy`) pixels:
    /// PyTorch's `grid_sample` arithmetic, operation by operation.
    #[inline(always)]
    fn tap(&self, y: usize, xx: usize, fx: f32, fy: f32) -> Tap {
        let (w, h) = (self.w, self.h);
        let gx = self.lx[xx] + fx / self.div.0;
        let gy = self.ly[y] + fy / self.div.1;
        let ix = ((gx + 1.0) * self.div.0).clamp(0.0, self.max.0);
        let iy = ((gy + 1.0) * self.div.1).clamp(0.0, self.max.1);
        let (x0, y0) = (ix.floor(), iy.floor());
        let (we, ns) = (ix - x0, iy - y0);
        let (ww, nn) = (1.0 - we, 1.0 - ns);
        let (x0, y0) = (x0 as usize, y0 as usize);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        Tap {
            at: [y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1].map(|i| i as u32),
            weight: [nn * ww, nn * we, ns * ww, ns * we],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::noise;

    #[test]
    fn warping_at_the_resized_points_equals_warping_then_resizing() {
        let (c, h, w) = (3, 16, 24);
        let x = noise(c * h * w, 7);
        let flow: Vec<f32> = noise(2 * h * w, 8).iter().map(|v| v * 6.0).collect();
        let warped = backward_warp(&x, &flow, 1, c, h, w);
        for (oh, ow) in [(h, w), (h / 2, w / 2), (h / 8, w / 8)] {
            let want = crate::resize_bilinear(&warped, 1, c, h, w, oh, ow);
            let mut got = vec![f32::NAN; c * oh * ow];
            let mut planes: Vec<&mut [f32]> = got.chunks_exact_mut(oh * ow).collect();
            backward_warp_resized(&x, &flow, [c, h, w], [oh, ow], &mut planes);
            assert_eq!(got, want, "{oh}x{ow}");
        }
    }

    #[test]
    fn zero_flow_is_the_identity() {
        let (n, c, h, w) = (2, 3, 5, 7);
        let x: Vec<f32> = (0..n * c * h * w).map(|i| i as f32 * 0.37).collect();
        let flow = vec![0f32; n * 2 * h * w];
        let y = backward_warp(&x, &flow, n, c, h, w);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn a_whole_pixel_shift_moves_the_image_and_clamps_at_the_border() {
        let (h, w) = (4, 6);
        let x: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
        // Sample one pixel to the right (x + 1) and one up (y − 1).
        let mut flow = vec![1f32; h * w];
        flow.extend(vec![-1f32; h * w]);
        let y = backward_warp(&x, &flow, 1, 1, h, w);
        for yy in 0..h {
            for xx in 0..w {
                let want = x[yy.saturating_sub(1) * w + (xx + 1).min(w - 1)];
                let got = y[yy * w + xx];
                assert!((got - want).abs() < 1e-4, "({yy}, {xx}): {got} vs {want}");
            }
        }
    }

    #[test]
    fn half_a_pixel_is_the_mean_of_two_neighbours() {
        let (h, w) = (3, 5);
        let x: Vec<f32> = (0..h * w).map(|i| (i * i) as f32).collect();
        let mut flow = vec![0.5f32; h * w];
        flow.extend(vec![0f32; h * w]);
        let y = backward_warp(&x, &flow, 1, 1, h, w);
        for yy in 0..h {
            for xx in 0..w - 1 {
                let want = (x[yy * w + xx] + x[yy * w + xx + 1]) / 2.0;
                let got = y[yy * w + xx];
                assert!((got - want).abs() < 1e-3, "({yy}, {xx}): {got} vs {want}");
            }
        }
    }
}
