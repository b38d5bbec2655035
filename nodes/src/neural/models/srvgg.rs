//! SRVGGNetCompact (Real-ESRGAN `realesrgan/archs/srvgg_arch.py`): a plain stack of 3x3
//! convolutions with PReLU at the input resolution, a pixel shuffle, and the nearest-upsampled
//! input added back. realesr-animevideov3 is num_feat 64, num_conv 16, x4;
//! realesr-general-x4v3 is num_conv 32.

use super::{Act, Conv3, PRelu, pixel_shuffle, upsample_nearest};
use crate::neural::weights::{Checkpoint, SrvggConfig};
use burn::tensor::{DType, Device, Tensor};

#[derive(Clone, Debug)]
pub struct SrvggNet {
    pub config: SrvggConfig,
    /// `body.0, body.2, …, body.{2(num_conv+1)}`.
    convs: Vec<Conv3>,
    /// `body.1, body.3, …`: one PReLU per convolution but the last.
    alphas: Vec<PRelu>,
}

impl SrvggNet {
    pub fn load(config: SrvggConfig, ck: &Checkpoint, device: &Device, dtype: DType) -> SrvggNet {
        let n = config.num_conv + 2;
        let convs = (0..n)
            .map(|k| Conv3::load(ck, &format!("body.{}", 2 * k), device, dtype))
            .collect();
        let alphas = (0..n - 1)
            .map(|k| PRelu::load(ck, &format!("body.{}.weight", 2 * k + 1), device, dtype))
            .collect();
        SrvggNet {
            config,
            convs,
            alphas,
        }
    }

    /// # Shapes
    /// `[N, in_ch, H, W]` → `[N, out_ch, H·upscale, W·upscale]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut out = x.clone();
        for (k, conv) in self.convs.iter().enumerate() {
            out = match self.alphas.get(k) {
                Some(alpha) => conv.forward_act(out, Act::PRelu(alpha)),
                None => conv.forward(out),
            };
        }
        let out = pixel_shuffle(out, self.config.upscale);
        out + upsample_nearest(x, self.config.upscale)
    }
}
