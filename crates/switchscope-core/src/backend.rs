//! Backend selection: one code path, three places to run it.
//!
//! A burn [`Device`] decides at run time which backend executes a tensor's operations. The GPU
//! device is initialised once per process (a second initialisation of the same adapter is an
//! error in burn's wgpu runtime), then cloned wherever it is needed.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, Tensor};

use crate::CoreError;

/// Where tensors are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The browser's WebGPU (wasm32 only).
    Webgpu,
    /// Native wgpu: Vulkan (lavapipe on machines without a GPU), Metal or DX12.
    Wgpu,
    /// burn's Flex backend on the CPU; always available, also in wasm.
    Cpu,
}

impl BackendKind {
    /// The lowercase name used in URLs, the CLI and the UI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webgpu => "webgpu",
            Self::Wgpu => "wgpu",
            Self::Cpu => "cpu",
        }
    }

    /// Whether this backend runs on a GPU.
    pub fn is_gpu(self) -> bool {
        !matches!(self, Self::Cpu)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "webgpu" => Ok(Self::Webgpu),
            "wgpu" => Ok(Self::Wgpu),
            "cpu" | "flex" => Ok(Self::Cpu),
            _ => Err(CoreError::UnknownBackend(s.to_owned())),
        }
    }
}

/// The CPU device (burn's Flex backend). Cheap to create; no initialisation needed.
pub fn cpu_device() -> Device {
    Device::flex()
}

/// The GPU device for `kind`, initialised on first use and shared afterwards.
///
/// In the browser this must be awaited before any tensor is created on the device; callers
/// should first check that `navigator.gpu` yields an adapter, because creating a WebGPU device
/// where none exists aborts instead of returning an error.
///
/// # Errors
/// [`CoreError::NoAdapter`] when no adapter can be acquired, [`CoreError::NotCompiled`] when
/// this build lacks the backend.
pub async fn gpu_device(kind: BackendKind) -> Result<Device, CoreError> {
    match kind {
        BackendKind::Cpu => Ok(cpu_device()),
        #[cfg(feature = "webgpu")]
        BackendKind::Webgpu => gpu::init(burn::tensor::wgpu::WgpuBackend::WebGpu).await,
        #[cfg(not(feature = "webgpu"))]
        BackendKind::Webgpu => Err(CoreError::NotCompiled("webgpu")),
        #[cfg(all(feature = "wgpu", not(target_family = "wasm")))]
        BackendKind::Wgpu => gpu::init(burn::tensor::wgpu::WgpuBackend::Auto).await,
        #[cfg(not(all(feature = "wgpu", not(target_family = "wasm"))))]
        BackendKind::Wgpu => Err(CoreError::NotCompiled("wgpu")),
    }
}

#[cfg(any(feature = "wgpu", feature = "webgpu"))]
mod gpu {
    use std::sync::Mutex;

    use burn::tensor::Device;
    use burn::tensor::wgpu::WgpuBackend;

    use crate::CoreError;

    /// Devices already initialised, by graphics API. burn refuses a second initialisation of
    /// the same adapter, so the first device is kept and cloned.
    static DEVICES: Mutex<Vec<(WgpuBackend, Device)>> = Mutex::new(Vec::new());

    fn cached(api: WgpuBackend) -> Option<Device> {
        let devices = DEVICES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        devices
            .iter()
            .find(|(a, _)| *a == api)
            .map(|(_, d)| d.clone())
    }

    pub(super) async fn init(api: WgpuBackend) -> Result<Device, CoreError> {
        if let Some(device) = cached(api) {
            return Ok(device);
        }
        observe_launches();
        let device = Device::wgpu_options()
            .graphics_api(api)
            .init_async()
            .await
            .map_err(|e| CoreError::NoAdapter(e.to_string()))?;
        let mut devices = DEVICES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Another task may have finished initialising first: keep the first one.
        if let Some((_, d)) = devices.iter().find(|(a, _)| *a == api) {
            return Ok(d.clone());
        }
        devices.push((api, device.clone()));
        Ok(device)
    }

    /// Counts every kernel launched from now on in the launching thread's open tallies
    /// ([`crate::counters`]). Installed once and kept for the process's life.
    fn observe_launches() {
        use std::sync::{Arc, Once};

        use cubecl_runtime::logging::{LaunchObservation, LaunchObserver};

        struct Count;
        impl LaunchObserver for Count {
            fn launched(&self, kernel: &'static str) {
                crate::counters::dispatch_named(kernel);
            }
        }
        static ONCE: Once = Once::new();
        ONCE.call_once(|| std::mem::forget(LaunchObservation::new(Arc::new(Count))));
    }
}

/// Reads a float tensor back to the host (asynchronously: the only way in a browser); the host
/// waits for it (one host wait in [`crate::counters`]).
///
/// # Errors
/// [`CoreError::Execution`] when the device fails.
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, CoreError> {
    crate::counters::host_wait();
    t.into_data_async()
        .await
        .map_err(|e| CoreError::Execution(e.to_string()))?
        .try_into_vec::<f32>()
        .map_err(|e| CoreError::Execution(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in [BackendKind::Webgpu, BackendKind::Wgpu, BackendKind::Cpu] {
            assert_eq!(kind.as_str().parse::<BackendKind>().unwrap(), kind);
        }
        assert_eq!("FLEX".parse::<BackendKind>().unwrap(), BackendKind::Cpu);
        let err = "cuda".parse::<BackendKind>().unwrap_err();
        assert!(err.to_string().contains("cuda"), "{err}");
    }
}
