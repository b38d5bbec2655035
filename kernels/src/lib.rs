//! CPU kernels for vidflow's Burn models.
//!
//! The networks are written in Burn and run on any Burn device. On the CPU backend, Burn's
//! convolution (im2col + GEMM) spends more than half its time outside the GEMM, so the
//! operation that dominates every super-resolution and lip-sync network, the 3x3 stride-1
//! convolution, has a faster kernel here: [`Conv3x3`], Winograd F(2x2, 3x3) on the GEMM
//! crate Burn itself uses. The models call it when their tensors live on the CPU device and
//! fall back to Burn's `conv2d` everywhere else, so the GPU path is unchanged. RIFE runs on
//! the CPU entirely on this crate's kernels: the Winograd convolutions, [`Conv3x3s2`] (the 3x3
//! stride-2 convolution, im2col + GEMM, of its downsampling layers), its backward warp
//! ([`warp`], thirty tensor passes in Burn, one here) and its bilinear resizing ([`resize`]). [`Conv2d`] and [`ConvTranspose2d`] run any
//! other convolution of a batch as one GEMM (Wav2Lip's), where Burn runs one per image.
//!
//! This crate has no Burn dependency and is compiled with optimisations in the dev profile
//! too, so the test suite does not run an unoptimised kernel.

pub mod conv;
pub mod conv_s2;
pub mod resize;
mod simd;
#[cfg(test)]
mod testutil;
pub mod warp;
pub mod winograd;

pub use conv::{Conv2d, ConvTranspose2d};
pub use conv_s2::Conv3x3s2;
pub use resize::resize_bilinear;
pub use warp::backward_warp;
pub use winograd::{Activation, Conv3x3};
