#!/usr/bin/env python3
"""facenet-pytorch's MTCNN (the reference of `face-detect`) on the benchmark's frames: frames
per second at batch 1 and 8 on the CPU, printed like nodes/benches/face_detect.rs (BENCH lines).
Run by scripts/bench-face-detect.sh."""
import argparse, json, time
import numpy as np
import torch
from PIL import Image
from facenet_pytorch import MTCNN

ap = argparse.ArgumentParser()
ap.add_argument("image")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--seconds", type=float, default=5.0)
a = ap.parse_args()
torch.set_num_threads(a.threads)
m = MTCNN(keep_all=True, device="cpu")
img = Image.open(a.image).convert("RGB")
w, h = img.size
for batch in (1, 8):
    frames = img if batch == 1 else [img] * batch
    m.detect(frames)  # warm-up
    n = calls = 0
    t = time.perf_counter()
    while time.perf_counter() - t < a.seconds or calls < 2:
        m.detect(frames)
        n += batch
        calls += 1
    el = time.perf_counter() - t
    fps = n / el
    print(f"facenet-pytorch MTCNN {w}x{h} batch {batch}: {fps:.1f} frames/s, {1000 * el / n:.1f} ms per frame "
          f"(torch {torch.__version__} CPU, {a.threads} threads)")
    print("BENCH " + json.dumps({"engine": "facenet-pytorch", "batch": batch, "fps": fps, "threads": a.threads}))
