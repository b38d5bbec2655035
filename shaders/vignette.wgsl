// A `shader` node program (see `vidflow nodes shader`): darkens the frame towards its corners.
// values[0].x: strength (0 = none, 1 = black corners); values[0].y: brightness gain.
// One invocation per output pixel.

struct Frame {
    width: u32,
    height: u32,
    out_width: u32,
    out_height: u32,
    index: u32,
    count: u32,
    time: f32,
    _pad: f32,
    values: array<vec4<f32>, 4>,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> frame: Frame;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x >= frame.width || id.y >= frame.height) {
        return;
    }
    let i = id.y * frame.width + id.x;
    let c = unpack4x8unorm(src[i]).rgb;
    // Distance from the centre, 1.0 at the corners.
    let uv = (vec2<f32>(id.xy) + 0.5) / vec2<f32>(f32(frame.width), f32(frame.height)) - 0.5;
    let d = length(uv) * 1.41421356;
    let strength = frame.values[0].x;
    let gain = frame.values[0].y;
    let v = 1.0 - strength * d * d;
    dst[i] = pack4x8unorm(vec4<f32>(clamp(c * v * gain, vec3<f32>(0.0), vec3<f32>(1.0)), 1.0));
}
