//! SRVGGNetCompact (Real-ESRGAN `realesrgan/archs/srvgg_arch.py`): a plain stack of 3x3
//! convolutions with PReLU at the input resolution, a pixel shuffle, and the nearest-upsampled
//! input added back. realesr-animevideov3 is num_feat 64, num_conv 16, x4;
//! realesr-general-x4v3 is num_conv 32.

use super::SrvggConfig;
use crate::models::{Act, Conv3, PRelu, cpu_floats, cpu_tensor, pixel_shuffle, upsample_nearest};
use crate::weights::Checkpoint;
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
        let out = match self.forward_cpu(&x) {
            Some(out) => out,
            None => {
                let mut out = x.clone();
                for (k, conv) in self.convs.iter().enumerate() {
                    out = conv.forward_act(out, self.act(k));
                }
                out
            }
        };
        let out = pixel_shuffle(out, self.config.upscale);
        out + upsample_nearest(x, self.config.upscale)
    }

    /// What follows convolution `k`: PReLU, but after the last one nothing.
    fn act(&self, k: usize) -> Act<'_> {
        self.alphas.get(k).map_or(Act::None, Act::PRelu)
    }

    /// The convolution stack on the CPU kernels, when every layer has one: the activations
    /// stay in two buffers that the layers ping-pong between, rather than going through a
    /// Burn tensor (and fresh memory) per layer.
    ///
    /// # Shapes
    /// `[N, in_ch, H, W]` → `[N, out_ch·upscale², H, W]`
    fn forward_cpu(&self, x: &Tensor<4>) -> Option<Tensor<4>> {
        let kernels: Vec<_> = self
            .convs
            .iter()
            .map(Conv3::cpu_kernel)
            .collect::<Option<_>>()?;
        if x.dtype() != DType::F32 {
            return None;
        }
        let [n, _, h, w] = x.dims();
        let widest = kernels.iter().map(|k| k.out_channels()).max().unwrap_or(0);
        let mut cin = kernels.first()?.in_channels();
        // Both buffers hold the widest layer; the input fills the front of one.
        let mut src = cpu_floats(x.clone());
        src.resize(src.len().max(n * widest * h * w), 0.0);
        let mut dst = vec![0f32; src.len()];
        for (k, kernel) in kernels.iter().enumerate() {
            let cout = kernel.out_channels();
            kernel.forward_into(
                &src[..n * cin * h * w],
                n,
                h,
                w,
                self.act(k).cpu(),
                &mut dst[..n * cout * h * w],
            );
            std::mem::swap(&mut src, &mut dst);
            cin = cout;
        }
        src.truncate(n * cin * h * w);
        Some(cpu_tensor(src, [n, cin, h, w], &x.device()))
    }
}
