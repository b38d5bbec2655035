"""Drives `vidflow serve` from Python over real gRPC: a client not written in Rust.

    serve_client.py ADDR PROTO_DIR [--frames N] [--width W] [--height H] [--scale S]

ADDR is the server's host:port, PROTO_DIR the repository's `proto/` folder. The stubs are
generated from `vidflow/serve/v1/serve.proto` with grpcio-tools (`python -m grpc_tools.protoc`)
into a temporary folder; nothing here is hand-written protocol code.

Checks, against a serve graph that upscales by S (2 by default):
1. a session (config with RAW_RGB output, then N raw-RGB frames of W x H, then the client
   closes its side) gets `ready` with a session id > 0, then exactly N frames in order, each
   with its input's frame_id and timestamp, S*W x S*H, RAW_RGB, S*W * S*H * 3 bytes;
2. a session whose first message is a frame (no config) fails with INVALID_ARGUMENT.

Prints one JSON line on success; exits non-zero with the reason on any mismatch.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile

import grpc

PROTO = "vidflow/serve/v1/serve.proto"


def fail(msg):
    print(f"serve_client: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def generate_stubs(proto_dir, out_dir):
    """Runs grpc_tools.protoc on the repository's .proto; imports and returns (pb2, pb2_grpc)."""
    if not os.path.isfile(os.path.join(proto_dir, PROTO)):
        fail(f"{os.path.join(proto_dir, PROTO)} not found")
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"protoc failed ({r.returncode}): {r.stderr.strip()}")
    # The generated modules import each other by their package path (vidflow.serve.v1...).
    sys.path.insert(0, out_dir)
    pb2 = importlib.import_module("vidflow.serve.v1.serve_pb2")
    pb2_grpc = importlib.import_module("vidflow.serve.v1.serve_pb2_grpc")
    return pb2, pb2_grpc


def pixels(index, w, h):
    """W x H packed RGB whose content differs per frame."""
    return bytes((index * 37 + i * 11 + (i // (w * 3)) * 5) % 256 for i in range(w * h * 3))


def check_session(grpc, pb2, stub, n, w, h, scale):
    first_id = 100
    sent = []
    for k in range(n):
        sent.append(
            pb2.Frame(
                frame_id=first_id + k,
                timestamp=1.5 + k * 0.04,
                encoding=pb2.ENCODING_RAW_RGB,
                width=w,
                height=h,
                data=pixels(k, w, h),
            )
        )
    if len({f.data for f in sent}) != n:
        fail("the test's input frames are not distinct")

    def requests():
        yield pb2.StreamRequest(
            config=pb2.SessionConfig(
                output_encoding=pb2.ENCODING_RAW_RGB, fps=25.0, name="python-client"
            )
        )
        for f in sent:
            yield pb2.StreamRequest(frame=f)
        # The generator ending closes the client's side of the stream.

    try:
        replies = list(stub.Stream(requests(), timeout=60))
    except grpc.RpcError as e:
        fail(f"the session failed: {e.code()} {e.details()}")

    if not replies:
        fail("no reply at all")
    first = replies[0]
    if first.WhichOneof("msg") != "ready":
        fail(f"the first reply is {first.WhichOneof('msg')!r}, not 'ready'")
    session_id = first.ready.session_id
    if session_id <= 0:
        fail(f"ready.session_id is {session_id}, expected > 0")
    frames = []
    for i, r in enumerate(replies[1:], 1):
        kind = r.WhichOneof("msg")
        if kind != "frame":
            fail(f"reply {i} is {kind!r}, expected 'frame'")
        frames.append(r.frame)
    if len(frames) != n:
        fail(f"{len(frames)} frames back, expected {n}")
    ow, oh = w * scale, h * scale
    for src, out in zip(sent, frames):
        if out.frame_id != src.frame_id:
            fail(f"frame_id {out.frame_id} where {src.frame_id} was expected (order or id lost)")
        if abs(out.timestamp - src.timestamp) > 1e-9:
            fail(f"frame {src.frame_id}: timestamp {out.timestamp}, expected {src.timestamp}")
        if (out.width, out.height) != (ow, oh):
            fail(f"frame {src.frame_id}: {out.width}x{out.height}, expected {ow}x{oh}")
        if out.encoding not in (pb2.ENCODING_RAW_RGB, pb2.ENCODING_UNSPECIFIED):
            fail(f"frame {src.frame_id}: encoding {out.encoding}, expected RAW_RGB")
        if len(out.data) != ow * oh * 3:
            fail(f"frame {src.frame_id}: {len(out.data)} bytes, expected {ow * oh * 3}")
    if len({f.data for f in frames}) != n:
        fail("distinct input frames came back with identical pixels")
    return {
        "session_id": session_id,
        "graph": first.ready.graph,
        "frame_ids": [f.frame_id for f in frames],
        "size": [ow, oh],
    }


def check_frame_first_is_refused(grpc, pb2, stub, w, h):
    def requests():
        yield pb2.StreamRequest(
            frame=pb2.Frame(
                frame_id=7,
                encoding=pb2.ENCODING_RAW_RGB,
                width=w,
                height=h,
                data=pixels(0, w, h),
            )
        )

    try:
        got = list(stub.Stream(requests(), timeout=30))
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
            fail(f"a frame before the config: {e.code()} ({e.details()}), expected INVALID_ARGUMENT")
        return {"code": e.code().name, "details": e.details()}
    fail(f"a frame before the config was accepted ({len(got)} replies), expected INVALID_ARGUMENT")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("addr", help="host:port of `vidflow serve`")
    ap.add_argument("proto_dir", help="the repository's proto/ folder")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--height", type=int, default=24)
    ap.add_argument("--scale", type=int, default=2, help="the graph's upscale factor")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="vidflow-serve-stubs-") as out_dir:
        pb2, pb2_grpc = generate_stubs(os.path.abspath(args.proto_dir), out_dir)
        with grpc.insecure_channel(args.addr) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=30)
            except grpc.FutureTimeoutError:
                fail(f"no gRPC server at {args.addr}")
            stub = pb2_grpc.ServeStub(channel)
            session = check_session(
                grpc, pb2, stub, args.frames, args.width, args.height, args.scale
            )
            refused = check_frame_first_is_refused(grpc, pb2, stub, args.width, args.height)
    print(
        json.dumps(
            {"ok": True, "grpcio": grpc.__version__, "session": session, "frame_first": refused},
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
