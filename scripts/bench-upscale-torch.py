#!/usr/bin/env python3
"""PyTorch eager (CPU) on realesr-animevideov3 x4: frames/s for WxH -> 4Wx4H at the given batch
sizes, with the given number of threads. Prints one `BENCH {json}` line per batch, in the format
of nodes/benches/upscale.rs and scripts/bench-upscale-ort.py. Run by scripts/bench-peers.sh.

The network is Real-ESRGAN's SRVGGNetCompact (num_in_ch 3, num_out_ch 3, num_feat 64,
num_conv 16, upscale 4, act_type prelu), written here after `realesrgan/archs/srvgg_arch.py` of
the PyPI wheel realesrgan 0.3.0 (BSD-3-Clause, xinntao/Real-ESRGAN): the same modules and key
layout (`body.{0..35}`, convs and PReLUs alternating), so the official checkpoint
(`{'params': state_dict}` or `{'params_ema': ...}`, see ../shared/models/README.md) loads with
strict=True. Before timing, the network's output on the shared fixture
upscale_in_1x3x64x64.npy is compared with upscale_out_animevideov3_1x3x64x64.npy when
--fixtures holds them.

Frames (--frames, raw rgb24, WxH each; the first `batch` of them form the batch) are converted
from u8 RGB and back (clamp, x255, round), as vidflow does, so both sides do the same work.
The allocator is whatever the process runs with: scripts/bench-peers.sh preloads jemalloc with
its decay turned off, so that freed activations are reused instead of returned to the kernel.
"""
import argparse, json, os, time
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact VGG-style super-resolution network (prelu variant)."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4):
        super().__init__()
        self.upscale = upscale
        self.body = nn.ModuleList()
        self.body.append(nn.Conv2d(num_in_ch, num_feat, 3, 1, 1))
        self.body.append(nn.PReLU(num_parameters=num_feat))
        for _ in range(num_conv):
            self.body.append(nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.body.append(nn.PReLU(num_parameters=num_feat))
        self.body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        # the network learns the residual over the nearest-neighbour upsampled input
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


ap = argparse.ArgumentParser()
ap.add_argument("--weights", required=True, help="realesr-animevideov3-x4.pth")
ap.add_argument("--frames", required=True, help="raw rgb24 frames, WxH each")
ap.add_argument("--width", type=int, default=320)
ap.add_argument("--height", type=int, default=180)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batches", default="8")
ap.add_argument("--seconds", type=float, default=10.0)
ap.add_argument("--fixtures", default=None, help="folder with upscale_{in,out_animevideov3}_1x3x64x64.npy")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.set_num_interop_threads(1)
W, H = a.width, a.height

ck = torch.load(a.weights, map_location="cpu", weights_only=True)
sd = ck.get("params_ema", ck.get("params", ck)) if isinstance(ck, dict) else ck
net = SRVGGNetCompact()
net.load_state_dict(sd, strict=True)
net.eval()

frames = np.fromfile(a.frames, dtype=np.uint8).reshape(-1, H, W, 3)
alloc = "jemalloc" if "libjemalloc" in open("/proc/self/maps").read() else "glibc malloc"
print(
    f"PyTorch {torch.__version__} eager CPU, {torch.get_num_threads()} threads, {alloc}"
    + (f" (MALLOC_CONF={os.environ['MALLOC_CONF']})" if "MALLOC_CONF" in os.environ else "")
)

with torch.inference_mode():
    if a.fixtures:
        fin = os.path.join(a.fixtures, "upscale_in_1x3x64x64.npy")
        fout = os.path.join(a.fixtures, "upscale_out_animevideov3_1x3x64x64.npy")
        if os.path.exists(fin) and os.path.exists(fout):
            got = net(torch.from_numpy(np.load(fin)).float()).numpy()
            err = float(np.abs(got - np.load(fout)).max())
            print(f"  parity with the reference fixture: max |diff| {err:.2e}")
            assert err < 1e-3, f"SRVGGNetCompact does not match the reference output ({err})"

    for b in [int(x) for x in a.batches.split(",")]:
        assert len(frames) >= b, f"{a.frames}: {len(frames)} frames, batch {b}"
        batch = frames[:b]

        def once():
            x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).float() / 255.0
            y = net(x)
            out = (y.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
            assert out.shape == (b, H * 4, W * 4, 3)

        once()  # warm-up
        calls, start = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < a.seconds:
            once()
            calls += 1
        secs = time.perf_counter() - start
        fps = calls * b / secs
        print(f"  {W}x{H} -> {W*4}x{H*4} batch {b}: {fps:.3f} frames/s ({calls*b} frames in {secs:.1f} s)")
        print("BENCH " + json.dumps({"engine": "pytorch", "batch": b, "fps": round(fps, 4), "allocator": alloc}))
