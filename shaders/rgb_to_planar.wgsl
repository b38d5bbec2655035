// Packed RGB24 frames (bytes, read as little-endian u32 words) → f32 planar NCHW in [0, 1].
// One invocation per output pixel of the batch: dispatch ceil(n·h·w / 256) workgroups.
// CPU path: `Upscaler::upscale_frames` (nodes/src/neural/upscale.rs) computes the same.

struct Dims {
    width: u32,
    height: u32,
    frames: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rgb: array<u32>;
@group(0) @binding(2) var<storage, read_write> planar: array<f32>;

fn byte_at(i: u32) -> u32 {
    return (rgb[i / 4u] >> ((i % 4u) * 8u)) & 0xffu;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let plane = dims.width * dims.height;
    let p = gid.x;
    if (p >= plane * dims.frames) {
        return;
    }
    let frame = p / plane;
    let pix = p % plane;
    let base = p * 3u;
    for (var c = 0u; c < 3u; c = c + 1u) {
        planar[frame * 3u * plane + c * plane + pix] = f32(byte_at(base + c)) / 255.0;
    }
}
