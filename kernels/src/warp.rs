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
    let mut out = vec![0f32; x.len()];
    if out.is_empty() {
        return out;
    }
    let (lx, ly) = (linspace(w), linspace(h));
    let (div_x, div_y) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let (max_x, max_y) = ((w - 1) as f32, (h - 1) as f32);
    out.par_chunks_mut(w).enumerate().for_each(|(row, out)| {
        let (b, ch, y) = (row / (c * h), row / h % c, row % h);
        let fx = &flow[((b * 2) * h + y) * w..][..w];
        let fy = &flow[((b * 2 + 1) * h + y) * w..][..w];
        let plane = &x[(b * c + ch) * h * w..][..h * w];
        for (xx, o) in out.iter_mut().enumerate() {
            let gx = lx[xx] + fx[xx] / div_x;
            let gy = ly[y] + fy[xx] / div_y;
            let ix = ((gx + 1.0) * div_x).clamp(0.0, max_x);
            let iy = ((gy + 1.0) * div_y).clamp(0.0, max_y);
            let (x0, y0) = (ix.floor(), iy.floor());
            let (we, ns) = (ix - x0, iy - y0);
            let (ww, nn) = (1.0 - we, 1.0 - ns);
            let (x0, y0) = (x0 as usize, y0 as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let at = |yy: usize, xx: usize| plane[yy * w + xx];
            *o = at(y0, x0) * (nn * ww)
                + at(y0, x1) * (nn * we)
                + at(y1, x0) * (ns * ww)
                + at(y1, x1) * (ns * we);
        }
    });
    out
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
