#!/usr/bin/env python3
"""onnxruntime (CPU) on rife-v4.25-640x384.onnx: frame pairs/s at 640x384 (one new frame per
pair at t = 0.5), with the given number of threads. Prints one `BENCH {json}` line.

--frames names a raw rgb24 file of WxH frames (e.g. ffmpeg's testsrc2, as scripts/bench-peers.sh
makes it); each call then takes a different pair of consecutive frames, as the `pair` mode of
nodes/benches/interpolate.rs does (the exported graph holds the encoder, so it cannot reuse a
frame's features: `pair` is its only mode). Without it the frames are random noise shifted by
4 px, which drives RIFE into denormal floats: use real frames for any figure you compare.
Denormals are flushed to zero (session option `session.set_denormal_as_zero`, onnxruntime's
best CPU configuration) unless --keep-denormals is given.

Inputs (see ../shared/models/README.md): img0, img1 [1,3,384,640]; timestep [1,1,384,640];
div [2] = ((W-1)/2, (H-1)/2); grid [1,2,384,640] (linspace(-1,1) over width in channel 0, over
height in channel 1). The frames are converted from u8 RGB and back (clamp, x255, round), as
vidflow does, so both sides do the same work.
"""
import argparse, json, time
import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--threads", type=int, required=True)
ap.add_argument("--seconds", type=float, default=10.0)
ap.add_argument("--frames", default=None, help="raw rgb24 frames, 640x384 each")
ap.add_argument("--keep-denormals", action="store_true")
ap.add_argument("--no-spin", action="store_true", help="idle pool threads sleep instead of spinning (for a shared machine)")
a = ap.parse_args()
W, H = 640, 384

so = ort.SessionOptions()
so.intra_op_num_threads = a.threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
if not a.keep_denormals:
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
if a.no_spin:
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
if a.frames:
    frames = np.fromfile(a.frames, dtype=np.uint8).reshape(-1, H, W, 3)
    assert len(frames) >= 2, f"{a.frames}: need at least two {W}x{H} frames"
else:
    rng = np.random.default_rng(0)
    f0 = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    frames = np.stack([f0, np.roll(f0, 4, axis=1)])
pairs = len(frames) - 1
print(
    f"onnxruntime {ort.__version__} CPUExecutionProvider, {a.threads} threads, "
    f"denormals {'kept' if a.keep_denormals else 'flushed'}, {'no spinning' if a.no_spin else 'spinning'}, "
    f"{len(frames)} frames{' (random noise)' if not a.frames else ''}"
)
gx = np.broadcast_to(np.linspace(-1, 1, W, dtype=np.float32)[None, :], (H, W))
gy = np.broadcast_to(np.linspace(-1, 1, H, dtype=np.float32)[:, None], (H, W))
grid = np.ascontiguousarray(np.stack([gx, gy])[None], dtype=np.float32)
div = np.array([(W - 1) / 2, (H - 1) / 2], dtype=np.float32)
ts = np.full((1, 1, H, W), 0.5, dtype=np.float32)


def once(k=0):
    f0, f1 = frames[k % pairs], frames[k % pairs + 1]
    x0 = np.ascontiguousarray(f0.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    x1 = np.ascontiguousarray(f1.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    y = sess.run(None, {"img0": x0, "img1": x1, "timestep": ts, "div": div, "grid": grid})[0]
    out = (np.clip(y[0], 0, 1) * 255.0).round().astype(np.uint8).transpose(1, 2, 0)
    assert out.shape == (H, W, 3)


# A different pair each call (as vidflow's `pair` mode: step 2 when there are more than 2 pairs).
step = 2 if pairs > 2 else 1
once(0)  # warm-up
calls, start = 0, time.perf_counter()
while calls < 3 or time.perf_counter() - start < a.seconds:
    once(1 + calls * step)
    calls += 1
secs = time.perf_counter() - start
pps = calls / secs
print(f"  {W}x{H} t=0.5 pair: {pps:.3f} pairs/s ({calls} pairs in {secs:.1f} s)")
print("BENCH " + json.dumps({"engine": "onnxruntime", "mode": "pair", "pps": round(pps, 4)}))
