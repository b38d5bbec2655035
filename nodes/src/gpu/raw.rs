//! The run's raw wgpu device, for nodes that dispatch their own compute shaders (`shader`).
//!
//! One [`Gpu`] per run, in the run's [`Shared`] map, so every shader node of a run shares one
//! device and queue. It opens the best adapter [`adapters`](super::device::adapters) reports: a
//! hardware GPU when there is one, else a software adapter (lavapipe), so shader graphs run on
//! every machine with a Vulkan, Metal or DX12 driver (the APIs Burn runs on).

use super::device::{AdapterKind, adapters};
use burn::backend::wgpu::wgpu;
use std::sync::Arc;
use vidflow_engine::node::Shared;

/// A wgpu device and its queue.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// The adapter, described ("llvmpipe (software adapter via Vulkan)").
    pub name: String,
}

impl Gpu {
    /// Opens a device on the best adapter.
    pub fn open() -> Result<Gpu, String> {
        // Enumerate through `adapters()` first: it serialises instance creation per process.
        let known = adapters();
        let best = known
            .iter()
            .min_by_key(|a| (a.kind == AdapterKind::Software, a.backend != "Vulkan"))
            .ok_or("wgpu found no adapter on this machine (no Vulkan, Metal or DX12 driver); install one (on Debian: mesa-vulkan-drivers) to run shaders")?;
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::PRIMARY.with_env(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
            .into_iter()
            .find(|a| {
                let info = a.get_info();
                info.name == best.name && format!("{:?}", info.backend) == best.backend
            })
            .ok_or_else(|| format!("the wgpu adapter {} went away", best.describe()))?;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("vidflow"),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| format!("cannot open {}: {e}", best.describe()))?;
        Ok(Gpu {
            device,
            queue,
            name: best.describe(),
        })
    }

    /// The run's device, opened on first use and shared by every node.
    pub fn for_run(shared: &Shared) -> Result<Arc<Gpu>, String> {
        shared.get_or_try_init::<Gpu, String>(|| {
            let g = Gpu::open()?;
            vidflow_engine::progress::say(format!("shaders: {}", g.name));
            Ok(g)
        })
    }
}
