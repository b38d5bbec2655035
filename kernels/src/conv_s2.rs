//! 3x3 convolution, stride 2, padding 1 (`nn.Conv2d(cin, cout, 3, 2, 1)`), the downsampling
//! convolution of RIFE's Head and of the first two layers of every IFBlock.
//!
//! Winograd does not apply to a strided convolution, so this is im2col and one GEMM per block
//! of output pixels: the 9·cin input values each output pixel sees are gathered into a
//! `[9·cin, cols]` matrix (in the core's L2 cache), multiplied by the `[cout, 9·cin]` weights
//! straight into the output rows, and the bias and activation are applied to those rows while
//! they are still in cache. Blocks are one output row wide (up to [`COLS`] pixels), spread over
//! rayon's threads.

use crate::simd::with_avx2;
use crate::winograd::{Activation, OutPtr, product};
use rayon::prelude::*;

/// Output pixels per block: the gathered input of a 28-channel layer (252 rows) is then
/// 252 KiB, half a core's L2 cache.
pub const COLS: usize = 256;

/// A 3x3 stride-2 convolution with its weights as a `[cout, cin·9]` matrix.
#[derive(Clone, Debug)]
pub struct Conv3x3s2 {
    cin: usize,
    cout: usize,
    /// `[cout][(ky·3 + kx)·cin + ci]`: the input channel innermost, as Burn's CPU backend
    /// orders the sum (the sums' rounding then matches that backend's, which RIFE's parity
    /// tests were measured with: RIFE on random texture amplifies a rounding difference here
    /// to 1e-4 at its output).
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Conv3x3s2 {
    /// # Shapes
    /// `weight`: `[cout, cin, 3, 3]` row-major (PyTorch's layout); `bias`: `[cout]`.
    pub fn new(weight: &[f32], bias: &[f32], cout: usize, cin: usize) -> Conv3x3s2 {
        assert_eq!(
            weight.len(),
            cout * cin * 9,
            "weight is not [cout, cin, 3, 3]"
        );
        assert_eq!(bias.len(), cout, "bias is not [cout]");
        let mut w = vec![0f32; weight.len()];
        for co in 0..cout {
            for ci in 0..cin {
                for k in 0..9 {
                    w[(co * 9 + k) * cin + ci] = weight[(co * cin + ci) * 9 + k];
                }
            }
        }
        Conv3x3s2 {
            cin,
            cout,
            weight: w,
            bias: bias.to_vec(),
        }
    }

    pub fn in_channels(&self) -> usize {
        self.cin
    }

    pub fn out_channels(&self) -> usize {
        self.cout
    }

    /// The output size for an `h`x`w` input: `(⌊(h − 1) / 2⌋ + 1, ⌊(w − 1) / 2⌋ + 1)`.
    pub fn out_size(h: usize, w: usize) -> (usize, usize) {
        (h.div_ceil(2), w.div_ceil(2))
    }

    /// Convolves a batch into `y`, then applies `act`.
    ///
    /// # Shapes
    /// `x`: `[n, cin, h, w]`, `y`: `[n, cout, oh, ow]` (see [`out_size`](Self::out_size)),
    /// both row-major; every element of `y` is written.
    pub fn forward_into(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        act: Activation,
        y: &mut [f32],
    ) {
        let (cin, cout) = (self.cin, self.cout);
        let (oh, ow) = Self::out_size(h, w);
        assert_eq!(x.len(), n * cin * h * w, "input is not [n, cin, h, w]");
        assert_eq!(
            y.len(),
            n * cout * oh * ow,
            "output is not [n, cout, oh, ow]"
        );
        if y.is_empty() {
            return;
        }
        let blocks = ow.div_ceil(COLS);
        let block_len = ow.div_ceil(blocks);
        let out = OutPtr(y.as_mut_ptr());
        let k = cin * 9;
        (0..n * oh * blocks).into_par_iter().for_each(|job| {
            COLUMNS.with_borrow_mut(|cols| {
                if cols.len() < k * COLS {
                    cols.resize(k * COLS, 0.0);
                }
                let (b, rest) = (job / (oh * blocks), job % (oh * blocks));
                let (oy, j0) = (rest / blocks, (rest % blocks) * block_len);
                let len = block_len.min(ow - j0);
                let plane = &x[b * cin * h * w..][..cin * h * w];
                with_avx2(|| gather(plane, [h, w], [oy, j0, len], cols));
                // SAFETY: job (b, oy, j0) writes only row oy, columns j0 .. j0 + len of each
                // output channel of image b: the jobs' regions are disjoint, and `y` outlives
                // the parallel loop. The three matrices lie inside their buffers.
                unsafe {
                    let dst = out.at(b * cout * oh * ow + oy * ow + j0);
                    product(
                        [cout, len, k],
                        dst,
                        oh * ow,
                        self.weight.as_ptr(),
                        cols.as_ptr(),
                        COLS,
                    );
                    with_avx2(|| {
                        for co in 0..cout {
                            let row = std::slice::from_raw_parts_mut(dst.add(co * oh * ow), len);
                            finish(row, self.bias[co], act.slope(co));
                        }
                    });
                }
            })
        });
    }
}

thread_local! {
    /// Each thread's gathered input, kept from one layer to the next (a fresh buffer per layer
    /// is fresh pages to fault in).
    static COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `cols[(ky·3 + kx)·cin + ci][j] = x[ci][2·oy + ky − 1][2·(j0 + j) + kx − 1]`, 0 outside the image,
/// for the `len` output pixels of row `oy` from column `j0`.
#[inline(always)]
fn gather(plane: &[f32], [h, w]: [usize; 2], [oy, j0, len]: [usize; 3], cols: &mut [f32]) {
    let cin = plane.len() / (h * w);
    for ci in 0..cin {
        for ky in 0..3 {
            let y = (2 * oy + ky) as isize - 1;
            let src = (0..h as isize)
                .contains(&y)
                .then(|| &plane[(ci * h + y as usize) * w..][..w]);
            for kx in 0..3 {
                let dst = &mut cols[((ky * 3 + kx) * cin + ci) * COLS..][..len];
                let Some(src) = src else {
                    dst.fill(0.0);
                    continue;
                };
                // Input column of output j: 2·(j0 + j) + kx − 1; inside for j in lo..hi.
                let x0 = 2 * j0 as isize + kx as isize - 1;
                let lo = usize::from(x0 < 0);
                let hi = (((w as isize - x0) + 1) / 2).clamp(lo as isize, len as isize) as usize;
                dst[..lo].fill(0.0);
                for (j, d) in dst[lo..hi].iter_mut().enumerate() {
                    *d = src[(x0 + 2 * (lo + j) as isize) as usize];
                }
                dst[hi..].fill(0.0);
            }
        }
    }
}

/// Adds the bias and applies the activation's slope to negative values.
#[inline(always)]
fn finish(row: &mut [f32], bias: f32, slope: f32) {
    for v in row.iter_mut() {
        let z = *v + bias;
        *v = if z < 0.0 { z * slope } else { z };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{direct_conv, noise};
    use proptest::prelude::*;

    /// The direct strided convolution in f64; `dims` is `[n, cin, cout, h, w]`.
    fn direct(x: &[f32], wt: &[f32], bias: &[f32], dims: [usize; 5]) -> Vec<f32> {
        let [n, cin, cout, h, w] = dims;
        let d = [n, cin, cout, h, w, 3, 3, 2, 2, 1, 1];
        direct_conv(x, wt, bias, d)
            .into_iter()
            .map(|v| v as f32)
            .collect()
    }

    fn check(n: usize, cin: usize, cout: usize, h: usize, w: usize, seed: u64) {
        let x = noise(n * cin * h * w, seed);
        let wt = noise(cout * cin * 9, seed + 1);
        let bias = noise(cout, seed + 2);
        let conv = Conv3x3s2::new(&wt, &bias, cout, cin);
        let (oh, ow) = Conv3x3s2::out_size(h, w);
        let mut got = vec![f32::NAN; n * cout * oh * ow];
        conv.forward_into(&x, n, h, w, Activation::None, &mut got);
        let want = direct(&x, &wt, &bias, [n, cin, cout, h, w]);
        let tol = 1e-5 * (cin as f32 * 9.0).sqrt();
        let d = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d <= tol, "{n}x{cin}→{cout} {h}x{w}: max diff {d} > {tol}");
    }

    #[test]
    fn matches_direct_convolution_on_even_odd_and_wide_sizes() {
        check(1, 3, 16, 8, 8, 1);
        check(2, 5, 7, 7, 9, 2);
        check(1, 1, 1, 1, 1, 3);
        check(1, 4, 3, 2, 3, 4);
        // Three column blocks, the last one short.
        check(1, 3, 4, 3, 2 * 2 * COLS + 5, 5);
    }

    #[test]
    fn fuses_leaky_relu() {
        let (cin, cout, h, w) = (3, 4, 6, 10);
        let x = noise(cin * h * w, 7);
        let wt = noise(cout * cin * 9, 8);
        let bias = noise(cout, 9);
        let conv = Conv3x3s2::new(&wt, &bias, cout, cin);
        let (oh, ow) = Conv3x3s2::out_size(h, w);
        let mut plain = vec![0f32; cout * oh * ow];
        let mut leaky = plain.clone();
        conv.forward_into(&x, 1, h, w, Activation::None, &mut plain);
        conv.forward_into(&x, 1, h, w, Activation::Leaky(0.2), &mut leaky);
        assert!(plain.iter().any(|v| *v < 0.0));
        for (p, l) in plain.iter().zip(&leaky) {
            assert_eq!(*l, if *p < 0.0 { p * 0.2 } else { *p });
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_direct_convolution_on_random_shapes(
            n in 1usize..3, cin in 1usize..9, cout in 1usize..9,
            h in 1usize..12, w in 1usize..12, seed in 0u64..1000,
        ) {
            check(n, cin, cout, h, w, seed);
        }
    }
}
