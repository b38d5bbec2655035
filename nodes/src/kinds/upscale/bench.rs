//! Throughput of the upscale path, for `scripts/bench-upscale.sh` (and a future
//! `vidflow bench upscale`): frames per second through [`Upscaler::upscale_frames`]
//! (u8 RGB in, network, u8 RGB out) with the built-in realesr-animevideov3 x4, at several
//! batch sizes, on the device a [`DevicePreference`] picks.

use super::{UpscaleOptions, Upscaler, load_checkpoint};
use crate::gpu::device::{Compute, DevicePreference};
use std::time::{Duration, Instant};
use vidflow_engine::{Frame, NodeError, Rate};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchSpec {
    pub width: u32,
    pub height: u32,
    pub batches: Vec<usize>,
    /// Keep running each batch size at least this long (after one warm-up call).
    pub min_time: Duration,
    /// And at least this many calls.
    pub min_calls: usize,
    pub device: DevicePreference,
}

impl Default for BenchSpec {
    fn default() -> Self {
        BenchSpec {
            width: 320,
            height: 180,
            batches: vec![1, 8],
            min_time: Duration::from_secs(10),
            min_calls: 3,
            device: DevicePreference::Auto,
        }
    }
}

/// One measured batch size.
#[derive(Clone, Debug)]
pub struct BenchResult {
    pub batch: usize,
    pub frames: usize,
    pub seconds: f64,
    pub fps: f64,
}

/// Runs the benchmark; returns the device's name and one result per batch size.
pub fn bench_upscale(spec: &BenchSpec) -> Result<(String, Vec<BenchResult>), NodeError> {
    let compute = Compute::open(spec.device)?;
    let ck = load_checkpoint(None).map_err(|e| NodeError::input(e.to_string()))?;
    let up = Upscaler::new(&ck, &compute.device, UpscaleOptions::default())
        .map_err(|e| NodeError::input(e.to_string()))?;
    let max = spec.batches.iter().copied().max().unwrap_or(1);
    let frames: Vec<Frame> = (0..max as u64)
        .map(|i| {
            let data = crate::kinds::testsrc::pattern(spec.width, spec.height, i, 25.0);
            Frame::new(
                i,
                i as f64 / 25.0,
                Rate::new(25, 1),
                spec.width,
                spec.height,
                data,
            )
        })
        .collect();
    let mut results = vec![];
    for &b in &spec.batches {
        let batch: Vec<&Frame> = frames.iter().take(b).collect();
        up.upscale_frames(&batch); // warm-up: allocations, kernel compilation
        let start = Instant::now();
        let mut calls = 0;
        while calls < spec.min_calls || start.elapsed() < spec.min_time {
            let out = up.upscale_frames(&batch);
            assert_eq!(out.len(), b);
            calls += 1;
        }
        let seconds = start.elapsed().as_secs_f64();
        results.push(BenchResult {
            batch: b,
            frames: calls * b,
            seconds,
            fps: (calls * b) as f64 / seconds,
        });
    }
    Ok((format!("{} ({})", compute.name, compute.reason), results))
}
