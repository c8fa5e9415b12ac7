//! The compute worker: receives [`Request`]s, computes, answers with [`Response`]s.
//!
//! Runs in a dedicated Web Worker so the page never waits on the GPU or the CPU backend.
//! WebGPU is available in dedicated workers, and burn's WebGPU device is created here, once.

pub mod http;
mod session;

use std::cell::Cell;

use switchscope_core::{BackendKind, backend, probe};
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::gpu;
use crate::protocol::{Backend, BackendPreference, Envelope, ProbeReport, Request, Response};

thread_local! {
    /// Set once WebGPU failed to initialise in this worker, so later requests do not retry.
    static WEBGPU_BROKEN: Cell<bool> = const { Cell::new(false) };
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Sends `response` to the page (streamed: it answers no request by itself).
pub fn post(response: &Response) {
    reply(None, response);
}

/// Sends `response` to the page as the final answer to request `id`.
fn reply(id: Option<u64>, response: &Response) {
    let envelope = Envelope { id, body: response };
    let json = serde_json::to_string(&envelope).unwrap_or_else(|e| {
        let id = id.map_or(String::new(), |id| format!(r#""id":{id},"#));
        format!(r#"{{{id}"body":{{"type":"error","message":"could not encode a reply: {e}"}}}}"#)
    });
    if let Err(e) = scope().post_message(&JsValue::from_str(&json)) {
        web_sys::console::error_1(&e);
    }
}

/// Installs the message handler and tells the page that the worker is ready.
pub fn start() {
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(|event: MessageEvent| {
        let Some(text) = event.data().as_string() else {
            post(&Response::Error {
                message: "the worker expects JSON text messages".into(),
            });
            return;
        };
        match serde_json::from_str::<Envelope<Request>>(&text) {
            Ok(Envelope { id, body }) => wasm_bindgen_futures::spawn_local(async move {
                if let Some(response) = handle(body).await {
                    reply(id, &response);
                }
            }),
            Err(e) => post(&Response::Error {
                message: format!("unreadable request: {e}"),
            }),
        }
    });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    on_message.forget();
    post(&Response::Ready);
}

async fn handle(request: Request) -> Option<Response> {
    let result = match request {
        Request::Probe { backend } => run_probe(backend).await.map(Response::Probe),
        Request::Load {
            url,
            backend,
            budget_bytes,
            prefetch,
        } => session::load(url, backend, budget_bytes, prefetch)
            .await
            .map(Response::Loaded),
        Request::Generate {
            input_ids,
            settings,
            stop_at,
        } => session::generate(input_ids, settings, stop_at)
            .await
            .map(Response::Done),
        Request::Route {
            input_ids,
            output_ids,
            capacity_factor,
        } => session::route(input_ids, output_ids, capacity_factor)
            .await
            .map(|routing| Response::Routed { routing }),
        Request::MakeOffline => session::make_offline().await,
        Request::RemoveOffline => session::remove_offline().await,
        Request::Stop => {
            session::stop();
            return None;
        }
    };
    Some(result.unwrap_or_else(|message| Response::Error { message }))
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
        Ok(adapter) => Ok((BackendKind::Webgpu, Some(adapter), None)),
        Err(reason) if preference == BackendPreference::Auto => {
            Ok((BackendKind::Cpu, None, Some(reason)))
        }
        Err(reason) => Err(format!(
            "WebGPU was requested (backend=webgpu) but {reason}"
        )),
    }
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

async fn run_probe(preference: BackendPreference) -> Result<ProbeReport, String> {
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
