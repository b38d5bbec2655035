//! What the model benchmarks of this folder read from the environment: whether to run at all
//! (`VIDFLOW_BENCH=1`: a benchmark is a speed measurement, and `cargo test --all-targets`
//! only builds it), the time per measurement (`VIDFLOW_BENCH_SECONDS`) and the device
//! (`VIDFLOW_DEVICE`: auto, gpu or cpu).

use vidflow_nodes::gpu::device::DevicePreference;

/// The seconds per measurement (`VIDFLOW_BENCH_SECONDS`, else `default_seconds`), or `None`
/// after saying how to run the benchmark `name` when `VIDFLOW_BENCH` is not `1`.
pub fn enabled(name: &str, how: &str, default_seconds: f64) -> Option<f64> {
    if std::env::var("VIDFLOW_BENCH").as_deref() != Ok("1") {
        eprintln!("{name} benchmark: set VIDFLOW_BENCH=1 to run it ({how})");
        return None;
    }
    Some(
        std::env::var("VIDFLOW_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default_seconds),
    )
}

/// The device of `VIDFLOW_DEVICE`, `default` when it is not set.
#[allow(dead_code)] // not every benchmark opens a device
pub fn device(default: &str) -> DevicePreference {
    std::env::var("VIDFLOW_DEVICE")
        .unwrap_or_else(|_| default.into())
        .parse()
        .expect("VIDFLOW_DEVICE: auto, gpu or cpu")
}
