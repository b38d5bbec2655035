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
    assert_eq!(x.len(), n * c * h * w, "input is not [n, c, h, w]");
    assert_eq!(flow.len(), n * 2 * h * w, "flow is not [n, 2, h, w]");
    assert!(
        h * w <= u32::MAX as usize,
        "a plane of {h}x{w} pixels is too large"
    );
    let mut out = vec![0f32; x.len()];
    if out.is_empty() {
        return out;
    }
    // First where each pixel samples from (four corner offsets, four weights), shared by all
    // channels; then the channels, row by row.
    let (lx, ly) = (linspace(w), linspace(h));
    let (div_x, div_y) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let (max_x, max_y) = ((w - 1) as f32, (h - 1) as f32);
    let mut taps = vec![Tap::default(); n * h * w];
    taps.par_chunks_mut(w).enumerate().for_each(|(row, taps)| {
        let (b, y) = (row / h, row % h);
        let fx = &flow[((b * 2) * h + y) * w..][..w];
        let fy = &flow[((b * 2 + 1) * h + y) * w..][..w];
        for (xx, tap) in taps.iter_mut().enumerate() {
            let gx = lx[xx] + fx[xx] / div_x;
            let gy = ly[y] + fy[xx] / div_y;
            let ix = ((gx + 1.0) * div_x).clamp(0.0, max_x);
            let iy = ((gy + 1.0) * div_y).clamp(0.0, max_y);
            let (x0, y0) = (ix.floor(), iy.floor());
            let (we, ns) = (ix - x0, iy - y0);
            let (ww, nn) = (1.0 - we, 1.0 - ns);
            let (x0, y0) = (x0 as usize, y0 as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            *tap = Tap {
                at: [y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1].map(|i| i as u32),
                weight: [nn * ww, nn * we, ns * ww, ns * we],
            };
        }
    });
    out.par_chunks_mut(w).enumerate().for_each(|(row, out)| {
        let (b, ch, y) = (row / (c * h), row / h % c, row % h);
        let taps = &taps[(b * h + y) * w..][..w];
        let plane = &x[(b * c + ch) * h * w..][..h * w];
        for (o, t) in out.iter_mut().zip(taps) {
            let v = t.at.map(|i| plane[i as usize]);
            *o = v[0] * t.weight[0] + v[1] * t.weight[1] + v[2] * t.weight[2] + v[3] * t.weight[3];
        }
    });
    out
}

/// Where one output pixel samples from: four offsets into the plane (top-left, top-right,
/// bottom-left, bottom-right) and their bilinear weights.
#[derive(Clone, Copy, Default)]
struct Tap {
    at: [u32; 4],
    weight: [f32; 4],
}

#[cfg(test)]
mod tests {
    use super::*;

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
