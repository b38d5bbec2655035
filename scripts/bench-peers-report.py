#!/usr/bin/env python3
"""The table of scripts/bench-peers.sh: reads the logs of its runs and prints one Markdown table
of same-run ratios (median of each side, min–max beside it), then the value of every run.

    scripts/bench-peers-report.py WORKDIR [--out FILE]

WORKDIR/meta holds `key=value` lines (date, nproc, cpu, load averages, versions, settings);
WORKDIR/runs/<row>__<side>__<rep>.log the output of each run:
- `BENCH {json}` lines of nodes/benches/{interpolate,upscale,lipsync}.rs and of the peers'
  scripts (scripts/bench-rife-torch.py, bench-rife-ort.py, bench-upscale-{torch,ort}.py);
- `TIME wall user sys maxrss_kib` lines written by /usr/bin/time for the transcode runs and the
  RIFE whole-process runs;
- `round N: hand X ms, engine Y ms` lines of engine/benches/chain.rs.
A side whose runs all failed shows as `failed` (its log says why).
"""
import argparse, glob, json, os, re, statistics

ap = argparse.ArgumentParser()
ap.add_argument("work")
ap.add_argument("--out", default=None)
a = ap.parse_args()

meta = {}
for line in open(os.path.join(a.work, "meta")):
    k, _, v = line.rstrip("\n").partition("=")
    meta[k] = v


def logs(row, side):
    """The runs' logs of one side of one row, in rep order."""
    files = glob.glob(os.path.join(a.work, "runs", f"{row}__{side}__*.log"))
    return [open(f).read() for f in sorted(files, key=lambda f: int(f.rsplit("__", 1)[1][:-4]))]


def bench(row, side, **match):
    """The value of `key` in the BENCH lines of each run that match `match`."""
    key = match.pop("key")
    out = []
    for text in logs(row, side):
        for line in text.splitlines():
            if line.startswith("BENCH "):
                r = json.loads(line[6:])
                if all(r.get(k) == v for k, v in match.items()) and key in r:
                    out.append(float(r[key]))
    return out


def times(row, side):
    """(wall s, cpu s, peak RSS MiB) of each run."""
    out = []
    for text in logs(row, side):
        for line in text.splitlines():
            if line.startswith("TIME "):
                wall, user, sys_, rss = (float(x) for x in line.split()[1:5])
                out.append((wall, user + sys_, rss / 1024.0))
    return out


def stats(v):
    return (min(v), statistics.median(v), max(v)) if v else None


def cell(v, fmt, label=""):
    s = stats(v)
    if s is None:
        return f"{label}failed" if label else "failed"
    lo, med, hi = s
    spread = f" ({lo:{fmt}}–{hi:{fmt}})" if len(v) > 1 else ""
    return f"{label}{med:{fmt}}{spread}"


def ratio(v, p, fmt=".2f"):
    if not v or not p:
        return None, "–"
    r = statistics.median(v) / statistics.median(p)
    return r, f"{r:{fmt}}"


def target(r, op, t):
    if op is None:
        return "–"
    mark = "" if r is None else (" ✓" if (r >= t if op == ">=" else r <= t) else " ✗")
    return f"{'≥' if op == '>=' else '≤'} {t}{mark}"


rows = []  # (measure, vidflow, peer, ratio, target)
details = []  # (what, values)
only = set(meta.get("only", "").split(","))
reps_note = f"{meta.get('reps', '?')} runs each side"

if "rife" in only:
    for mode, what in [("pair", "each pair on its own"), ("stream", "consecutive pairs, each frame encoded once")]:
        v = bench("rife", "vidflow", engine="vidflow", mode=mode, key="pps")
        t = bench("rife", "torch", engine="pytorch", mode=mode, key="pps")
        o = bench("rife", "ort", engine="onnxruntime", mode="pair", key="pps")
        measure = f"RIFE v4.25 640x384 pairs/s, {mode} ({what})"
        r, rs = ratio(v, t)
        rows.append((measure, cell(v, ".2f"), cell(t, ".2f", "PyTorch eager "), rs, target(r, ">=", 1.0)))
        r, rs = ratio(v, o)
        onote = "" if mode == "pair" else " (pair: the export cannot reuse features)"
        rows.append((measure, cell(v, ".2f"), cell(o, ".2f", "onnxruntime ") + onote, rs, target(r, ">=", 1.0)))
        details += [(f"rife {mode} vidflow", v), (f"rife {mode} pytorch", t)]
    details.append(("rife pair onnxruntime", bench("rife", "ort", engine="onnxruntime", mode="pair", key="pps")))
    # The whole process: decode → RIFE → encode, pairs over wall time, against the model alone.
    pairs = float(meta.get("rife_clip_pairs", "100"))
    g = [pairs / wall for wall, _, _ in times("rife", "graph")]
    t = bench("rife", "torch", engine="pytorch", mode="stream", key="pps")
    r, rs = ratio(g, t)
    rows.append((f"RIFE whole process: `vidflow run graphs/interpolate.yaml`, 640x384 clip, {pairs:.0f} pairs, pairs/s of wall time (decode and libx264 included)",
                 cell(g, ".2f"), cell(t, ".2f", "PyTorch eager, model only, stream "), rs, target(r, ">=", 1.0)))
    details.append(("rife whole-process graph pairs/s", g))

if "upscale" in only:
    measure = "Real-ESRGAN animevideov3 320x180→1280x720, batch 8, frames/s"
    v = bench("upscale", "vidflow", engine="vidflow", batch=8, key="fps")
    t = bench("upscale", "torch", engine="pytorch", batch=8, key="fps")
    o = bench("upscale", "ort", engine="onnxruntime", batch=8, key="fps")
    r, rs = ratio(v, t)
    rows.append((measure, cell(v, ".2f"), cell(t, ".2f", "PyTorch eager, jemalloc decay off "), rs, target(r, ">=", 1.0)))
    r, rs = ratio(v, o)
    rows.append((measure, cell(v, ".2f"), cell(o, ".2f", "onnxruntime "), rs, target(r, ">=", 1.0)))
    details += [("upscale b8 vidflow", v), ("upscale b8 pytorch+jemalloc", t), ("upscale b8 onnxruntime", o)]

if "transcode" in only:
    secs = meta.get("transcode_seconds", "?")
    for preset in meta.get("presets", "veryfast,medium").split(","):
        row = f"transcode-{preset}"
        v, f = times(row, "vidflow"), times(row, "ffmpeg")
        for i, (what, fmt, unit) in enumerate([("wall", ".2f", " s"), ("CPU user+sys", ".2f", " s"), ("peak RSS", ".0f", " MiB")]):
            vv, ff = [x[i] for x in v], [x[i] for x in f]
            measure = f"transcode 720p {secs} s, libx264 {preset} crf 23, {what}{' (' + unit.strip() + ')'}"
            r, rs = ratio(vv, ff)
            rows.append((measure, cell(vv, fmt), cell(ff, fmt, "ffmpeg CLI "), rs, target(r, "<=", 1.0)))
            details += [(f"{row} {what} vidflow", vv), (f"{row} {what} ffmpeg", ff)]

if "engine" in only:
    hand, eng = [], []
    for text in logs("engine", "chain"):
        for m in re.finditer(r"round \d+: hand\s+([\d.]+) ms, engine\s+([\d.]+) ms", text):
            hand.append(float(m.group(1)))
            eng.append(float(m.group(2)))
    per_round = [h / e for h, e in zip(hand, eng)]
    items = meta.get("chain_items", "?")
    measure = f"engine: source → 5 pass-through → sink, {items} items, ms per round (throughput ratio per round)"
    if per_round:
        s = stats(per_round)
        r, rs = s[1], f"{s[1]:.3f} median round (min {s[0]:.3f}, max {s[2]:.3f})"
    else:
        r, rs = None, "–"
    rows.append((measure, cell(eng, ".1f"), cell(hand, ".1f", "hand-written crossbeam chain "), rs, target(r, ">=", 0.9)))
    details += [("engine round ms", eng), ("hand-written round ms", hand), ("per-round ratio hand/engine", per_round)]

if "wav2lip" in only:
    b8 = bench("wav2lip", "vidflow", batch=8, key="faces_per_s")
    b1 = bench("wav2lip", "vidflow", batch=1, key="faces_per_s")
    r, rs = ratio(b8, b1)
    rows.append(("Wav2Lip faces/s, batch 8 (vidflow) / batch 1 (peer column)", cell(b8, ".1f", "batch 8: "), cell(b1, ".1f", "batch 1: "), rs, target(r, ">=", 2.0)))
    details += [("wav2lip batch 8 faces/s", b8), ("wav2lip batch 1 faces/s", b1)]

lines = [
    f"## vidflow vs peers, same run — {meta.get('date', '?')}",
    "",
    f"- machine: {meta.get('cpu', '?')}, nproc {meta.get('nproc', '?')}; load average at start {meta.get('load_start', '?')}, at end {meta.get('load_end', '?')}",
    f"- vidflow {meta.get('vidflow', '?')} (release build), {meta.get('threads', '?')} threads each side (RAYON_NUM_THREADS / torch.set_num_threads / intra_op_num_threads); transcode: each tool's own thread defaults",
    f"- peers: {meta.get('peers', '?')}; their idle pool threads "
    + ("spin (library defaults)" if meta.get("spin", "1") == "1" else "sleep (--no-spin: OMP_WAIT_POLICY=PASSIVE, allow_spinning 0)"),
    f"- {reps_note}, alternating order{', --quick (short runs: smoke test, not figures)' if meta.get('quick') == '1' else ''}; each cell: median (min–max); ratio: vidflow median / peer median (time and memory rows: lower is better)",
    f"- command: `{meta.get('command', 'scripts/bench-peers.sh')}`",
    "",
    "| measure | vidflow | peer | ratio | target |",
    "|---|---|---|---|---|",
]
lines += [f"| {m} | {v} | {p} | {r} | {t} |" for m, v, p, r, t in rows]
lines += ["", "<details><summary>every run</summary>", ""]
for what, vals in details:
    lines.append(f"- {what}: {', '.join(f'{x:.4g}' for x in vals) if vals else 'none (failed: see the logs)'}")
lines += ["", f"Logs: `{os.path.join(a.work, 'runs')}`", "", "</details>", ""]
text = "\n".join(lines)
print(text)
if a.out:
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fh:
        fh.write(text)
