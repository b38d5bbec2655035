//! Runtime dispatch to AVX2: the crate is compiled for the x86-64 baseline (SSE2), so its plain
//! float loops are vectorised 4 wide; where the CPU has AVX2 (every x86 server of the last
//! decade) the same loops compiled for it run 8 wide. Rust never fuses a multiply and an add on
//! its own, so both versions compute bit-identical results.

/// Runs `f` with AVX2 and FMA enabled for the code inlined into it, where the CPU has them.
/// Mark the functions `f` calls `#[inline(always)]`: code that is not inlined keeps the
/// baseline instructions.
#[inline(always)]
pub(crate) fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features `run` is compiled for.
            return unsafe { run(f) };
        }
    }
    f()
}
