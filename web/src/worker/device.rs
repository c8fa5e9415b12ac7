//! Which backend the worker computes on, its device, and the probe that checks it.

use std::cell::Cell;

use switchscope_core::{BackendKind, backend, probe};

use crate::gpu;
use crate::protocol::{Backend, BackendPreference, ProbeReport};

thread_local! {
    /// Set once WebGPU failed to initialise in this worker, so later requests do not retry.
    static WEBGPU_BROKEN: Cell<bool> = const { Cell::new(false) };
}

/// Chooses the backend for `preference`: the WebGPU adapter's description, or why the CPU.
async fn choose(
    preference: BackendPreference,
) -> Result<
    (
        BackendKind,
        Option<crate::protocol::AdapterInfo>,
        Option<String>,
    ),
    String,
> {
    if preference == BackendPreference::Cpu {
        return Ok((
            BackendKind::Cpu,
            None,
            Some("the CPU backend was requested (backend=cpu)".into()),
        ));
    }
    if WEBGPU_BROKEN.get() && preference == BackendPreference::Auto {
        return Ok((
            BackendKind::Cpu,
            None,
            Some("WebGPU failed earlier in this session".into()),
        ));
    }
    match gpu::find_adapter().await {
        // A software renderer runs WebGPU on the CPU through a graphics driver: our wasm CPU
        // path is faster there (docs/BENCHMARKS.md §2), so `auto` takes it.
        Ok(adapter) if preference == BackendPreference::Auto && adapter.software().is_some() => {
            let reason = software_reason(adapter.software().unwrap_or_default());
            Ok((BackendKind::Cpu, Some(adapter), Some(reason)))
        }
        Ok(adapter) => Ok((BackendKind::Webgpu, Some(adapter), None)),
        Err(reason) if preference == BackendPreference::Auto => {
            Ok((BackendKind::Cpu, None, Some(reason)))
        }
        Err(reason) => Err(format!(
            "WebGPU was requested (backend=webgpu) but {reason}"
        )),
    }
}

/// Why `auto` took the CPU on a software WebGPU adapter.
pub(crate) fn software_reason(renderer: &str) -> String {
    format!(
        "the WebGPU adapter is a software renderer ({renderer}), slower than the CPU path; \
         backend=webgpu uses it anyway"
    )
}

/// The backend and device for `preference`, with the adapter and the reason for a fallback.
pub(crate) struct Chosen {
    pub kind: BackendKind,
    pub device: switchscope_core::tensor::Device,
    pub adapter: Option<crate::protocol::AdapterInfo>,
    pub fallback_reason: Option<String>,
}

impl Chosen {
    pub fn backend(&self) -> Backend {
        if self.kind == BackendKind::Webgpu {
            Backend::Webgpu
        } else {
            Backend::Cpu
        }
    }
}

/// Picks the backend and creates (or reuses) its device; on `auto`, a WebGPU device that
/// cannot be created falls back to the CPU with the reason.
pub(crate) async fn device_for(preference: BackendPreference) -> Result<Chosen, String> {
    let (kind, adapter, fallback_reason) = choose(preference).await?;
    match backend::gpu_device(kind).await {
        Ok(device) => Ok(Chosen {
            kind,
            device,
            adapter,
            fallback_reason,
        }),
        Err(e) if preference == BackendPreference::Auto => {
            WEBGPU_BROKEN.set(true);
            Ok(Chosen {
                kind: BackendKind::Cpu,
                device: backend::cpu_device(),
                adapter,
                fallback_reason: Some(format!("WebGPU could not be initialised: {e}")),
            })
        }
        Err(e) => Err(e.to_string()),
    }
}

pub(super) async fn run_probe(preference: BackendPreference) -> Result<ProbeReport, String> {
    let start = gpu::now_ms();
    let chosen = device_for(preference).await?;
    let (kind, device, adapter, fallback_reason) = (
        chosen.kind,
        chosen.device,
        chosen.adapter,
        chosen.fallback_reason,
    );
    let result = probe::run(&device).await.map_err(|e| e.to_string())?;
    let backend_ms = gpu::now_ms() - start;

    let start = gpu::now_ms();
    let cpu_result = probe::run(&backend::cpu_device())
        .await
        .map_err(|e| e.to_string())?;
    let cpu_ms = gpu::now_ms() - start;

    let max_abs_diff = probe::max_abs_diff(&result, &cpu_result);
    let reference_diff = probe::max_abs_diff(&result, &probe::reference());
    Ok(ProbeReport {
        backend: if kind == BackendKind::Webgpu {
            Backend::Webgpu
        } else {
            Backend::Cpu
        },
        cols: probe::COLS,
        tolerance: probe::TOLERANCE,
        fallback_reason,
        adapter,
        matches: max_abs_diff <= probe::TOLERANCE && reference_diff <= probe::TOLERANCE,
        result,
        cpu_result,
        max_abs_diff,
        reference_diff,
        backend_ms,
        cpu_ms,
    })
}
