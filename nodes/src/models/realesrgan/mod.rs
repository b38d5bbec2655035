//! Real-ESRGAN: the two super-resolution networks `upscale` runs, SRVGGNetCompact ([`srvgg`])
//! and RRDBNet ([`rrdb`]), the [`Network`] that holds either, and [`detect`], which recognises
//! which one a checkpoint holds ([`detect()`] and [`check_keys`]).

pub mod detect;
pub mod rrdb;
pub mod srvgg;

pub use detect::{Arch, RrdbConfig, SrvggConfig, check_keys, detect};

use crate::weights::Checkpoint;
use burn::tensor::{DType, Device, Tensor};

/// A loaded super-resolution network of any supported architecture.
#[derive(Clone, Debug)]
pub enum Network {
    Srvgg(srvgg::SrvggNet),
    Rrdb(Box<rrdb::RrdbNet>),
}

impl Network {
    /// Builds the network `arch` (from [`detect`]) on `device`.
    pub fn load(arch: &Arch, ck: &Checkpoint, device: &Device, dtype: DType) -> Network {
        match arch {
            Arch::Srvgg(c) => Network::Srvgg(srvgg::SrvggNet::load(*c, ck, device, dtype)),
            Arch::Rrdb(c) => Network::Rrdb(Box::new(rrdb::RrdbNet::load(*c, ck, device, dtype))),
        }
    }
    /// # Shapes
    /// `[N, 3, H, W]` in [0, 1] → `[N, 3, H·scale, W·scale]`, not clamped.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Network::Srvgg(m) => m.forward(x),
            Network::Rrdb(m) => m.forward(x),
        }
    }
    /// How many pixels the input must be a multiple of in each dimension (RRDBNet x2/x1
    /// pixel-unshuffle their input).
    pub fn input_multiple(&self) -> usize {
        match self {
            Network::Srvgg(_) => 1,
            Network::Rrdb(m) => m.input_multiple(),
        }
    }
}
