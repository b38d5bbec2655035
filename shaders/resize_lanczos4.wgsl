// Lanczos-4 resize of f32 planar images (8×8 taps, a = 4, weights normalised, borders
// replicated; source position (x + 0.5)·src/dst − 0.5), the filter of Real-ESRGAN's
// `outscale` (OpenCV INTER_LANCZOS4). Separable: run once with `axis = 0u` (horizontal,
// src_w → dst_w) and once with `axis = 1u` (vertical). One invocation per output value.
// CPU path: `resize_lanczos4` in nodes/src/neural/upscale.rs.

struct Dims {
    src_w: u32,
    src_h: u32,
    dst_w: u32,
    dst_h: u32,
    // number of planes (frames × channels)
    planes: u32,
    axis: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

const PI: f32 = 3.14159265358979;

fn lanczos4(d: f32) -> f32 {
    if (abs(d) < 1e-6) {
        return 1.0;
    }
    let a = PI * d;
    return 4.0 * sin(a) * sin(a / 4.0) / (a * a);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= dims.dst_w * dims.dst_h * dims.planes) {
        return;
    }
    let plane = i / (dims.dst_w * dims.dst_h);
    let rest = i % (dims.dst_w * dims.dst_h);
    let y = rest / dims.dst_w;
    let x = rest % dims.dst_w;
    var n_src: u32;
    var n_dst: u32;
    var pos: u32;
    if (dims.axis == 0u) {
        n_src = dims.src_w;
        n_dst = dims.dst_w;
        pos = x;
    } else {
        n_src = dims.src_h;
        n_dst = dims.dst_h;
        pos = y;
    }
    let f = (f32(pos) + 0.5) * f32(n_src) / f32(n_dst) - 0.5;
    let s = floor(f);
    let t = f - s;
    var acc = 0.0;
    var sum = 0.0;
    for (var k = 0; k < 8; k = k + 1) {
        let w = lanczos4(t + 3.0 - f32(k));
        let at = u32(clamp(i32(s) - 3 + k, 0, i32(n_src) - 1));
        var v: f32;
        if (dims.axis == 0u) {
            v = src[plane * dims.src_w * dims.src_h + y * dims.src_w + at];
        } else {
            v = src[plane * dims.src_w * dims.src_h + at * dims.src_w + x];
        }
        acc = acc + w * v;
        sum = sum + w;
    }
    dst[i] = acc / sum;
}
