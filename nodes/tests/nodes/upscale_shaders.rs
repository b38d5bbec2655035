//! Every WGSL file in `shaders/` parses and validates with naga (the shader compiler wgpu
//! uses), so a broken shader fails here rather than at run time on a GPU.

use std::path::Path;

fn shaders() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shader_validates_with_naga() {
    let files = shaders();
    assert!(
        files.len() >= 4,
        "expected the shaders of the upscale path, found {files:?}"
    );
    let mut failures = vec![];
    for path in &files {
        let src = std::fs::read_to_string(path).unwrap();
        let module = match naga::front::wgsl::parse_str(&src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(e.emit_to_string_with_path(&src, &path.display().to_string()));
                continue;
            }
        };
        let mut v = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        );
        if let Err(e) = v.validate(&module) {
            failures.push(e.emit_to_string_with_path(&src, &path.display().to_string()));
            continue;
        }
        assert!(
            module.entry_points.iter().any(|e| e.name == "main"),
            "{}: no `main` entry point",
            path.display()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_broken_shader_is_reported_with_its_line() {
    let src = "@compute @workgroup_size(1)\nfn main() {\n    let x: f32 = 1u;\n}\n";
    let module = naga::front::wgsl::parse_str(src);
    let msg = match module {
        Err(e) => e.emit_to_string_with_path(src, "bad.wgsl"),
        Ok(m) => {
            let mut v = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::default(),
            );
            v.validate(&m)
                .expect_err("a type error")
                .emit_to_string_with_path(src, "bad.wgsl")
        }
    };
    assert!(msg.contains("bad.wgsl:3:"), "{msg}");
}

/// The shaders run on wgpu (lavapipe where there is no GPU) and compute what the CPU path
/// computes.
#[cfg(feature = "neural")]
mod on_wgpu {
    use burn::backend::wgpu::wgpu;
    use std::borrow::Cow;
    use wgpu::util::DeviceExt;

    use vidflow_nodes::gpu::Gpu;

    fn gpu() -> Gpu {
        Gpu::open().unwrap_or_else(|e| {
            panic!("{e} (apt-get install mesa-vulkan-drivers libvulkan1 gives a software adapter)")
        })
    }

    fn shader(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shaders")
            .join(name);
        std::fs::read_to_string(p).unwrap()
    }

    /// Runs `main` of a shader over `invocations` threads (workgroups of 256) with binding 0 a
    /// uniform, the middle ones read-only storage and the last a read-write output of
    /// `out_bytes`; returns the output.
    fn run(
        g: &Gpu,
        src: &str,
        uniform: &[u8],
        inputs: &[&[u8]],
        out_bytes: usize,
        invocations: u32,
    ) -> Vec<u8> {
        let d = &g.device;
        let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(src)),
        });
        let pipeline = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let u = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: uniform,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let ins: Vec<wgpu::Buffer> = inputs
            .iter()
            .map(|bytes| {
                d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: None,
                    contents: bytes,
                    usage: wgpu::BufferUsages::STORAGE,
                })
            })
            .collect();
        let size = (out_bytes as u64).div_ceil(4) * 4;
        let out = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: u.as_entire_binding(),
        }];
        for (i, b) in ins.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: 1 + i as u32,
                resource: b.as_entire_binding(),
            });
        }
        entries.push(wgpu::BindGroupEntry {
            binding: 1 + ins.len() as u32,
            resource: out.as_entire_binding(),
        });
        let group = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut enc = d.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(invocations.div_ceil(256), 1, 1);
        }
        enc.copy_buffer_to_buffer(&out, 0, &staging, 0, size);
        g.queue.submit([enc.finish()]);
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
        d.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
        let bytes = staging
            .slice(..)
            .get_mapped_range()
            .expect("mapped")
            .to_vec();
        bytes[..out_bytes].to_vec()
    }

    fn u32s(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn to_f32(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn pixel_shaders_match_the_cpu_path() {
        let g = gpu();
        let (w, h, n) = (37u32, 21u32, 2u32);
        let plane = (w * h) as usize;
        let rgb: Vec<u8> = (0..n as u64)
            .flat_map(|i| vidflow_nodes::kinds::testsrc::pattern(w, h, i * 7, 25.0))
            .collect();
        let mut padded = rgb.clone();
        padded.resize(rgb.len().div_ceil(4) * 4, 0);

        // u8 RGB → f32 planar
        let dims = u32s(&[w, h, n, 0]);
        let planar = to_f32(&run(
            &g,
            &shader("rgb_to_planar.wgsl"),
            &dims,
            &[&padded],
            n as usize * 3 * plane * 4,
            n * w * h,
        ));
        for f in 0..n as usize {
            for p in 0..plane {
                for c in 0..3 {
                    let cpu = rgb[(f * plane + p) * 3 + c] as f32 / 255.0;
                    assert_eq!(planar[f * 3 * plane + c * plane + p], cpu);
                }
            }
        }

        // f32 planar → u8 RGB (round trip is exact)
        let back = run(
            &g,
            &shader("planar_to_rgb.wgsl"),
            &dims,
            &[&f32s(&planar)],
            rgb.len(),
            (rgb.len() as u32).div_ceil(4),
        );
        assert_eq!(back, rgb);

        // Lanczos-4 resize, both passes, against the CPU resize of the first frame.
        let (nw, nh) = (53u32, 30u32);
        let first = &planar[..3 * plane];
        let horiz = to_f32(&run(
            &g,
            &shader("resize_lanczos4.wgsl"),
            &u32s(&[w, h, nw, h, 3, 0, 0, 0]),
            &[&f32s(first)],
            (3 * nw * h * 4) as usize,
            3 * nw * h,
        ));
        let both = to_f32(&run(
            &g,
            &shader("resize_lanczos4.wgsl"),
            &u32s(&[nw, h, nw, nh, 3, 1, 0, 0]),
            &[&f32s(&horiz)],
            (3 * nw * nh * 4) as usize,
            3 * nw * nh,
        ));
        let cpu = vidflow_nodes::kinds::upscale::resize_lanczos4(
            &rgb[..plane * 3],
            w as usize,
            h as usize,
            nw as usize,
            nh as usize,
        );
        let np = (nw * nh) as usize;
        let mut worst = 0u8;
        for p in 0..np {
            for c in 0..3 {
                let gpu = (both[c * np + p].clamp(0.0, 1.0) * 255.0).round() as u8;
                worst = worst.max(gpu.abs_diff(cpu[p * 3 + c]));
            }
        }
        assert!(worst <= 1, "GPU and CPU Lanczos differ by {worst}/255");

        // Blend
        let a: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..100).map(|i| 1000.0 - i as f32).collect();
        let t: Vec<f32> = (0..100).map(|i| i as f32 / 99.0).collect();
        let out = to_f32(&run(
            &g,
            &shader("blend.wgsl"),
            &u32s(&[100, 0, 0, 0]),
            &[&f32s(&a), &f32s(&b), &f32s(&t)],
            400,
            100,
        ));
        for i in 0..100 {
            let cpu = a[i] * (1.0 - t[i]) + b[i] * t[i];
            assert!((out[i] - cpu).abs() < 1e-3, "{i}: {} vs {cpu}", out[i]);
        }
    }
}
