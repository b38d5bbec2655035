//! RRDBNet (basicsr `basicsr/archs/rrdbnet_arch.py`), the ESRGAN generator used by
//! RealESRGAN_x4plus (23 blocks), x4plus_anime_6B (6 blocks) and x2plus (input
//! pixel-unshuffled by 2).

use super::RrdbConfig;
use crate::models::{Act, Conv3, pixel_unshuffle, upsample_nearest};
use crate::weights::Checkpoint;
use burn::tensor::{DType, Device, Tensor};

/// `nn.LeakyReLU(negative_slope=0.2)`, after every convolution but the residual ones.
const LRELU: Act<'static> = Act::Leaky(0.2);

/// Five densely connected convolutions; the output is scaled by 0.2 and added to the input.
#[derive(Clone, Debug)]
struct DenseBlock {
    convs: [Conv3; 5],
}

impl DenseBlock {
    fn load(ck: &Checkpoint, prefix: &str, device: &Device, dtype: DType) -> DenseBlock {
        let c = |i: usize| Conv3::load(ck, &format!("{prefix}.conv{i}"), device, dtype);
        DenseBlock {
            convs: [c(1), c(2), c(3), c(4), c(5)],
        }
    }
    /// # Shapes
    /// `[N, nf, H, W]` → `[N, nf, H, W]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut feats = vec![x.clone()];
        for conv in &self.convs[..4] {
            let y = conv.forward_act(Tensor::cat(feats.clone(), 1), LRELU);
            feats.push(y);
        }
        let x5 = self.convs[4].forward(Tensor::cat(feats, 1));
        x5 * 0.2 + x
    }
}

/// Residual in residual dense block: three dense blocks, scaled by 0.2, plus the input.
#[derive(Clone, Debug)]
struct Rrdb {
    rdbs: [DenseBlock; 3],
}

impl Rrdb {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut out = x.clone();
        for rdb in &self.rdbs {
            out = rdb.forward(out);
        }
        out * 0.2 + x
    }
}

#[derive(Clone, Debug)]
pub struct RrdbNet {
    pub config: RrdbConfig,
    conv_first: Conv3,
    body: Vec<Rrdb>,
    conv_body: Conv3,
    conv_up1: Conv3,
    conv_up2: Conv3,
    conv_hr: Conv3,
    conv_last: Conv3,
}

impl RrdbNet {
    pub fn load(config: RrdbConfig, ck: &Checkpoint, device: &Device, dtype: DType) -> RrdbNet {
        let c = |name: &str| Conv3::load(ck, name, device, dtype);
        let body = (0..config.num_block)
            .map(|b| {
                let r = |i: usize| DenseBlock::load(ck, &format!("body.{b}.rdb{i}"), device, dtype);
                Rrdb {
                    rdbs: [r(1), r(2), r(3)],
                }
            })
            .collect();
        RrdbNet {
            config,
            conv_first: c("conv_first"),
            body,
            conv_body: c("conv_body"),
            conv_up1: c("conv_up1"),
            conv_up2: c("conv_up2"),
            conv_hr: c("conv_hr"),
            conv_last: c("conv_last"),
        }
    }

    /// 1 for x4, 2 for x2, 4 for x1 (the pixel-unshuffle factor).
    pub fn input_multiple(&self) -> usize {
        match self.config.scale {
            2 => 2,
            1 => 4,
            _ => 1,
        }
    }

    /// # Shapes
    /// `[N, in_ch, H, W]` (H, W multiples of [`input_multiple`](Self::input_multiple)) →
    /// `[N, out_ch, H·scale, W·scale]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let feat = match self.input_multiple() {
            1 => x,
            r => pixel_unshuffle(x, r),
        };
        let feat = self.conv_first.forward(feat);
        let mut body = feat.clone();
        for block in &self.body {
            body = block.forward(body);
        }
        let feat = feat + self.conv_body.forward(body);
        let feat = self.conv_up1.forward_act(upsample_nearest(feat, 2), LRELU);
        let feat = self.conv_up2.forward_act(upsample_nearest(feat, 2), LRELU);
        self.conv_last
            .forward(self.conv_hr.forward_act(feat, LRELU))
    }
}
