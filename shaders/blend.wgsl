// Linear blend of two f32 buffers of the same size: out = a·(1 − t) + b·t, with t per element
// from `weights` (e.g. overlap cross-fades when stitching, or tile feathering). One invocation
// per element.

struct Dims {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= dims.len) {
        return;
    }
    let t = clamp(weights[i], 0.0, 1.0);
    out[i] = a[i] * (1.0 - t) + b[i] * t;
}
