// f32 planar NCHW → packed RGB24 bytes: clamp to [0, 1], ×255, round half away from zero
// (as Real-ESRGAN's `(x * 255.0).round()`). Each invocation writes one u32 word (4 bytes), so
// no two invocations touch the same word: dispatch ceil(n·h·w·3 / 4 / 256) workgroups.

struct Dims {
    width: u32,
    height: u32,
    frames: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> planar: array<f32>;
@group(0) @binding(2) var<storage, read_write> rgb: array<u32>;

fn value_at(byte: u32) -> u32 {
    let plane = dims.width * dims.height;
    let p = byte / 3u;
    let c = byte % 3u;
    let frame = p / plane;
    let pix = p % plane;
    let v = clamp(planar[frame * 3u * plane + c * plane + pix], 0.0, 1.0);
    return u32(floor(v * 255.0 + 0.5));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let total = dims.width * dims.height * dims.frames * 3u;
    let word = gid.x;
    if (word * 4u >= total) {
        return;
    }
    var packed = 0u;
    for (var k = 0u; k < 4u; k = k + 1u) {
        let b = word * 4u + k;
        if (b < total) {
            packed = packed | (value_at(b) << (k * 8u));
        }
    }
    rgb[word] = packed;
}
