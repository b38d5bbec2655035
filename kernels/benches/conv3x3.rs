//! `cargo bench -p vidflow-kernels --bench conv3x3`: the Winograd 3x3 convolution against
//! im2col + one GEMM (what Burn's CPU backend does) on the same input in the same process,
//! for the layer shape that dominates realesr-animevideov3 on a 320x180 frame (64 → 64
//! channels). Prints milliseconds per layer, GFLOP/s counted as the direct convolution's
//! 2·9·cin·cout·h·w, and the ratio. `VIDFLOW_BENCH_SECONDS` sets the time per side (default 3).

use std::time::{Duration, Instant};
use vidflow_kernels::{Activation, Conv3x3};

fn im2col_gemm(x: &[f32], wt: &[f32], cin: usize, cout: usize, h: usize, w: usize, cols: &mut [f32], y: &mut [f32]) {
    let hw = h * w;
    // cols[(ci·9 + ky·3 + kx)][p]
    for ci in 0..cin {
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &mut cols[((ci * 9 + ky * 3 + kx) * hw)..][..hw];
                for yy in 0..h {
                    let sy = yy as isize + ky as isize - 1;
                    for xx in 0..w {
                        let sx = xx as isize + kx as isize - 1;
                        row[yy * w + xx] = if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                            0.0
                        } else {
                            x[(ci * h + sy as usize) * w + sx as usize]
                        };
                    }
                }
            }
        }
    }
    let threads = rayon::current_num_threads();
    unsafe {
        gemm::gemm(
            cout, hw, cin * 9, y.as_mut_ptr(), 1, hw as isize, false, wt.as_ptr(), 1,
            (cin * 9) as isize, cols.as_ptr(), 1, hw as isize, 0.0, 1.0, false, false, false,
            gemm::Parallelism::Rayon(threads),
        );
    }
}

fn time(seconds: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut runs = 0u32;
    while start.elapsed() < Duration::from_secs_f64(seconds) {
        f();
        runs += 1;
    }
    start.elapsed().as_secs_f64() / runs as f64
}

fn main() {
    let seconds: f64 = std::env::var("VIDFLOW_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let (cin, cout, h, w) = (64, 64, 180, 320);
    let x: Vec<f32> = (0..cin * h * w).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let wt: Vec<f32> = (0..cout * cin * 9).map(|i| ((i * 104729) % 1000) as f32 / 50000.0 - 0.01).collect();
    let bias = vec![0.01f32; cout];
    let conv = Conv3x3::new(&wt, &bias, cout, cin);
    let flop = 2.0 * 9.0 * (cin * cout * h * w) as f64;
    let wino = time(seconds, || {
        std::hint::black_box(conv.forward(&x, 1, h, w, Activation::Leaky(0.2)));
    });
    let mut cols = vec![0f32; cin * 9 * h * w];
    let mut y = vec![0f32; cout * h * w];
    let direct = time(seconds, || im2col_gemm(&x, &wt, cin, cout, h, w, &mut cols, &mut y));
    println!("conv3x3 {cin}→{cout} {w}x{h}, {} threads", rayon::current_num_threads());
    println!("  winograd F(2x2,3x3): {:7.2} ms  {:6.1} GFLOP/s (direct-equivalent)", wino * 1e3, flop / wino / 1e9);
    println!("  im2col + gemm:       {:7.2} ms  {:6.1} GFLOP/s", direct * 1e3, flop / direct / 1e9);
    println!("  ratio (im2col time / winograd time): {:.2}", direct / wino);
}
