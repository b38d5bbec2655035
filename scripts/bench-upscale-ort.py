#!/usr/bin/env python3
"""onnxruntime (CPU) on realesr-animevideov3-x4.onnx: frames/s for 320x180 -> 1280x720 at the
given batch sizes, with the given number of threads. Prints one `BENCH {json}` line per batch.

Model input `x` [N,3,H,W] float32 in [0,1]; output `y` [N,3,4H,4W]. The frames are converted
from u8 RGB and back (clamp, x255, round), as vidflow does, so both sides do the same work.
--frames names a raw rgb24 file of WxH frames (the first `batch` of them form the batch; see
scripts/bench-peers.sh, which writes the frames nodes/benches/upscale.rs uses); without it the
frames are random noise. Denormals are flushed to zero (`session.set_denormal_as_zero`)
unless --keep-denormals is given.
"""
import argparse, json, time
import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--threads", type=int, required=True)
ap.add_argument("--batches", default="1,8")
ap.add_argument("--seconds", type=float, default=10.0)
ap.add_argument("--width", type=int, default=320)
ap.add_argument("--height", type=int, default=180)
ap.add_argument("--frames", default=None, help="raw rgb24 frames, WxH each")
ap.add_argument("--keep-denormals", action="store_true")
ap.add_argument("--no-spin", action="store_true", help="idle pool threads sleep instead of spinning (for a shared machine)")
a = ap.parse_args()

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
print(
    f"onnxruntime {ort.__version__} CPUExecutionProvider, {a.threads} threads, "
    f"denormals {'kept' if a.keep_denormals else 'flushed'}, {'no spinning' if a.no_spin else 'spinning'}{', random noise' if not a.frames else ''}"
)
given = np.fromfile(a.frames, dtype=np.uint8).reshape(-1, a.height, a.width, 3) if a.frames else None

rng = np.random.default_rng(0)
for b in [int(x) for x in a.batches.split(",")]:
    if given is not None:
        assert len(given) >= b, f"{a.frames}: {len(given)} frames, batch {b}"
        frames = given[:b]
    else:
        frames = rng.integers(0, 256, size=(b, a.height, a.width, 3), dtype=np.uint8)

    def once():
        x = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
        y = sess.run(None, {"x": x})[0]
        out = (np.clip(y, 0, 1) * 255.0).round().astype(np.uint8).transpose(0, 2, 3, 1)
        assert out.shape == (b, a.height * 4, a.width * 4, 3)

    once()  # warm-up
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < a.seconds:
        once()
        calls += 1
    secs = time.perf_counter() - start
    fps = calls * b / secs
    print(f"  {a.width}x{a.height} -> {a.width*4}x{a.height*4} batch {b}: {fps:.3f} frames/s ({calls*b} frames in {secs:.1f} s)")
    print("BENCH " + json.dumps({"engine": "onnxruntime", "batch": b, "fps": round(fps, 4)}))
