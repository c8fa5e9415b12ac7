//! The compute worker: receives [`Request`]s, computes, answers with [`Response`]s.
//!
//! Runs in a dedicated Web Worker so the page never waits on the GPU or the CPU backend.
//! WebGPU is available in dedicated workers, and burn's WebGPU device is created here, once.

mod checkpoint;
mod device;
pub mod http;
mod reply;
mod session;

use wasm_bindgen::prelude::*;
use web_sys::MessageEvent;

use crate::protocol::{Envelope, Request, Response};
use device::run_probe;
use reply::{post, reply, scope};

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
            cache_policy,
        } => session::load(url, backend, budget_bytes, prefetch, cache_policy)
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
        Request::MakeResident => session::make_resident()
            .await
            .map(|experts| Response::Resident { experts }),
        Request::Stop => {
            session::stop();
            return None;
        }
    };
    Some(result.unwrap_or_else(|message| Response::Error { message }))
}
