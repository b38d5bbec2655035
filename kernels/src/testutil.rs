//! What the kernels' tests share: reproducible inputs, the direct convolution every
//! convolution kernel is checked against, and how far two outputs are apart.

/// A deterministic pseudo-random sequence in [-1, 1).
pub fn noise(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The largest absolute difference between two outputs of the same length.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The direct convolution in f64, bias added, nothing else: `x` `[n, cin, h, w]`, `wt`
/// `[cout, cin, kh, kw]`, `d` = `[n, cin, cout, h, w, kh, kw, sh, sw, ph, pw]` → `[n, cout, oh,
/// ow]` with PyTorch's output size.
pub fn direct_conv(x: &[f32], wt: &[f32], bias: &[f32], d: [usize; 11]) -> Vec<f64> {
    let [n, cin, cout, h, w, kh, kw, sh, sw, ph, pw] = d;
    let oh = (h + 2 * ph - kh) / sh + 1;
    let ow = (w + 2 * pw - kw) / sw + 1;
    let mut y = vec![0f64; n * cout * oh * ow];
    for b in 0..n {
        for co in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias[co] as f64;
                    for ci in 0..cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * sh + ky) as isize - ph as isize;
                                let ix = (ox * sw + kx) as isize - pw as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((b * cin + ci) * h + iy as usize) * w + ix as usize];
                                let wv = wt[((co * cin + ci) * kh + ky) * kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((b * cout + co) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    y
}
