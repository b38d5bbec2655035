//! Bilinear resizing, `F.interpolate(x, size, mode='bilinear', align_corners=False)`, as
//! PyTorch computes its coordinates: `(dst + 0.5)·in/out − 0.5`, clamped at 0, in f32. The
//! four corner products are summed in the order of Burn's CPU kernel (which RIFE's parity
//! tests were measured with; summing row by row measured 1.5x further from the PyTorch
//! fixtures on the real photo pair). RIFE resizes its inputs and its flow at every refinement
//! level; Burn's CPU backend recomputes both coordinates in f64 for every output pixel, this
//! kernel once per row and column.

use crate::simd::with_avx2;
use rayon::prelude::*;

/// One output coordinate: the lower source index, the step to the upper one (0 at the last
/// source pixel) and the two weights.
#[derive(Clone, Copy)]
pub(crate) struct Axis {
    pub(crate) lo: usize,
    pub(crate) step: usize,
    pub(crate) w_lo: f32,
    pub(crate) w_hi: f32,
}

pub(crate) fn axis(input: usize, output: usize) -> Vec<Axis> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|d| {
            let real = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let lo = (real as usize).min(input - 1);
            let w_hi = real - lo as f32;
            Axis {
                lo,
                step: usize::from(lo < input - 1),
                w_lo: 1.0 - w_hi,
                w_hi,
            }
        })
        .collect()
}

/// # Shapes
/// `x`: `[n, c, h, w]` row-major → `[n, c, oh, ow]`
pub fn resize_bilinear(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; n * c * oh * ow];
    resize_bilinear_with(x, [n * c, h, w], [oh, ow], &mut out, |o, v| *o = v);
    out
}

/// Resizes the `planes` planes of `h`x`w` (`[planes, h, w]` = `dims`) to `oh`x`ow` and hands
/// each resized value with its place in `out` to `apply`, which stores it (`*o = v`) or
/// combines it with what is there: the elementwise step after a resize needs no pass of its
/// own.
///
/// # Shapes
/// `x`: `[planes, h, w]`, `out`: `[planes, oh, ow]`, row-major
pub fn resize_bilinear_with(
    x: &[f32],
    [planes, h, w]: [usize; 3],
    [oh, ow]: [usize; 2],
    out: &mut [f32],
    apply: impl Fn(&mut f32, f32) + Sync,
) {
    assert_eq!(x.len(), planes * h * w, "input is not [planes, h, w]");
    assert_eq!(
        out.len(),
        planes * oh * ow,
        "output is not [planes, oh, ow]"
    );
    if out.is_empty() {
        return;
    }
    assert!(h > 0 && w > 0, "cannot resize an empty image to {oh}x{ow}");
    if (h, w) == (oh, ow) {
        // The identity (weights 1 and 0: the same value): one pass without the taps.
        out.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .for_each(|(out, x)| {
                for (o, &v) in out.iter_mut().zip(x) {
                    apply(o, v);
                }
            });
        return;
    }
    let (ys, xs) = (axis(h, oh), axis(w, ow));
    // Rows of several planes per job when the planes are small, so that a job is worth
    // sending to another thread.
    let rows = (4096 / ow).clamp(1, oh);
    out.par_chunks_mut(rows * ow)
        .enumerate()
        .for_each(|(chunk, out)| {
            with_avx2(|| {
                for (k, out) in out.chunks_mut(ow).enumerate() {
                    let row = chunk * rows + k;
                    let (plane, y) = (row / oh, row % oh);
                    let a = ys[y];
                    let src = &x[plane * h * w..][..h * w];
                    let r0 = &src[a.lo * w..][..w];
                    let r1 = &src[(a.lo + a.step) * w..][..w];
                    for (o, t) in out.iter_mut().zip(&xs) {
                        let v = r0[t.lo] * t.w_lo * a.w_lo
                            + r0[t.lo + t.step] * t.w_hi * a.w_lo
                            + r1[t.lo] * t.w_lo * a.w_hi
                            + r1[t.lo + t.step] * t.w_hi * a.w_hi;
                        apply(o, v);
                    }
                }
            })
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_size_is_the_identity() {
        let x: Vec<f32> = (0..2 * 3 * 5 * 7).map(|i| i as f32 * 0.1).collect();
        assert_eq!(resize_bilinear(&x, 2, 3, 5, 7, 5, 7), x);
    }

    #[test]
    fn doubling_matches_pytorch() {
        // torch.nn.functional.interpolate(torch.arange(6.).view(1, 1, 2, 3), size=(4, 6),
        // mode='bilinear', align_corners=False)
        let x: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let want = [
            0.0, 0.25, 0.75, 1.25, 1.75, 2.0, //
            0.75, 1.0, 1.5, 2.0, 2.5, 2.75, //
            2.25, 2.5, 3.0, 3.5, 4.0, 4.25, //
            3.0, 3.25, 3.75, 4.25, 4.75, 5.0,
        ];
        let got = resize_bilinear(&x, 1, 1, 2, 3, 4, 6);
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn halving_averages_pixel_pairs() {
        // Downscaling by exactly 2 samples midway between pixel pairs.
        let (h, w) = (4, 8);
        let x: Vec<f32> = (0..h * w).map(|i| ((i * 37) % 11) as f32).collect();
        let got = resize_bilinear(&x, 1, 1, h, w, h / 2, w / 2);
        for y in 0..h / 2 {
            for xx in 0..w / 2 {
                let p = |yy: usize, xq: usize| x[yy * w + xq];
                let want = (p(2 * y, 2 * xx)
                    + p(2 * y, 2 * xx + 1)
                    + p(2 * y + 1, 2 * xx)
                    + p(2 * y + 1, 2 * xx + 1))
                    / 4.0;
                assert!((got[y * (w / 2) + xx] - want).abs() < 1e-5);
            }
        }
    }
}
