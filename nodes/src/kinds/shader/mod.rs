//! `shader`: runs a user's WGSL compute shader on every frame, on the run's wgpu adapter.
//!
//! The shader is checked with naga (the compiler wgpu itself uses) when the graph is checked,
//! so `vidflow check` reports a WGSL error at its line and column, inside the YAML for an
//! inline `source:` and in the `.wgsl` file for `path:`. The interface a shader implements:
//!
//! ```wgsl
//! struct Frame {
//!     width: u32, height: u32,          // the input frame
//!     out_width: u32, out_height: u32,  // the output frame (`width`/`height` params)
//!     index: u32, count: u32,           // frame index; frames seen so far
//!     time: f32, _pad: f32,             // presentation time in seconds
//!     values: array<vec4<f32>, 4>,      // the `values` param, 16 floats, zero-filled
//! }
//! @group(0) @binding(0) var<storage, read> src: array<u32>;        // RGBA8, one u32 per pixel
//! @group(0) @binding(1) var<storage, read_write> dst: array<u32>;  // RGBA8 output
//! @group(0) @binding(2) var<uniform> frame: Frame;                 // optional
//! @compute @workgroup_size(8, 8)
//! fn main(@builtin(global_invocation_id) id: vec3<u32>) { … }
//! ```
//!
//! Pixels are read with `unpack4x8unorm(src[y * frame.width + x])` and written with
//! `pack4x8unorm(…)`; alpha is ignored on the way out. The dispatch covers the output frame
//! with the entry point's own workgroup size. A batch of frames is one submission and one
//! read-back, so small frames do not pay a GPU round trip each.
//!
//! The runtime needs the `neural` feature (wgpu comes with Burn); without a wgpu adapter the
//! node fails at setup with a message saying so.

use vidflow_engine::{BatchConfig, NodeKind, ParamType, PortType, Problem, Temporal, params};
#[cfg(feature = "neural")]
use vidflow_engine::{BuildCtx, NodeError, Runtime};

pub const KIND: &str = "shader";

/// The most floats `values` may hold (the uniform's `array<vec4<f32>, 4>`).
pub const MAX_VALUES: usize = 16;
/// Bytes of the `Frame` uniform: eight 4-byte fields, then 16 floats.
pub const UNIFORM_BYTES: usize = 32 + 4 * MAX_VALUES;

params! {
    /// The params of `shader`.
    pub struct ShaderParams {
        /// the WGSL source, inline (a YAML block scalar `|`)
        source: Option<String> = optional(ParamType::Str),
        /// a .wgsl file (instead of `source`)
        path: Option<String> = optional(ParamType::Path),
        /// the compute entry point
        entry: String = default(ParamType::Str, "main"),
        /// up to 16 floats passed in `frame.values` (e.g. a gain, a threshold)
        values: Vec<f64> = default(ParamType::list(ParamType::float()), serde_json::json!([])),
        /// output width (default: the input's)
        width: Option<u32> = optional(ParamType::int_in(1, 16384)),
        /// output height (default: the input's)
        height: Option<u32> = optional(ParamType::int_in(1, 16384)),
    }
}

pub fn kind() -> NodeKind {
    NodeKind::gated(
        KIND,
        "Runs your WGSL compute shader on every frame on the GPU (wgpu; a software adapter where there is no GPU). The shader reads `src` and writes `dst` (RGBA8 packed in u32, bindings 0 and 1 of group 0) with a `Frame` uniform at binding 2 (sizes, index, time, 16 `values`); `vidflow check` compiles it with naga and reports WGSL errors at their line and column. The example below is a complete shader with the whole interface.",
        "neural",
        crate::gated_factory!("neural", build),
    )
    .input("frames", PortType::FRAMES, "frames to process")
    .output("frames", PortType::FRAMES, "the shader's output frames")
    .params::<ShaderParams>()
    // Per frame: `index` and `time` are the source's; in a job `count` counts from the chunk's
    // first frame.
    .temporal(Temporal::PerItem)
    .batched("frames", Some(BatchConfig { max: 8, wait_ms: 5 }))
    .check(|cx| match cx.params::<ShaderParams>() {
        Some(p) => validate(&p),
        None => vec![],
    })
    .example(
        "- id: invert\n  kind: shader\n  params:\n    values: [1.0]\n    source: |\n      struct Frame { width: u32, height: u32, out_width: u32, out_height: u32,\n                     index: u32, count: u32, time: f32, _pad: f32, values: array<vec4<f32>, 4> }\n      @group(0) @binding(0) var<storage, read> src: array<u32>;\n      @group(0) @binding(1) var<storage, read_write> dst: array<u32>;\n      @group(0) @binding(2) var<uniform> frame: Frame;\n      @compute @workgroup_size(8, 8)\n      fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n        if (id.x >= frame.width || id.y >= frame.height) { return; }\n        let i = id.y * frame.width + id.x;\n        let c = unpack4x8unorm(src[i]);\n        dst[i] = pack4x8unorm(vec4<f32>(mix(c.rgb, 1.0 - c.rgb, frame.values[0].x), 1.0));\n      }\n  inputs: { frames: src.frames }\n",
    )
}

/// The shader source and where it came from, from a node's params.
pub struct ShaderSource {
    pub text: String,
    /// `Some(path)` when read from `path:`, for messages.
    pub file: Option<String>,
}

/// Reads the shader named by `source` or `path`; the problem (param, message) otherwise.
fn source_of(p: &ShaderParams) -> Result<ShaderSource, (String, String, Option<String>)> {
    match (p.source.as_deref(), p.path.as_deref()) {
        (Some(_), Some(_)) => Err((
            "path".into(),
            "give the shader as `source` or as `path`, not both".into(),
            None,
        )),
        (None, None) => Err((
            "source".into(),
            "no shader: set `source` (inline WGSL) or `path` (a .wgsl file)".into(),
            Some("`vidflow nodes shader` shows the interface and an example".into()),
        )),
        (Some(s), None) => Ok(ShaderSource {
            text: s.to_string(),
            file: None,
        }),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => Ok(ShaderSource {
                text,
                file: Some(path.to_string()),
            }),
            Err(e) => Err((
                "path".into(),
                format!("cannot read shader file `{path}`: {e}"),
                Some("give the path of a WGSL file, relative to where vidflow runs".into()),
            )),
        },
    }
}

/// A WGSL problem: message and, when known, its 1-based line and column in the source.
#[derive(Debug)]
pub struct WgslError {
    pub message: String,
    pub at: Option<(u32, u32)>,
}

/// Compiles `src` with naga and checks it implements the interface above; returns the entry
/// point's workgroup size and whether it declares the `Frame` uniform.
pub fn compile(src: &str, entry: &str) -> Result<([u32; 3], bool), WgslError> {
    let loc = |l: Option<naga::SourceLocation>| l.map(|l| (l.line_number, l.line_position));
    let module = naga::front::wgsl::parse_str(src).map_err(|e| WgslError {
        message: format!("WGSL: {}", e.message()),
        at: loc(e.location(src)),
    })?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
    .validate(&module)
    .map_err(|e| {
        // The innermost cause says what is wrong ("expected f32, found u32").
        let mut msg = e.as_inner().to_string();
        let mut cause = std::error::Error::source(e.as_inner());
        while let Some(c) = cause {
            msg = format!("{msg}: {c}");
            cause = c.source();
        }
        let label = e.spans().next().map(|(_, l)| l.clone()).unwrap_or_default();
        WgslError {
            message: if label.is_empty() {
                format!("WGSL: {msg}")
            } else {
                format!("WGSL: {msg} ({label})")
            },
            at: loc(e.location(src)),
        }
    })?;
    let ep = module
        .entry_points
        .iter()
        .find(|e| e.name == entry)
        .ok_or_else(|| WgslError {
            message: format!(
                "WGSL: no entry point `{entry}` (found: {})",
                module
                    .entry_points
                    .iter()
                    .map(|e| format!("`{}`", e.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            at: None,
        })?;
    if ep.stage != naga::ShaderStage::Compute {
        return Err(WgslError {
            message: format!("WGSL: entry point `{entry}` is not a `@compute` function"),
            at: None,
        });
    }
    let mut has_src = false;
    let mut has_dst = false;
    let mut has_uniform = false;
    for (handle, var) in module.global_variables.iter() {
        let Some(b) = &var.binding else { continue };
        let at = loc(Some(module.global_variables.get_span(handle).location(src)));
        let name = var.name.clone().unwrap_or_default();
        let fail = |what: &str| WgslError {
            message: format!(
                "WGSL: `{name}` at @group({}) @binding({}) {what}",
                b.group, b.binding
            ),
            at,
        };
        match (b.group, b.binding, var.space) {
            (0, 0, naga::AddressSpace::Storage { access })
                if !access.contains(naga::StorageAccess::STORE) =>
            {
                has_src = true
            }
            (0, 1, naga::AddressSpace::Storage { access })
                if access.contains(naga::StorageAccess::STORE) =>
            {
                has_dst = true
            }
            (0, 2, naga::AddressSpace::Uniform) => {
                let size = module.types[var.ty].inner.size(module.to_ctx()) as usize;
                if size != UNIFORM_BYTES {
                    return Err(fail(&format!(
                        "is {size} bytes; the Frame uniform is {UNIFORM_BYTES} (see `vidflow nodes shader`)"
                    )));
                }
                has_uniform = true
            }
            (0, 0, _) => return Err(fail("must be `var<storage, read> src: array<u32>`")),
            (0, 1, _) => return Err(fail("must be `var<storage, read_write> dst: array<u32>`")),
            (0, 2, _) => return Err(fail("must be `var<uniform> frame: Frame`")),
            _ => {
                return Err(fail(
                    "is not provided: the node binds only 0 (src), 1 (dst) and 2 (frame) of group 0",
                ));
            }
        }
    }
    if !has_src || !has_dst {
        return Err(WgslError {
            message: format!(
                "WGSL: the shader must declare {}",
                [
                    (!has_src)
                        .then_some("`@group(0) @binding(0) var<storage, read> src: array<u32>`"),
                    (!has_dst).then_some(
                        "`@group(0) @binding(1) var<storage, read_write> dst: array<u32>`"
                    ),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" and ")
            ),
            at: None,
        });
    }
    Ok((ep.workgroup_size, has_uniform))
}

/// Check-time validation: the shader compiles and implements the interface; at most 16 values.
fn validate(p: &ShaderParams) -> Vec<Problem> {
    let mut problems = vec![];
    let n = p.values.len();
    if n > MAX_VALUES {
        problems.push(Problem::param(
            "values",
            format!("{n} values; a shader gets at most {MAX_VALUES}"),
        ));
    }
    let src = match source_of(p) {
        Ok(s) => s,
        Err((param, message, help)) => {
            let mut problem = Problem::param(&param, message);
            problem.help = help;
            problems.push(problem);
            return problems;
        }
    };
    if let Err(e) = compile(&src.text, &p.entry) {
        let help = "`vidflow nodes shader` shows the interface a shader implements";
        problems.push(match &src.file {
            // In a file: name the file and the place; the YAML span is the `path` value.
            Some(file) => Problem::param(
                "path",
                match e.at {
                    Some((l, c)) => format!("{file}:{l}:{c}: {}", e.message),
                    None => format!("{file}: {}", e.message),
                },
            )
            .help(help),
            None => {
                let problem = Problem::param("source", e.message).help(help);
                match e.at {
                    Some((l, c)) => problem.at_position(l, c),
                    None => problem,
                }
            }
        });
    }
    problems
}

#[cfg(feature = "neural")]
fn build(ctx: &BuildCtx<'_>) -> Result<Runtime, NodeError> {
    let p: ShaderParams = ctx.params()?;
    let src = source_of(&p)
        .map_err(|(_, m, _)| NodeError::input(format!("node `{}`: {m}", ctx.node_id)))?;
    let name = src.file.clone().unwrap_or_else(|| "inline shader".into());
    let (workgroup, uses_uniform) = compile(&src.text, &p.entry)
        .map_err(|e| NodeError::input(format!("node `{}`: {name}: {}", ctx.node_id, e.message)))?;
    let values: Vec<f32> = p.values.iter().map(|&v| v as f32).collect();
    imp::build(
        ctx,
        &src.text,
        &name,
        &p.entry,
        (workgroup, uses_uniform),
        values,
        (p.width, p.height),
    )
}

#[cfg(feature = "neural")]
mod imp {
    use super::*;
    use crate::gpu::Gpu;
    use burn::backend::wgpu::wgpu;
    use std::sync::Arc;
    use vidflow_engine::Emitter;
    use vidflow_engine::{Frame, Input, Payload, Process};

    pub fn build(
        ctx: &BuildCtx<'_>,
        src: &str,
        name: &str,
        entry: &str,
        (workgroup, uses_uniform): ([u32; 3], bool),
        values: Vec<f32>,
        size: (Option<u32>, Option<u32>),
    ) -> Result<Runtime, NodeError> {
        let gpu = Gpu::for_run(ctx.shared)
            .map_err(|e| NodeError::input(format!("node `{}`: {e}", ctx.node_id)))?;
        let device = &gpu.device;
        // Compile errors were caught by naga at check time; wgpu reports anything else (a
        // limit of this adapter) through its error scope.
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        // An explicit layout, so a shader that leaves a binding unused still gets a valid
        // bind group (a layout derived from the shader would drop it).
        let buffer = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let mut entries = vec![
            buffer(0, wgpu::BufferBindingType::Storage { read_only: true }),
            buffer(1, wgpu::BufferBindingType::Storage { read_only: false }),
        ];
        if uses_uniform {
            entries.push(buffer(2, wgpu::BufferBindingType::Uniform));
        }
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(name),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(NodeError::input(format!(
                "node `{}`: {name}: the GPU ({}) rejected the shader: {e}",
                ctx.node_id, gpu.name
            )));
        }
        let mut uniform_values = [0f32; MAX_VALUES];
        uniform_values[..values.len()].copy_from_slice(&values);
        Ok(Runtime::Process(Box::new(ShaderNode {
            node: ctx.node_id.to_string(),
            gpu,
            pipeline,
            layout,
            workgroup,
            uses_uniform,
            values: uniform_values,
            size,
            count: 0,
        })))
    }

    struct ShaderNode {
        node: String,
        gpu: Arc<Gpu>,
        pipeline: wgpu::ComputePipeline,
        layout: wgpu::BindGroupLayout,
        workgroup: [u32; 3],
        /// Whether the shader declares the `Frame` uniform (binding 2 exists only then).
        uses_uniform: bool,
        values: [f32; MAX_VALUES],
        size: (Option<u32>, Option<u32>),
        count: u32,
    }

    /// Packed RGB24 → one RGBA8 u32 per pixel (alpha 255), as the shader reads it.
    pub fn rgb_to_rgba(rgb: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(rgb.len() / 3 * 4);
        for px in rgb.chunks_exact(3) {
            out.extend_from_slice(&[px[0], px[1], px[2], 255]);
        }
        out
    }

    /// RGBA8 → packed RGB24 (alpha dropped).
    pub fn rgba_to_rgb(rgba: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
        for px in rgba.chunks_exact(4) {
            out.extend_from_slice(&px[..3]);
        }
        out
    }

    impl ShaderNode {
        fn uniform(&self, f: &Frame, ow: u32, oh: u32) -> Vec<u8> {
            let mut u = Vec::with_capacity(UNIFORM_BYTES);
            for v in [f.width, f.height, ow, oh, f.index as u32, self.count] {
                u.extend_from_slice(&v.to_le_bytes());
            }
            u.extend_from_slice(&(f.pts as f32).to_le_bytes());
            u.extend_from_slice(&0f32.to_le_bytes());
            for v in self.values {
                u.extend_from_slice(&v.to_le_bytes());
            }
            u
        }
    }

    impl Process for ShaderNode {
        fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
            let device = &self.gpu.device;
            let frames: Vec<&Frame> = input
                .items
                .iter()
                .map(|p| p.frame_for(&self.node))
                .collect::<Result<_, _>>()?;
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let mut encoder = device.create_command_encoder(&Default::default());
            let mut jobs = Vec::with_capacity(frames.len());
            for f in &frames {
                let (ow, oh) = (
                    self.size.0.unwrap_or(f.width),
                    self.size.1.unwrap_or(f.height),
                );
                let storage = |label: &str, bytes: u64, usage| {
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(label),
                        size: bytes.max(4),
                        usage,
                        mapped_at_creation: false,
                    })
                };
                let out_bytes = ow as u64 * oh as u64 * 4;
                let src = storage(
                    "src",
                    f.width as u64 * f.height as u64 * 4,
                    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                );
                self.gpu.queue.write_buffer(&src, 0, &rgb_to_rgba(&f.data));
                let dst = storage(
                    "dst",
                    out_bytes,
                    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                );
                let read = storage(
                    "read",
                    out_bytes,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                );
                let uniform = self.uses_uniform.then(|| {
                    let u = storage(
                        "frame",
                        UNIFORM_BYTES as u64,
                        wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    );
                    self.gpu.queue.write_buffer(&u, 0, &self.uniform(f, ow, oh));
                    u
                });
                let mut entries = vec![
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: src.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: dst.as_entire_binding(),
                    },
                ];
                if let Some(u) = &uniform {
                    entries.push(wgpu::BindGroupEntry {
                        binding: 2,
                        resource: u.as_entire_binding(),
                    });
                }
                let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &self.layout,
                    entries: &entries,
                });
                {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    pass.set_pipeline(&self.pipeline);
                    pass.set_bind_group(0, &group, &[]);
                    let [wx, wy, _] = self.workgroup;
                    pass.dispatch_workgroups(ow.div_ceil(wx.max(1)), oh.div_ceil(wy.max(1)), 1);
                }
                encoder.copy_buffer_to_buffer(&dst, 0, &read, 0, out_bytes);
                jobs.push((read, ow, oh));
                self.count += 1;
            }
            self.gpu.queue.submit([encoder.finish()]);
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(NodeError::runtime(format!(
                    "node `{}`: the GPU rejected the dispatch: {e}",
                    self.node
                )));
            }
            // Map every read-back buffer, then wait once for the whole batch.
            let (tx, rx) = std::sync::mpsc::channel();
            for (i, (read, _, _)) in jobs.iter().enumerate() {
                let tx = tx.clone();
                read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                    let _ = tx.send((i, r));
                });
            }
            drop(tx);
            device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| NodeError::runtime(format!("node `{}`: GPU: {e}", self.node)))?;
            for (i, r) in rx.iter() {
                r.map_err(|e| {
                    NodeError::runtime(format!(
                        "node `{}`: reading frame {i} back from the GPU: {e}",
                        self.node
                    ))
                })?;
            }
            for (f, (read, ow, oh)) in frames.iter().zip(jobs) {
                let rgb = {
                    let view = read.slice(..).get_mapped_range().map_err(|e| {
                        NodeError::runtime(format!("node `{}`: GPU read-back: {e:?}", self.node))
                    })?;
                    rgba_to_rgb(&view)
                };
                read.unmap();
                let mut frame = Frame::new(f.index, f.pts, f.rate, ow, oh, rgb);
                frame.meta = f.meta.clone();
                out.emit(0, Payload::Frame(frame))?;
            }
            Ok(())
        }
    }
}
