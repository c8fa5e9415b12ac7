//! The page's side of the compute worker.

use js_sys::Promise;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{MessageEvent, Worker};

use crate::WebError;
use crate::error::describe;
use crate::protocol::{BackendPreference, ProbeReport, Request, Response};

/// Where Trunk puts the worker's loader (`data-loader-shim` on the worker's `<link>`).
pub const WORKER_URL: &str = "./worker_loader.js";

/// A running compute worker. Requests are answered in order, one at a time.
#[derive(Debug, Clone)]
pub struct WorkerClient {
    worker: Worker,
}

impl WorkerClient {
    /// Starts the worker and waits until it reports that it is ready.
    ///
    /// # Errors
    /// [`WebError::WorkerStart`] when the script cannot be started, [`WebError::WorkerCrashed`]
    /// when it fails while loading.
    pub async fn spawn() -> Result<Self, WebError> {
        let worker = Worker::new(WORKER_URL).map_err(|e| WebError::WorkerStart(describe(&e)))?;
        let client = Self { worker };
        match client.next_response().await? {
            Response::Ready => Ok(client),
            other => Err(WebError::Protocol(format!("expected ready, got {other:?}"))),
        }
    }

    /// Sends `request` and waits for the worker's answer.
    ///
    /// # Errors
    /// Any [`WebError`]; an error reported by the worker is [`WebError::Remote`].
    pub async fn request(&self, request: &Request) -> Result<Response, WebError> {
        let json = serde_json::to_string(request).map_err(|e| WebError::Protocol(e.to_string()))?;
        let reply = self.next_response();
        self.worker
            .post_message(&JsValue::from_str(&json))
            .map_err(|e| WebError::js(&e))?;
        match reply.await? {
            Response::Error { message } => Err(WebError::Remote(message)),
            other => Ok(other),
        }
    }

    /// Runs the backend probe.
    ///
    /// # Errors
    /// As [`Self::request`].
    pub async fn probe(&self, backend: BackendPreference) -> Result<ProbeReport, WebError> {
        match self.request(&Request::Probe { backend }).await? {
            Response::Probe(report) => Ok(report),
            other => Err(WebError::Protocol(format!(
                "expected a probe report, got {other:?}"
            ))),
        }
    }

    /// The next message from the worker (or its failure), decoded.
    fn next_response(&self) -> impl Future<Output = Result<Response, WebError>> + use<> {
        let worker = self.worker.clone();
        let promise = Promise::new(&mut |resolve, reject| {
            let on_message = Closure::once_into_js(move |event: MessageEvent| {
                let _ = resolve.call1(&JsValue::NULL, &event.data());
            });
            let on_error = Closure::once_into_js(move |event: JsValue| {
                let message = describe(&event);
                let _ = reject.call1(&JsValue::NULL, &JsValue::from_str(&message));
            });
            worker.set_onmessage(Some(on_message.unchecked_ref()));
            worker.set_onerror(Some(on_error.unchecked_ref()));
        });
        async move {
            let data = JsFuture::from(promise)
                .await
                .map_err(|e| WebError::WorkerCrashed(describe(&e)))?;
            let text = data
                .as_string()
                .ok_or_else(|| WebError::Protocol("a message that is not text".into()))?;
            serde_json::from_str(&text).map_err(|e| WebError::Protocol(e.to_string()))
        }
    }
}
