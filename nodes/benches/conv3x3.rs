//! The CPU convolution kernel against Burn's own: one 3x3 convolution (64 → 64 channels,
//! the layer realesr-animevideov3 repeats 16 times) plus LeakyReLU on a 320x180 frame, on
//! Burn's CPU device, both in this process with the same thread pool:
//!
//! ```text
//! VIDFLOW_BENCH=1 cargo bench -p vidflow-nodes --features neural --bench conv3x3 -- --test --nocapture
//! ```
//!
//! Burn's side is `conv2d` then `leaky_relu`; the kernel's side is `vidflow_kernels::Conv3x3`
//! with the activation fused, including the moves out of and back into a Burn tensor that the
//! models pay per layer (the SRVGG stack pays them once for all its layers). Prints milliseconds per layer, GFLOP/s counted as the direct convolution's
//! 2·9·cin·cout·h·w, and the ratio. `VIDFLOW_BENCH_SECONDS` sets the time per side
//! (default 3). Without `VIDFLOW_BENCH=1` it only says how to run it.
#![cfg(feature = "neural")]

mod common;

use burn::tensor::activation::leaky_relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor, TensorData};
use std::time::{Duration, Instant};
use vidflow_kernels::{Activation, Conv3x3};

/// Seconds per call of `f`, after one warm-up call.
fn time(seconds: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut runs = 0u32;
    while start.elapsed() < Duration::from_secs_f64(seconds) || runs == 0 {
        f();
        runs += 1;
    }
    start.elapsed().as_secs_f64() / runs as f64
}

#[test]
fn conv3x3_kernel_vs_burn() {
    let Some(seconds) = common::enabled("conv3x3", "see the file's doc", 3.0) else {
        return;
    };
    let (cin, cout, h, w) = (64, 64, 180, 320);
    let x: Vec<f32> = (0..cin * h * w)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let wt: Vec<f32> = (0..cout * cin * 9)
        .map(|i| ((i * 104729) % 1000) as f32 / 50000.0 - 0.01)
        .collect();
    let bias = vec![0.01f32; cout];
    let dev = Device::flex();
    let tensor = |v: Vec<f32>, shape: Vec<usize>| {
        Tensor::<4>::from_data(TensorData::new(v, shape), (&dev, DType::F32))
    };
    // Each side gets its input as a fresh, uniquely owned tensor, as a layer of a model does.
    let input = || tensor(x.clone(), vec![1, cin, h, w]);
    let wt4 = tensor(wt.clone(), vec![cout, cin, 3, 3]);
    let bt = Tensor::<1>::from_data(TensorData::new(bias.clone(), [cout]), (&dev, DType::F32));
    let burn = || {
        let y = conv2d(
            input(),
            wt4.clone(),
            Some(bt.clone()),
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        leaky_relu(y, 0.2).into_data()
    };
    let kernel = Conv3x3::new(&wt, &bias, cout, cin);
    let ours = || {
        let xv = input().into_data().try_into_vec::<f32>().unwrap();
        let y = kernel.forward(&xv, 1, h, w, Activation::Leaky(0.2));
        tensor(y, vec![1, cout, h, w]).into_data()
    };
    // Same result first (Winograd rounds differently: compare loosely).
    let (a, b) = (
        burn().try_to_vec::<f32>().unwrap(),
        ours().try_to_vec::<f32>().unwrap(),
    );
    let d = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max);
    assert!(d < 1e-4, "kernel and Burn differ by {d}");
    let t_burn = time(seconds, || {
        std::hint::black_box(burn());
    });
    let t_ours = time(seconds, || {
        std::hint::black_box(ours());
    });
    let flop = 2.0 * 9.0 * (cin * cout * h * w) as f64;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    println!("conv3x3 {cin}→{cout} + LeakyReLU on {w}x{h}, CPU, {threads} threads");
    println!(
        "  Burn conv2d (im2col + GEMM): {:7.2} ms  {:6.1} GFLOP/s",
        t_burn * 1e3,
        flop / t_burn / 1e9
    );
    println!(
        "  Winograd F(2x2,3x3) kernel:  {:7.2} ms  {:6.1} GFLOP/s (direct-equivalent)",
        t_ours * 1e3,
        flop / t_ours / 1e9
    );
    println!("  ratio (Burn time / kernel time): {:.2}", t_burn / t_ours);
}
