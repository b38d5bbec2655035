//! General 2-D convolution and transposed convolution (any kernel size, stride and padding) as
//! matrix products over a whole batch.
//!
//! A convolution is `W · col`, with `W` the weights as `[cout, cin·kh·kw]` (PyTorch's layout as
//! it is) and `col` the input patches of the output pixels (im2col), one column per output
//! pixel. The columns of every image of the batch are one matrix here: on small feature maps
//! (a 3x3 map has 9 pixels) a product per image would stream all of `W` for a handful of
//! columns, so batching is what makes them fast.
//!
//! Work is split in blocks of columns (each block's patches sized to stay in L2 while the
//! product runs) and, when there are too few blocks to keep every thread busy, in blocks of
//! output channels too, so that each thread streams only its share of the weights. Bias,
//! residual and activation are applied to each block as it comes out of the product, while it
//! is in cache.

use crate::winograd::{Activation, OutPtr, product};
use rayon::prelude::*;
use std::ops::Range;

/// Floats of one block's patches: 512 KiB, half of a core's L2.
const PATCH_FLOATS: usize = 1 << 17;

/// A convolution (`nn.Conv2d(cin, cout, (kh, kw), stride, padding)`, no groups or dilation).
#[derive(Clone, Debug)]
pub struct Conv2d {
    cin: usize,
    cout: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    /// `[cout, cin·kh·kw]` row-major.
    w: Vec<f32>,
    bias: Vec<f32>,
}

impl Conv2d {
    /// # Shapes
    /// `weight`: `[cout, cin, kh, kw]` row-major (PyTorch's layout), `shape` its dimensions;
    /// `bias`: `[cout]`. `stride` and `pad` are (rows, columns).
    pub fn new(
        weight: &[f32],
        bias: &[f32],
        shape: [usize; 4],
        stride: [usize; 2],
        pad: [usize; 2],
    ) -> Conv2d {
        let [cout, cin, kh, kw] = shape;
        assert_eq!(
            weight.len(),
            cout * cin * kh * kw,
            "weight is not {shape:?}"
        );
        assert_eq!(bias.len(), cout, "bias is not [cout]");
        assert!(stride[0] > 0 && stride[1] > 0, "stride 0");
        Conv2d {
            cin,
            cout,
            kernel: [kh, kw],
            stride,
            pad,
            w: weight.to_vec(),
            bias: bias.to_vec(),
        }
    }

    pub fn in_channels(&self) -> usize {
        self.cin
    }

    pub fn out_channels(&self) -> usize {
        self.cout
    }

    /// The output's (height, width) for an input of `h`x`w`.
    pub fn output_size(&self, h: usize, w: usize) -> [usize; 2] {
        let out = |i: usize, d: usize| {
            let span = i + 2 * self.pad[d];
            assert!(span >= self.kernel[d], "input smaller than the kernel");
            (span - self.kernel[d]) / self.stride[d] + 1
        };
        [out(h, 0), out(w, 1)]
    }

    /// Convolves a batch, adds the input when `residual` (needs the same shape in and out),
    /// then applies `act`.
    ///
    /// # Shapes
    /// `x`: `[n, cin, h, w]` row-major → `[n, cout, oh, ow]` ([`output_size`](Self::output_size))
    pub fn forward(
        &self,
        x: &[f32],
        [n, h, w]: [usize; 3],
        residual: bool,
        act: Activation,
    ) -> Vec<f32> {
        let (cin, cout) = (self.cin, self.cout);
        assert_eq!(x.len(), n * cin * h * w, "input is not [n, cin, h, w]");
        let [oh, ow] = self.output_size(h, w);
        if residual {
            assert!(
                cin == cout && [oh, ow] == [h, w],
                "a residual needs the same shape in and out"
            );
        }
        act.check(cout);
        let mut y = vec![0f32; n * cout * oh * ow];
        let k = cin * self.kernel[0] * self.kernel[1];
        let hw = oh * ow;
        let split = Split::new(n * hw, cout, k);
        let out = OutPtr(y.as_mut_ptr());
        (0..split.jobs()).into_par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(col, prod): &mut (Vec<f32>, Vec<f32>), job| {
                let (cols, rows) = split.job(job);
                col.resize(k * cols.len(), 0.0);
                self.im2col(x, [h, w], ow, hw, cols.clone(), col);
                prod.resize(rows.len() * cols.len(), 0.0);
                // SAFETY: `prod` is rows × cols, the rows of W from `rows.start` are rows × k,
                // `col` is k × cols, all row-major.
                unsafe {
                    product(
                        [rows.len(), cols.len(), k],
                        prod.as_mut_ptr(),
                        cols.len(),
                        self.w.as_ptr().add(rows.start * k),
                        col.as_ptr(),
                        cols.len(),
                    );
                }
                for (r, co) in rows.clone().enumerate() {
                    let slope = act.slope(co);
                    let src = &prod[r * cols.len()..][..cols.len()];
                    for_each_run(cols.clone(), hw, hw, |b, p, at, len| {
                        let at = at - cols.start;
                        let base = (b * cout + co) * hw + p;
                        let res = residual.then(|| &x[base..][..len]);
                        // SAFETY: job (cols, rows) writes only the outputs of its columns and
                        // output channels: the jobs' regions are disjoint, and `y` outlives
                        // the parallel loop.
                        let dst = unsafe { out.slice(base, len) };
                        for (t, d) in dst.iter_mut().enumerate() {
                            let mut v = src[at + t] + self.bias[co];
                            if let Some(res) = res {
                                v += res[t];
                            }
                            *d = if v < 0.0 { v * slope } else { v };
                        }
                    });
                }
            },
        );
        y
    }

    /// The patches of output pixels `cols` (numbered across the batch) into `col`,
    /// `[cin·kh·kw][cols]`; taps outside the input are 0.
    fn im2col(
        &self,
        x: &[f32],
        [h, w]: [usize; 2],
        ow: usize,
        hw: usize,
        cols: Range<usize>,
        col: &mut [f32],
    ) {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [ph, pw] = self.pad;
        let len = cols.len();
        for ci in 0..self.cin {
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = &mut col[((ci * kh + ky) * kw + kx) * len..][..len];
                    for_each_run(cols.clone(), hw, ow, |b, p, at, run| {
                        let dst = &mut row[at - cols.start..][..run];
                        let (oy, ox0) = (p / ow, p % ow);
                        let iy = (oy * sh + ky) as isize - ph as isize;
                        if !(0..h as isize).contains(&iy) {
                            dst.fill(0.0);
                            return;
                        }
                        let src = &x[((b * self.cin + ci) * h + iy as usize) * w..][..w];
                        // Output column ox reads input column ox·sw + kx − pw: the outputs
                        // lo..hi read inside the row, the others are padding.
                        let first = |ox: usize| (ox * sw + kx) as isize - pw as isize;
                        let lo = (0..run).find(|&t| first(ox0 + t) >= 0).unwrap_or(run);
                        let hi = (lo..run)
                            .find(|&t| first(ox0 + t) >= w as isize)
                            .unwrap_or(run);
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        if lo < hi {
                            let start = first(ox0 + lo) as usize;
                            if sw == 1 {
                                dst[lo..hi].copy_from_slice(&src[start..][..hi - lo]);
                            } else {
                                for (d, s) in
                                    dst[lo..hi].iter_mut().zip(src[start..].iter().step_by(sw))
                                {
                                    *d = *s;
                                }
                            }
                        }
                    });
                }
            }
        }
    }
}

/// A transposed convolution (`nn.ConvTranspose2d(cin, cout, (kh, kw), stride, padding,
/// output_padding)`, no groups or dilation).
///
/// Computed as `Wᵀ · x`, one column of `cout·kh·kw` kernel taps per input pixel, then each tap
/// added to the output pixel it lands on (col2im): the same multiplications as the direct
/// form, all of them in one matrix product.
#[derive(Clone, Debug)]
pub struct ConvTranspose2d {
    cin: usize,
    cout: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    out_pad: [usize; 2],
    /// `[cout·kh·kw, cin]` row-major.
    w: Vec<f32>,
    bias: Vec<f32>,
}

/// Floats of the taps buffer of one group of images (16 MiB), which bounds the memory a large
/// batch needs.
const TAP_FLOATS: usize = 1 << 22;

impl ConvTranspose2d {
    /// # Shapes
    /// `weight`: `[cin, cout, kh, kw]` row-major (PyTorch's layout for a transposed
    /// convolution), `shape` its dimensions; `bias`: `[cout]`.
    pub fn new(
        weight: &[f32],
        bias: &[f32],
        shape: [usize; 4],
        stride: [usize; 2],
        pad: [usize; 2],
        out_pad: [usize; 2],
    ) -> ConvTranspose2d {
        let [cin, cout, kh, kw] = shape;
        assert_eq!(
            weight.len(),
            cin * cout * kh * kw,
            "weight is not {shape:?}"
        );
        assert_eq!(bias.len(), cout, "bias is not [cout]");
        assert!(stride[0] > 0 && stride[1] > 0, "stride 0");
        let taps = cout * kh * kw;
        let mut w = vec![0f32; taps * cin];
        for ci in 0..cin {
            for (t, v) in weight[ci * taps..][..taps].iter().enumerate() {
                w[t * cin + ci] = *v;
            }
        }
        ConvTranspose2d {
            cin,
            cout,
            kernel: [kh, kw],
            stride,
            pad,
            out_pad,
            w,
            bias: bias.to_vec(),
        }
    }

    pub fn in_channels(&self) -> usize {
        self.cin
    }

    pub fn out_channels(&self) -> usize {
        self.cout
    }

    /// The output's (height, width) for an input of `h`x`w`.
    pub fn output_size(&self, h: usize, w: usize) -> [usize; 2] {
        let out = |i: usize, d: usize| {
            let span = (i - 1) * self.stride[d] + self.kernel[d] + self.out_pad[d];
            assert!(span > 2 * self.pad[d], "padding larger than the output");
            span - 2 * self.pad[d]
        };
        [out(h, 0), out(w, 1)]
    }

    /// Transposed-convolves a batch, then applies `act`.
    ///
    /// # Shapes
    /// `x`: `[n, cin, h, w]` row-major → `[n, cout, oh, ow]` ([`output_size`](Self::output_size))
    pub fn forward(&self, x: &[f32], [n, h, w]: [usize; 3], act: Activation) -> Vec<f32> {
        let (cin, cout) = (self.cin, self.cout);
        assert_eq!(x.len(), n * cin * h * w, "input is not [n, cin, h, w]");
        act.check(cout);
        let [oh, ow] = self.output_size(h, w);
        let mut y = vec![0f32; n * cout * oh * ow];
        let (hw, taps) = (h * w, cout * self.kernel[0] * self.kernel[1]);
        let group = (TAP_FLOATS / (taps * hw)).clamp(1, n.max(1));
        let (mut xt, mut cols) = (Vec::new(), Vec::new());
        for b0 in (0..n).step_by(group) {
            let images = group.min(n - b0);
            let p = images * hw;
            // The group's input as one [cin, images·hw] matrix.
            xt.resize(cin * p, 0.0);
            for b in 0..images {
                for ci in 0..cin {
                    xt[ci * p + b * hw..][..hw]
                        .copy_from_slice(&x[((b0 + b) * cin + ci) * hw..][..hw]);
                }
            }
            cols.resize(taps * p, 0.0);
            let split = Split::new(p, taps, cin);
            let dst = OutPtr(cols.as_mut_ptr());
            (0..split.jobs()).into_par_iter().for_each(|job| {
                let (c, r) = split.job(job);
                // SAFETY: the job writes rows `r` × columns `c` of `cols` ([taps, p]), which no
                // other job touches; W's rows `r` are r × cin and xt's columns `c` cin × c,
                // row-major with the strides given.
                unsafe {
                    product(
                        [r.len(), c.len(), cin],
                        dst.at(r.start * p + c.start),
                        p,
                        self.w.as_ptr().add(r.start * cin),
                        xt.as_ptr().add(c.start),
                        p,
                    );
                }
            });
            let out = OutPtr(y[b0 * cout * oh * ow..].as_mut_ptr());
            let cols = &cols;
            (0..images * cout).into_par_iter().for_each(|job| {
                let (b, co) = (job / cout, job % cout);
                // SAFETY: each job writes its own output plane (image b, channel co).
                let plane = unsafe { out.slice(job * oh * ow, oh * ow) };
                self.col2im(&cols[b * hw..], p, co, [h, w], [oh, ow], plane);
                let slope = act.slope(co);
                for v in plane.iter_mut() {
                    if *v < 0.0 {
                        *v *= slope;
                    }
                }
            });
        }
        y
    }

    /// Output plane `co` of one image: the bias plus every tap that lands on each pixel.
    /// `taps` starts at the image's first column, rows `p` apart.
    fn col2im(
        &self,
        taps: &[f32],
        p: usize,
        co: usize,
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        plane: &mut [f32],
    ) {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [ph, pw] = self.pad;
        plane.fill(self.bias[co]);
        for ky in 0..kh {
            for kx in 0..kw {
                let tap = &taps[((co * kh + ky) * kw + kx) * p..];
                // Input pixel (iy, ix) lands on output (iy·sh + ky − ph, ix·sw + kx − pw).
                let at =
                    |i: usize, k: usize, s: usize, pad: usize| (i * s + k) as isize - pad as isize;
                let xs: Vec<(usize, usize)> = (0..w)
                    .filter_map(|ix| {
                        let ox = at(ix, kx, sw, pw);
                        (0..ow as isize).contains(&ox).then_some((ix, ox as usize))
                    })
                    .collect();
                for iy in 0..h {
                    let oy = at(iy, ky, sh, ph);
                    if !(0..oh as isize).contains(&oy) {
                        continue;
                    }
                    let src = &tap[iy * w..][..w];
                    let dst = &mut plane[oy as usize * ow..][..ow];
                    for &(ix, ox) in &xs {
                        dst[ox] += src[ix];
                    }
                }
            }
        }
    }
}

/// Calls `f(image, pixel, column, len)` for each run of columns in `cols` that lies in one
/// segment of `seg` columns: columns are numbered `image · hw + pixel`, so with `seg` = `hw`
/// a run is consecutive pixels of one image, with `seg` = the width one output row's.
fn for_each_run(
    cols: Range<usize>,
    hw: usize,
    seg: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let mut j = cols.start;
    while j < cols.end {
        let len = (seg - j % seg).min(cols.end - j);
        f(j / hw, j % hw, j, len);
        j += len;
    }
}

/// The jobs of a product `[rows, k] · [k, cols]`: blocks of columns and, when they are too
/// few for the threads, of rows too.
struct Split {
    cols: usize,
    col_len: usize,
    rows: usize,
    row_len: usize,
    col_blocks: usize,
    row_blocks: usize,
}

impl Split {
    fn new(cols: usize, rows: usize, k: usize) -> Split {
        // Column blocks whose k × len patch matrix fits in L2 (a product is efficient from a
        // few dozen columns), of equal length so that the threads get equal work.
        let len = (PATCH_FLOATS / k.max(1)).clamp(32, 512);
        let col_blocks = cols.div_ceil(len).max(1);
        let col_len = cols.div_ceil(col_blocks).max(1);
        // Two jobs per thread at least, so that none waits long for the last one; row blocks
        // of 16 rows at least keep the product's kernel busy.
        let want = 2 * rayon::current_num_threads();
        let row_blocks = want.div_ceil(col_blocks).min(rows.div_ceil(16)).max(1);
        let row_len = rows.div_ceil(row_blocks).max(1);
        Split {
            cols,
            col_len,
            rows,
            row_len,
            col_blocks,
            row_blocks: rows.div_ceil(row_len).max(1),
        }
    }

    fn jobs(&self) -> usize {
        self.col_blocks * self.row_blocks
    }

    /// The columns and rows of job `j`.
    fn job(&self, j: usize) -> (Range<usize>, Range<usize>) {
        let (c, r) = (j % self.col_blocks, j / self.col_blocks);
        let c0 = (c * self.col_len).min(self.cols);
        let r0 = (r * self.row_len).min(self.rows);
        (
            c0..(c0 + self.col_len).min(self.cols),
            r0..(r0 + self.row_len).min(self.rows),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{direct_conv, max_diff, noise};
    use proptest::prelude::*;

    fn leaky(v: f64, a: f32) -> f32 {
        let v = v as f32;
        if v < 0.0 { v * a } else { v }
    }

    /// The direct convolution in f64 (`d` as [`direct_conv`] takes it), the input added when
    /// `residual`, then LeakyReLU(0.1).
    fn direct(x: &[f32], wt: &[f32], bias: &[f32], d: [usize; 11], residual: bool) -> Vec<f32> {
        let y = direct_conv(x, wt, bias, d);
        (y.iter().enumerate())
            .map(|(at, &acc)| leaky(if residual { acc + x[at] as f64 } else { acc }, 0.1))
            .collect()
    }

    /// The direct transposed convolution in f64 (scatter form): `d` is
    /// `[n, cin, cout, h, w, kh, kw, s, p, op]` (same in both directions).
    fn direct_t(x: &[f32], wt: &[f32], bias: &[f32], d: [usize; 10]) -> Vec<f32> {
        let [n, cin, cout, h, w, kh, kw, s, p, op] = d;
        let oh = (h - 1) * s + kh + op - 2 * p;
        let ow = (w - 1) * s + kw + op - 2 * p;
        let mut acc = vec![0f64; n * cout * oh * ow];
        for b in 0..n {
            for co in 0..cout {
                for v in &mut acc[(b * cout + co) * oh * ow..][..oh * ow] {
                    *v = bias[co] as f64;
                }
                for ci in 0..cin {
                    for iy in 0..h {
                        for ix in 0..w {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let oy = (iy * s + ky) as isize - p as isize;
                                    let ox = (ix * s + kx) as isize - p as isize;
                                    if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                        continue;
                                    }
                                    let xv = x[((b * cin + ci) * h + iy) * w + ix] as f64;
                                    let wv = wt[((ci * cout + co) * kh + ky) * kw + kx] as f64;
                                    acc[((b * cout + co) * oh + oy as usize) * ow + ox as usize] +=
                                        xv * wv;
                                }
                            }
                        }
                    }
                }
            }
        }
        acc.into_iter().map(|v| leaky(v, 0.1)).collect()
    }

    fn check(d: [usize; 11], residual: bool, seed: u64) {
        let [n, cin, cout, h, w, kh, kw, sh, sw, ph, pw] = d;
        let x = noise(n * cin * h * w, seed);
        let wt = noise(cout * cin * kh * kw, seed + 1);
        let bias = noise(cout, seed + 2);
        let conv = Conv2d::new(&wt, &bias, [cout, cin, kh, kw], [sh, sw], [ph, pw]);
        let got = conv.forward(&x, [n, h, w], residual, Activation::Leaky(0.1));
        let want = direct(&x, &wt, &bias, d, residual);
        let tol = 1e-5 * ((cin * kh * kw) as f32).sqrt();
        let diff = max_diff(&got, &want);
        assert!(diff <= tol, "{d:?}: max diff {diff} > {tol}");
    }

    fn check_t(d: [usize; 10], seed: u64) {
        let [n, cin, cout, h, w, kh, kw, s, p, op] = d;
        let x = noise(n * cin * h * w, seed);
        let wt = noise(cin * cout * kh * kw, seed + 1);
        let bias = noise(cout, seed + 2);
        let conv = ConvTranspose2d::new(&wt, &bias, [cin, cout, kh, kw], [s; 2], [p; 2], [op; 2]);
        let got = conv.forward(&x, [n, h, w], Activation::Leaky(0.1));
        let want = direct_t(&x, &wt, &bias, d);
        let tol = 1e-5 * ((cin * kh * kw) as f32).sqrt();
        let diff = max_diff(&got, &want);
        assert!(diff <= tol, "{d:?}: max diff {diff} > {tol}");
    }

    #[test]
    fn matches_the_direct_convolution() {
        // Wav2Lip's kinds: 7x7 padding 3, 3x3 stride 2, stride (3, 1), 1x1, 3x3 without padding.
        check([2, 3, 5, 12, 10, 7, 7, 1, 1, 3, 3], false, 1);
        check([3, 4, 6, 9, 8, 3, 3, 2, 2, 1, 1], false, 2);
        check([2, 4, 6, 10, 7, 3, 3, 3, 1, 1, 1], false, 3);
        check([4, 8, 8, 1, 1, 1, 1, 1, 1, 0, 0], false, 4);
        check([2, 5, 7, 3, 3, 3, 3, 1, 1, 0, 0], false, 5);
        check([5, 6, 6, 3, 3, 3, 3, 1, 1, 1, 1], true, 6);
    }

    #[test]
    fn splits_large_batches_in_column_and_row_blocks() {
        // Many columns (several column blocks, some across images) and many output channels
        // on few columns (row blocks).
        check([3, 20, 20, 40, 37, 3, 3, 1, 1, 1, 1], true, 7);
        check([2, 64, 70, 3, 3, 3, 3, 1, 1, 1, 1], false, 8);
    }

    #[test]
    fn matches_the_direct_transposed_convolution() {
        // Wav2Lip's kinds: 3x3 stride 2 padding 1 output padding 1, and 3x3 stride 1 on 1x1.
        check_t([2, 6, 5, 4, 3, 3, 3, 2, 1, 1], 11);
        check_t([3, 8, 7, 1, 1, 3, 3, 1, 0, 0], 12);
        check_t([2, 40, 24, 6, 5, 3, 3, 2, 1, 1], 13);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_on_random_shapes(
            n in 1usize..3, cin in 1usize..6, cout in 1usize..6, h in 1usize..9, w in 1usize..9,
            k in 1usize..4, s in 1usize..4, seed in 0u64..1000,
        ) {
            let p = k / 2;
            check([n, cin, cout, h + k, w + k, k, k, s, s, p, p], cin == cout && s == 1 && k % 2 == 1, seed);
            // A transposed convolution whose padding eats its whole output is not a shape
            // (`output_size` refuses it): such draws test only the forward one.
            let (tp, op) = (p.min(k - 1), (s - 1).min(1));
            if (h.min(w) - 1) * s + k + op > 2 * tp {
                check_t([n, cin, cout, h, w, k, k, s, tp, op], seed);
            }
        }
    }
}
