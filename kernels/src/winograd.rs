//! 3x3 convolution, stride 1, padding 1, by Winograd's minimal filtering F(2x2, 3x3)
//! (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016).
//!
//! Each 2x2 block of output pixels (a *tile*) is computed from the 4x4 input patch around it:
//! the patch is transformed (`V = Bᵀ d B`), multiplied element-wise with the transformed
//! filter (`U = G g Gᵀ`, once per layer) and transformed back (`Y = Aᵀ M A`). Summed over
//! input channels, the element-wise products of the 16 positions are 16 matrix products
//! `M[ξ] = U[ξ] · V[ξ]`, which is where the time goes, and they need 16 multiplications per
//! tile per channel pair where the direct convolution needs 36: 2.25 times fewer.
//!
//! The transforms only add and subtract (and halve, for `G`), so the result differs from the
//! direct convolution by rounding only: about 1e-6 relative in f32.
//!
//! Work is split in blocks of up to [`BLOCK`] tiles of one tile row, spread over rayon's
//! threads; one block's transformed input and products (16 · channels · BLOCK floats each)
//! stay in the core's L2 cache between the three steps, so the only trips to memory are
//! reading the input and writing the output once.

use crate::simd::with_avx2;
use gemm::Parallelism;
use rayon::prelude::*;

/// Tiles per block: 16 · 64 channels · 128 tiles · 4 bytes = 512 KiB for the transformed
/// input and as much for the products.
pub const BLOCK: usize = 128;

/// What is applied to each output after the bias, fused into the output transform.
#[derive(Clone, Copy, Debug)]
pub enum Activation<'a> {
    None,
    /// `torch.nn.PReLU`: one slope per output channel, or one for all (length 1).
    PRelu(&'a [f32]),
    /// `torch.nn.LeakyReLU(slope)`.
    Leaky(f32),
}

impl Activation<'_> {
    /// What negative outputs of channel `co` are multiplied by (1 without an activation).
    pub fn slope(self, co: usize) -> f32 {
        match self {
            Activation::None => 1.0,
            Activation::PRelu(a) => a[if a.len() == 1 { 0 } else { co }],
            Activation::Leaky(a) => a,
        }
    }
    /// Panics unless a PReLU has one slope or one per output channel of `cout`.
    pub fn check(self, cout: usize) {
        if let Activation::PRelu(a) = self {
            assert!(
                a.len() == 1 || a.len() == cout,
                "PReLU needs 1 or cout slopes"
            );
        }
    }
}

/// A 3x3 convolution (`nn.Conv2d(cin, cout, 3, 1, 1)`) with its filters transformed for
/// Winograd F(2x2, 3x3).
#[derive(Clone, Debug)]
pub struct Conv3x3 {
    cin: usize,
    cout: usize,
    /// `U[ξ][co][ci]` for the 16 positions ξ of the transformed 4x4 tile.
    u: Vec<f32>,
    bias: Vec<f32>,
}

/// `G`, the filter transform of F(2x2, 3x3).
const G: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

impl Conv3x3 {
    /// # Shapes
    /// `weight`: `[cout, cin, 3, 3]` row-major (PyTorch's layout); `bias`: `[cout]`.
    pub fn new(weight: &[f32], bias: &[f32], cout: usize, cin: usize) -> Conv3x3 {
        assert_eq!(
            weight.len(),
            cout * cin * 9,
            "weight is not [cout, cin, 3, 3]"
        );
        assert_eq!(bias.len(), cout, "bias is not [cout]");
        let mut u = vec![0f32; 16 * cout * cin];
        for co in 0..cout {
            for ci in 0..cin {
                let g = &weight[(co * cin + ci) * 9..][..9];
                // G g Gᵀ, written out: (G g) is 4x3, times Gᵀ is 4x4.
                let mut gg = [[0f32; 3]; 4];
                for (a, row) in gg.iter_mut().enumerate() {
                    for (l, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|k| G[a][k] * g[k * 3 + l]).sum();
                    }
                }
                for (a, row) in gg.iter().enumerate() {
                    for b in 0..4 {
                        let v: f32 = (0..3).map(|l| row[l] * G[b][l]).sum();
                        u[((a * 4 + b) * cout + co) * cin + ci] = v;
                    }
                }
            }
        }
        Conv3x3 {
            cin,
            cout,
            u,
            bias: bias.to_vec(),
        }
    }

    pub fn in_channels(&self) -> usize {
        self.cin
    }

    pub fn out_channels(&self) -> usize {
        self.cout
    }

    /// Convolves a batch, then applies `act`.
    ///
    /// # Shapes
    /// `x`: `[n, cin, h, w]` row-major → `[n, cout, h, w]`
    pub fn forward(&self, x: &[f32], n: usize, h: usize, w: usize, act: Activation) -> Vec<f32> {
        let mut y = vec![0f32; n * self.cout * h * w];
        self.forward_into(x, n, h, w, act, &mut y);
        y
    }

    /// [`forward`](Self::forward) into a buffer the caller reuses (a chain of layers
    /// ping-pongs between two, instead of faulting in fresh pages for every layer).
    ///
    /// # Shapes
    /// `x`: `[n, cin, h, w]`, `y`: `[n, cout, h, w]`, both row-major; every element of `y` is
    /// written.
    pub fn forward_into(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        act: Activation,
        y: &mut [f32],
    ) {
        self.run(x, [n, h, w], None, act, y);
    }

    /// `act(conv(x) · scale + x)`, per output channel `scale`: a residual block with a
    /// learned scale (RIFE's `ResConv`), in one pass. Needs `cin == cout`.
    ///
    /// # Shapes
    /// `x`: `[n, c, h, w]` row-major, `scale`: `[c]` → `[n, c, h, w]`
    pub fn forward_scaled_residual(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        scale: &[f32],
        act: Activation,
    ) -> Vec<f32> {
        let mut y = vec![0f32; n * self.cout * h * w];
        self.forward_scaled_residual_into(x, n, h, w, scale, act, &mut y);
        y
    }

    /// [`forward_scaled_residual`](Self::forward_scaled_residual) into a buffer the caller
    /// reuses; every element of `y` is written.
    #[allow(clippy::too_many_arguments)] // the shape, the two slices and the layer's options
    pub fn forward_scaled_residual_into(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        scale: &[f32],
        act: Activation,
        y: &mut [f32],
    ) {
        assert_eq!(self.cin, self.cout, "a residual needs cin == cout");
        assert_eq!(scale.len(), self.cout, "scale is not [cout]");
        self.run(x, [n, h, w], Some(scale), act, y);
    }

    /// The convolution of `x` (`[n, h, w]` = `dims`) into `y`, then, with `residual`,
    /// `· scale + x`, then `act`.
    fn run(
        &self,
        x: &[f32],
        [n, h, w]: [usize; 3],
        residual: Option<&[f32]>,
        act: Activation,
        y: &mut [f32],
    ) {
        let (cin, cout) = (self.cin, self.cout);
        assert_eq!(x.len(), n * cin * h * w, "input is not [n, cin, h, w]");
        assert_eq!(y.len(), n * cout * h * w, "output is not [n, cout, h, w]");
        act.check(cout);
        if y.is_empty() {
            return;
        }
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        // Equal blocks per tile row, so that the threads get the same amount of work.
        let blocks = tw.div_ceil(BLOCK);
        let block_len = tw.div_ceil(blocks);
        let out = OutPtr(y.as_mut_ptr());
        let jobs = n * th * blocks;
        (0..jobs).into_par_iter().for_each(|job| {
            SCRATCH.with_borrow_mut(|s| {
                s.fit(cin, cout);
                let (b, rest) = (job / (th * blocks), job % (th * blocks));
                let (i, j0) = (rest / blocks, (rest % blocks) * block_len);
                let tiles = block_len.min(tw - j0);
                let plane = &x[b * cin * h * w..][..cin * h * w];
                let tile = Tile { h, w, i, j0, tiles };
                let residual = residual.map(|scale| (plane, scale));
                // The transforms are plain float loops, twice as wide with AVX2 (the GEMM
                // picks its own instructions).
                with_avx2(|| self.input_transform(plane, tile, s));
                self.products(tile.tiles, s);
                // SAFETY: job (b, i, j0) writes only output rows 2i, 2i+1 and columns
                // 2·j0 .. 2·(j0 + tiles) of image b: the jobs' regions are disjoint, and `y`
                // outlives the parallel loop.
                with_avx2(|| unsafe {
                    self.output_transform(out.at(b * cout * h * w), tile, residual, act, s)
                });
            })
        });
    }

    /// `V[ξ][c][t] = (Bᵀ d B)[ξ]` for the 4x4 patch `d` of every tile `t` of the block and
    /// every input channel `c`. `Bᵀ = [[1,0,-1,0], [0,1,1,0], [0,-1,1,0], [0,1,0,-1]]`.
    #[inline(always)]
    fn input_transform(&self, plane: &[f32], tile: Tile, s: &mut Scratch) {
        let Tile { h, w, i, j0, tiles } = tile;
        let n = tiles;
        let cin = self.cin;
        let Scratch {
            even, odd, e, v, ..
        } = s;
        for c in 0..cin {
            let ch = &plane[c * h * w..][..h * w];
            // Column transform (· B) of the four input rows, into e[r][b][t].
            for r in 0..4 {
                // Even and odd patch columns apart, so that the arithmetic below is on plain
                // slices (which the compiler vectorises): patch column q of tile t is input
                // column x0 + 2t + q, which is pe[t + q/2] for even q, po[t + q/2] for odd q.
                let (pe, po) = (&mut even[..n + 1], &mut odd[..n + 1]);
                let y = (2 * i + r) as isize - 1;
                if !(0..h as isize).contains(&y) {
                    pe.fill(0.0);
                    po.fill(0.0);
                } else {
                    let src = &ch[y as usize * w..][..w];
                    let x0 = 2 * j0 as isize - 1;
                    let col = |q: isize| {
                        if (0..w as isize).contains(&q) {
                            src[q as usize]
                        } else {
                            0.0
                        }
                    };
                    // Pairs k with both columns x0 + 2k, x0 + 2k + 1 inside the image.
                    let k_lo = usize::from(x0 < 0);
                    let k_hi =
                        ((w as isize - x0) / 2).clamp(k_lo as isize, n as isize + 1) as usize;
                    let start = (x0 + 2 * k_lo as isize) as usize;
                    for ((pair, a), b) in src[start..]
                        .chunks_exact(2)
                        .zip(&mut pe[k_lo..k_hi])
                        .zip(&mut po[k_lo..k_hi])
                    {
                        *a = pair[0];
                        *b = pair[1];
                    }
                    for k in (0..k_lo).chain(k_hi..n + 1) {
                        pe[k] = col(x0 + 2 * k as isize);
                        po[k] = col(x0 + 2 * k as isize + 1);
                    }
                }
                let e = &mut e[r * 4 * BLOCK..][..4 * BLOCK];
                let (e0, rest) = e.split_at_mut(BLOCK);
                let (e1, rest) = rest.split_at_mut(BLOCK);
                let (e2, e3) = rest.split_at_mut(BLOCK);
                let (e0, e1, e2, e3) = (&mut e0[..n], &mut e1[..n], &mut e2[..n], &mut e3[..n]);
                let (d0, d1, d2, d3) = (&pe[..n], &po[..n], &pe[1..], &po[1..]);
                for t in 0..n {
                    e0[t] = d0[t] - d2[t];
                    e1[t] = d1[t] + d2[t];
                    e2[t] = d2[t] - d1[t];
                    e3[t] = d1[t] - d3[t];
                }
            }
            // Row transform (Bᵀ ·), into V.
            for b in 0..4 {
                let rows = |r: usize| &e[(r * 4 + b) * BLOCK..][..n];
                let (r0, r1, r2, r3) = (rows(0), rows(1), rows(2), rows(3));
                let at = |a: usize| ((a * 4 + b) * cin + c) * BLOCK;
                let (v0, rest) = v[at(0)..].split_at_mut(at(1) - at(0));
                let (v1, rest) = rest.split_at_mut(at(2) - at(1));
                let (v2, v3) = rest.split_at_mut(at(3) - at(2));
                let (v0, v1, v2, v3) = (&mut v0[..n], &mut v1[..n], &mut v2[..n], &mut v3[..n]);
                for t in 0..n {
                    v0[t] = r0[t] - r2[t];
                    v1[t] = r1[t] + r2[t];
                    v2[t] = r2[t] - r1[t];
                    v3[t] = r1[t] - r3[t];
                }
            }
        }
    }

    /// `M[ξ] = U[ξ] · V[ξ]` for the 16 positions: `[cout, cin] · [cin, tiles]`.
    fn products(&self, tiles: usize, s: &mut Scratch) {
        let (cin, cout) = (self.cin, self.cout);
        for xi in 0..16 {
            // SAFETY: the three matrices lie inside their buffers: U[ξ] is cout·cin floats
            // at ξ·cout·cin, V[ξ] and M[ξ] are cin (cout) rows of BLOCK ≥ tiles floats.
            unsafe {
                product(
                    [cout, tiles, cin],
                    s.m.as_mut_ptr().add(xi * cout * BLOCK),
                    BLOCK,
                    self.u.as_ptr().add(xi * cout * cin),
                    s.v.as_ptr().add(xi * cin * BLOCK),
                    BLOCK,
                );
            }
        }
    }

    /// `Y = Aᵀ M A` with `Aᵀ = [[1,1,1,0], [0,1,-1,-1]]`, plus bias, then (with `residual`,
    /// the image's input and the per-channel scale) `· scale + input`, then the activation,
    /// written to the 2x2 output pixels of each tile (the last row or column is dropped for odd
    /// sizes).
    ///
    /// # Safety
    /// `out` points to a `[cout, h, w]` image whose rows 2i, 2i+1 and columns
    /// 2·j0 .. 2·(j0 + tiles) no other thread touches during the call.
    #[inline(always)]
    unsafe fn output_transform(
        &self,
        out: *mut f32,
        tile: Tile,
        residual: Option<(&[f32], &[f32])>,
        act: Activation,
        s: &mut Scratch,
    ) {
        let Tile { h, w, i, j0, tiles } = tile;
        let cout = self.cout;
        let x0 = 2 * j0;
        let cols = (2 * tiles).min(w - x0);
        // Two rows of the block in L1, then copied out; writing the tile values straight into
        // the output rows measured 30 % slower.
        let (top, bottom) = s.out.split_at_mut(2 * BLOCK);
        let (top, bottom) = (&mut top[..2 * tiles], &mut bottom[..2 * tiles]);
        for co in 0..cout {
            let m: [&[f32]; 16] =
                std::array::from_fn(|xi| &s.m[(xi * cout + co) * BLOCK..][..tiles]);
            let bias = self.bias[co];
            let slope = act.slope(co);
            for t in 0..tiles {
                // Aᵀ M: the two rows s0, s1; then · A.
                let s0: [f32; 4] = std::array::from_fn(|b| m[b][t] + m[4 + b][t] + m[8 + b][t]);
                let s1: [f32; 4] =
                    std::array::from_fn(|b| m[4 + b][t] - m[8 + b][t] - m[12 + b][t]);
                top[2 * t] = s0[0] + s0[1] + s0[2] + bias;
                top[2 * t + 1] = s0[1] - s0[2] - s0[3] + bias;
                bottom[2 * t] = s1[0] + s1[1] + s1[2] + bias;
                bottom[2 * t + 1] = s1[1] - s1[2] - s1[3] + bias;
            }
            for (r, row) in [&mut top[..cols], &mut bottom[..cols]]
                .into_iter()
                .enumerate()
            {
                let y = 2 * i + r;
                if y >= h {
                    continue;
                }
                if let Some((input, scale)) = residual {
                    let src = &input[(co * h + y) * w + x0..][..cols];
                    for (v, x) in row.iter_mut().zip(src) {
                        *v = *v * scale[co] + x;
                    }
                }
                for v in row.iter_mut() {
                    if *v < 0.0 {
                        *v *= slope;
                    }
                }
                // SAFETY: row y < h, columns x0 .. x0 + cols ≤ w of channel co, which the
                // caller reserves for this call.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        row.as_ptr(),
                        out.add((co * h + y) * w + x0),
                        cols,
                    );
                }
            }
        }
    }
}

/// One block of tiles: tile row `i`, tile columns `j0 .. j0 + tiles` of an `h`x`w` image.
#[derive(Clone, Copy)]
struct Tile {
    h: usize,
    w: usize,
    i: usize,
    j0: usize,
    tiles: usize,
}

thread_local! {
    /// Each thread's buffers, kept from one layer to the next: a fresh megabyte-sized buffer
    /// per layer and thread is fresh pages, and faulting them in cost more than some layers.
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::new(0, 0));
}

/// One thread's buffers, reused across its blocks.
struct Scratch {
    /// The even and odd columns of one input row's patches: BLOCK + 1 each.
    even: Vec<f32>,
    odd: Vec<f32>,
    /// Column-transformed input rows, `[4 rows][4][BLOCK]`.
    e: Vec<f32>,
    /// Transformed input, `[16][cin][BLOCK]`.
    v: Vec<f32>,
    /// Products, `[16][cout][BLOCK]`.
    m: Vec<f32>,
    /// Two output rows of one channel, `[2][2·BLOCK]`.
    out: Vec<f32>,
}

impl Scratch {
    fn new(cin: usize, cout: usize) -> Scratch {
        Scratch {
            even: vec![0.0; BLOCK + 1],
            odd: vec![0.0; BLOCK + 1],
            e: vec![0.0; 16 * BLOCK],
            v: vec![0.0; 16 * cin * BLOCK],
            m: vec![0.0; 16 * cout * BLOCK],
            out: vec![0.0; 4 * BLOCK],
        }
    }

    /// Grows the buffers for a layer of `cin` → `cout` channels (larger ones serve as they
    /// are: the strides do not depend on their length).
    fn fit(&mut self, cin: usize, cout: usize) {
        if self.v.len() < 16 * cin * BLOCK {
            self.v.resize(16 * cin * BLOCK, 0.0);
        }
        if self.m.len() < 16 * cout * BLOCK {
            self.m.resize(16 * cout * BLOCK, 0.0);
        }
    }
}

/// An output buffer shared by parallel jobs that write disjoint regions of it (here and in
/// the other kernels).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);

// SAFETY: the jobs write disjoint regions (see the callers).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// # Safety
    /// `offset` lies inside the buffer.
    pub(crate) unsafe fn at(self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }

    /// # Safety
    /// `offset .. offset + len` lies inside the buffer, and no other thread touches it while
    /// the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice<'a>(self, offset: usize, len: usize) -> &'a mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }
}

/// `dst = lhs · rhs` for `[m, n, k]`: `lhs` m × k with rows k apart, `rhs` k × n with rows
/// `rhs_rs` apart, `dst` m × n with rows `dst_rs` apart; one thread (the callers split the
/// work themselves).
///
/// # Safety
/// The three matrices lie inside their buffers, and no other thread touches `dst`'s.
pub(crate) unsafe fn product(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    rhs: *const f32,
    rhs_rs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs,
            1,
            k as isize,
            rhs,
            1,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{direct_conv, max_diff, noise};
    use proptest::prelude::*;

    /// The direct convolution, in f64, as the reference; `dims` is `[n, cin, cout, h, w]`.
    fn direct(x: &[f32], wt: &[f32], bias: &[f32], dims: [usize; 5]) -> Vec<f32> {
        let [n, cin, cout, h, w] = dims;
        let d = [n, cin, cout, h, w, 3, 3, 1, 1, 1, 1];
        direct_conv(x, wt, bias, d)
            .into_iter()
            .map(|v| v as f32)
            .collect()
    }

    fn check(n: usize, cin: usize, cout: usize, h: usize, w: usize, seed: u64) {
        let x = noise(n * cin * h * w, seed);
        let wt = noise(cout * cin * 9, seed + 1);
        let bias = noise(cout, seed + 2);
        let conv = Conv3x3::new(&wt, &bias, cout, cin);
        let got = conv.forward(&x, n, h, w, Activation::None);
        let want = direct(&x, &wt, &bias, [n, cin, cout, h, w]);
        // A reused buffer full of stale values gives the same result.
        let mut reused = vec![f32::NAN; got.len()];
        conv.forward_into(&x, n, h, w, Activation::None, &mut reused);
        assert_eq!(got, reused);
        let tol = 1e-5 * (cin as f32 * 9.0).sqrt();
        let d = max_diff(&got, &want);
        assert!(d <= tol, "{n}x{cin}→{cout} {h}x{w}: max diff {d} > {tol}");
    }

    #[test]
    fn matches_direct_convolution_on_even_and_odd_sizes() {
        check(1, 3, 8, 8, 8, 1);
        check(2, 5, 7, 7, 9, 2);
        check(1, 1, 1, 1, 1, 3);
        check(1, 4, 4, 2, 3, 4);
        check(1, 16, 12, 13, 11, 5);
    }

    #[test]
    fn matches_direct_convolution_across_blocks() {
        // 2·BLOCK + 3 columns: three blocks per tile row, the last one short and odd.
        check(1, 8, 8, 5, 2 * 2 * BLOCK + 3, 6);
    }

    #[test]
    fn fuses_prelu_and_leaky_relu() {
        let (cin, cout, h, w) = (4, 3, 6, 5);
        let x = noise(cin * h * w, 7);
        let wt = noise(cout * cin * 9, 8);
        let bias = noise(cout, 9);
        let conv = Conv3x3::new(&wt, &bias, cout, cin);
        let plain = conv.forward(&x, 1, h, w, Activation::None);
        let slopes = [0.1f32, 0.25, -0.5];
        let prelu = conv.forward(&x, 1, h, w, Activation::PRelu(&slopes));
        let leaky = conv.forward(&x, 1, h, w, Activation::Leaky(0.2));
        assert!(plain.iter().any(|v| *v < 0.0) && plain.iter().any(|v| *v > 0.0));
        for (k, &v) in plain.iter().enumerate() {
            let co = k / (h * w);
            let a = slopes[co];
            assert_eq!(prelu[k], if v < 0.0 { v * a } else { v });
            assert_eq!(leaky[k], if v < 0.0 { v * 0.2 } else { v });
        }
    }

    #[test]
    fn fuses_a_scaled_residual() {
        let (n, c, h, w) = (2, 5, 7, 6);
        let x = noise(n * c * h * w, 11);
        let wt = noise(c * c * 9, 12);
        let bias = noise(c, 13);
        let scale = noise(c, 14);
        let conv = Conv3x3::new(&wt, &bias, c, c);
        let plain = conv.forward(&x, n, h, w, Activation::None);
        let fused = conv.forward_scaled_residual(&x, n, h, w, &scale, Activation::Leaky(0.2));
        for (k, (&p, &f)) in plain.iter().zip(&fused).enumerate() {
            let z = p * scale[k / (h * w) % c] + x[k];
            assert_eq!(f, if z < 0.0 { z * 0.2 } else { z });
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
