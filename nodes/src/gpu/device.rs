//! The compute context: one device per run, shared by every neural node through
//! [`BuildCtx::shared`](vidflow_engine::BuildCtx).
//!
//! `--device auto|gpu|cpu` becomes a [`DevicePreference`]: the CLI inserts it into the run's
//! [`Shared`] map (or sets the `VIDFLOW_DEVICE` environment variable, which is read when the map
//! has none). Then:
//!
//! - `auto`: a hardware GPU adapter through wgpu (discrete first, then integrated, virtual,
//!   other) if the machine has one, else Burn's CPU backend (flex). Software adapters
//!   (lavapipe, llvmpipe, WARP) are not picked: the CPU backend is faster than a rasteriser
//!   emulating a GPU on the same cores.
//! - `gpu`: a wgpu adapter, the hardware one if there is one, else a software adapter (slow,
//!   but it runs the same GPU code path; useful to test it); an error when wgpu sees none.
//! - `cpu`: Burn's flex backend, multi-threaded with rayon.
//!
//! The choice and the reason are printed once per run on stderr (`compute: …`).
//! [`list_devices`] describes what the machine offers, for `vidflow devices`.

use std::fmt;
use std::str::FromStr;
use vidflow_engine::NodeError;
use vidflow_engine::node::Shared;

/// Which device a run asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DevicePreference {
    #[default]
    Auto,
    Gpu,
    Cpu,
}

/// The environment variable read when the run's [`Shared`] map holds no preference.
pub const DEVICE_ENV: &str = "VIDFLOW_DEVICE";

impl FromStr for DevicePreference {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(DevicePreference::Auto),
            "gpu" | "wgpu" => Ok(DevicePreference::Gpu),
            "cpu" => Ok(DevicePreference::Cpu),
            other => Err(format!(
                "unknown device `{other}`: expected `auto`, `gpu` or `cpu`"
            )),
        }
    }
}

impl fmt::Display for DevicePreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DevicePreference::Auto => "auto",
            DevicePreference::Gpu => "gpu",
            DevicePreference::Cpu => "cpu",
        })
    }
}

/// The run's preference: the one inserted into `shared` by the CLI, else `VIDFLOW_DEVICE`,
/// else `auto`.
pub fn preference(shared: &Shared) -> Result<DevicePreference, NodeError> {
    let p = shared.get_or_try_init::<DevicePreference, NodeError>(|| {
        match std::env::var(DEVICE_ENV) {
            Ok(v) => v
                .parse()
                .map_err(|e| NodeError::input(format!("{DEVICE_ENV}: {e}"))),
            Err(_) => Ok(DevicePreference::Auto),
        }
    })?;
    Ok(*p)
}

/// What the machine offers, one line each, for `vidflow devices`.
#[cfg(not(feature = "neural"))]
pub fn list_devices() -> String {
    "this vidflow was built without the `neural` feature: no compute devices\n".to_string()
}

#[cfg(feature = "neural")]
pub use imp::*;

#[cfg(feature = "neural")]
mod imp {
    use super::DevicePreference;
    use burn::backend::wgpu::wgpu;
    use burn::tensor::{Device, DeviceKind};
    use std::sync::{Arc, Mutex, OnceLock};
    use vidflow_engine::NodeError;
    use vidflow_engine::node::Shared;

    /// One wgpu adapter as the machine reports it.
    #[derive(Clone, Debug)]
    pub struct Adapter {
        pub name: String,
        pub backend: String,
        pub kind: AdapterKind,
        pub driver: String,
        /// Index among the adapters of the same kind on the same graphics API (what
        /// Burn's `DeviceKind::DiscreteGpu(i)` and friends count).
        pub index: usize,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum AdapterKind {
        Discrete,
        Integrated,
        Virtual,
        Other,
        /// A software rasteriser (lavapipe, llvmpipe, WARP).
        Software,
    }

    impl AdapterKind {
        fn describe(self) -> &'static str {
            match self {
                AdapterKind::Discrete => "discrete GPU",
                AdapterKind::Integrated => "integrated GPU",
                AdapterKind::Virtual => "virtual GPU",
                AdapterKind::Other => "GPU",
                AdapterKind::Software => "software adapter",
            }
        }
        fn rank(self) -> usize {
            match self {
                AdapterKind::Discrete => 0,
                AdapterKind::Integrated => 1,
                AdapterKind::Virtual => 2,
                AdapterKind::Other => 3,
                AdapterKind::Software => 4,
            }
        }
    }

    impl Adapter {
        pub fn describe(&self) -> String {
            let driver = if self.driver.is_empty() {
                String::new()
            } else {
                format!(", driver {}", self.driver)
            };
            format!(
                "{} ({} via {}{driver})",
                self.name,
                self.kind.describe(),
                self.backend
            )
        }
        fn burn_kind(&self) -> DeviceKind {
            match self.kind {
                AdapterKind::Discrete => DeviceKind::DiscreteGpu(self.index),
                AdapterKind::Integrated => DeviceKind::IntegratedGpu(self.index),
                AdapterKind::Virtual => DeviceKind::VirtualGpu(self.index),
                AdapterKind::Other => DeviceKind::DefaultDevice,
                AdapterKind::Software => DeviceKind::Cpu,
            }
        }
    }

    /// The wgpu adapters of this machine, enumerated once per process (before Burn creates its
    /// own wgpu instance, so that two Vulkan instances are never created at once). Only the
    /// primary graphics APIs (Vulkan, Metal, DX12), the ones Burn runs on: probing OpenGL adds
    /// nothing Burn would pick and makes EGL print errors on machines without a display.
    pub fn adapters() -> &'static [Adapter] {
        static ADAPTERS: OnceLock<Vec<Adapter>> = OnceLock::new();
        static LOCK: Mutex<()> = Mutex::new(());
        ADAPTERS.get_or_init(|| {
            let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let found = std::panic::catch_unwind(|| {
                let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                    backends: wgpu::Backends::PRIMARY.with_env(),
                    ..wgpu::InstanceDescriptor::new_without_display_handle()
                });
                pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
                    .iter()
                    .map(|a| a.get_info())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
            let mut out: Vec<Adapter> = Vec::new();
            for info in found {
                let kind = match info.device_type {
                    wgpu::DeviceType::DiscreteGpu => AdapterKind::Discrete,
                    wgpu::DeviceType::IntegratedGpu => AdapterKind::Integrated,
                    wgpu::DeviceType::VirtualGpu => AdapterKind::Virtual,
                    wgpu::DeviceType::Cpu => AdapterKind::Software,
                    wgpu::DeviceType::Other => AdapterKind::Other,
                };
                let backend = format!("{:?}", info.backend);
                let index = out
                    .iter()
                    .filter(|a| a.kind == kind && a.backend == backend)
                    .count();
                out.push(Adapter {
                    name: info.name,
                    backend,
                    kind,
                    driver: [info.driver, info.driver_info]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" "),
                    index,
                });
            }
            out
        })
    }

    /// What the machine offers, one line each, for `vidflow devices`.
    pub fn list_devices() -> String {
        let mut s = String::new();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        s.push_str(&format!(
            "cpu     Burn flex backend, {threads} threads (always available)\n"
        ));
        let list = adapters();
        if list.is_empty() {
            s.push_str("gpu     none: wgpu found no adapter (no Vulkan, Metal or DX12 driver)\n");
        }
        for a in list {
            s.push_str(&format!("gpu     {}\n", a.describe()));
        }
        let auto = match best_hardware(list) {
            Some(a) => format!("auto    → {}\n", a.describe()),
            None => "auto    → cpu (no hardware GPU adapter)\n".to_string(),
        };
        s.push_str(&auto);
        s
    }

    fn best_hardware(list: &[Adapter]) -> Option<&Adapter> {
        // Prefer Vulkan (what Burn's automatic graphics API picks on Linux and Windows),
        // then the adapter kind.
        list.iter()
            .filter(|a| a.kind != AdapterKind::Software)
            .min_by_key(|a| (a.kind.rank(), a.backend != "Vulkan"))
    }

    /// Burn's CPU backend allocates a fresh buffer for nearly every tensor operation. glibc
    /// hands freed buffers above its (adaptive) mmap threshold back to the OS, and the next
    /// allocation page-faults zeroed pages in again: 15 % of RIFE's time in `perf`. A fixed
    /// threshold at glibc's maximum (32 MiB) and no trimming keep freed memory in the heap for
    /// the next operation; RIFE measured 1.96 → 2.24 pairs/s (`scripts/bench-rife.sh`).
    /// Process-wide, and only on the CPU device.
    fn keep_freed_memory() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator tuning parameters; it is called before the
        // CPU backend allocates its tensors and is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }

    /// Which backend a [`Compute`] runs on.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Backend {
        /// wgpu on a hardware adapter.
        Gpu,
        /// wgpu on a software adapter (the GPU code path, run by the CPU).
        SoftwareGpu,
        /// Burn's flex CPU backend.
        Cpu,
    }

    /// The run's device.
    #[derive(Clone, Debug)]
    pub struct Compute {
        pub device: Device,
        pub backend: Backend,
        /// What was chosen (e.g. "NVIDIA H100 (discrete GPU via Vulkan)").
        pub name: String,
        /// Why it was chosen.
        pub reason: String,
    }

    impl Compute {
        /// Opens the device a preference asks for.
        pub fn open(pref: DevicePreference) -> Result<Compute, NodeError> {
            let cpu = |reason: String| {
                keep_freed_memory();
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                Compute {
                    device: Device::flex(),
                    backend: Backend::Cpu,
                    name: format!("CPU (Burn flex backend, {threads} threads)"),
                    reason,
                }
            };
            match pref {
                DevicePreference::Cpu => Ok(cpu("--device cpu".into())),
                DevicePreference::Auto => {
                    let list = adapters();
                    match best_hardware(list) {
                        Some(a) => Ok(Compute {
                            device: Device::wgpu(a.burn_kind()),
                            backend: Backend::Gpu,
                            name: a.describe(),
                            reason: "--device auto: a hardware GPU adapter was found".into(),
                        }),
                        None => {
                            let soft: Vec<String> = list.iter().map(Adapter::describe).collect();
                            let why = if soft.is_empty() {
                                "--device auto: wgpu found no GPU adapter".to_string()
                            } else {
                                format!(
                                    "--device auto: no hardware GPU adapter (only {}; use --device gpu to run on it anyway)",
                                    soft.join(", ")
                                )
                            };
                            Ok(cpu(why))
                        }
                    }
                }
                DevicePreference::Gpu => {
                    let list = adapters();
                    if let Some(a) = best_hardware(list) {
                        return Ok(Compute {
                            device: Device::wgpu(a.burn_kind()),
                            backend: Backend::Gpu,
                            name: a.describe(),
                            reason: "--device gpu".into(),
                        });
                    }
                    match list.iter().find(|a| a.kind == AdapterKind::Software) {
                        Some(a) => Ok(Compute {
                            device: Device::wgpu(DeviceKind::Cpu),
                            backend: Backend::SoftwareGpu,
                            name: a.describe(),
                            reason: "--device gpu: no hardware GPU adapter, so the software adapter runs the GPU code path (slow)".into(),
                        }),
                        None => Err(NodeError::input(
                            "--device gpu: wgpu found no GPU adapter on this machine (no Vulkan, Metal or DX12 driver); use --device cpu or auto",
                        )),
                    }
                }
            }
        }

        /// The run's compute context, created on first use and shared by every node.
        pub fn for_run(shared: &Shared) -> Result<Arc<Compute>, NodeError> {
            let pref = super::preference(shared)?;
            shared.get_or_try_init::<Compute, NodeError>(|| {
                let c = Compute::open(pref)?;
                vidflow_engine::progress::say(format!("compute: {} — {}", c.name, c.reason));
                Ok(c)
            })
        }

        pub fn is_gpu(&self) -> bool {
            self.backend != Backend::Cpu
        }
    }
}
