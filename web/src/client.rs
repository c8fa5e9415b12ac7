//! The page's side of the compute worker: requests as async calls, streamed messages to a
//! listener.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{MessageEvent, Worker};

use crate::WebError;
use crate::error::describe;
use crate::protocol::{BackendPreference, ProbeReport, Request, Response};

/// The worker's entry script (`public/worker-boot.js`: loads Trunk's `worker.js` and its wasm).
pub const WORKER_URL: &str = "./worker-boot.js";

type Listener = Rc<dyn Fn(Response)>;

/// How [`WorkerClient::terminate`] marks the rejections of the requests it cuts short.
const INTERRUPTED: &str = "\u{1}interrupted:";

#[derive(Default)]
struct Inner {
    /// Callers waiting for the final message of their request, oldest first.
    waiting: RefCell<VecDeque<(Function, Function)>>,
    listener: RefCell<Option<Listener>>,
}

/// A running compute worker. Requests are answered in order; streamed messages
/// ([`Response::is_final`] false) go to the listener.
#[derive(Clone)]
pub struct WorkerClient {
    worker: Worker,
    inner: Rc<Inner>,
}

impl std::fmt::Debug for WorkerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerClient").finish_non_exhaustive()
    }
}

impl WorkerClient {
    /// Starts the worker and waits until it reports that it is ready.
    ///
    /// # Errors
    /// [`WebError::WorkerStart`] when the script cannot be started, [`WebError::WorkerCrashed`]
    /// when it fails while loading.
    pub async fn spawn() -> Result<Self, WebError> {
        let worker = Worker::new(WORKER_URL).map_err(|e| WebError::WorkerStart(describe(&e)))?;
        let inner = Rc::new(Inner::default());
        let on_message = {
            let inner = inner.clone();
            Closure::<dyn Fn(MessageEvent)>::new(move |event: MessageEvent| {
                let data = event.data();
                let parsed = data
                    .as_string()
                    .ok_or_else(|| "a message that is not text".to_string())
                    .and_then(|t| serde_json::from_str::<Response>(&t).map_err(|e| e.to_string()));
                match parsed {
                    Ok(response) if !response.is_final() => {
                        let listener = inner.listener.borrow().clone();
                        if let Some(listener) = listener {
                            listener(response);
                        }
                    }
                    _ => {
                        let next = inner.waiting.borrow_mut().pop_front();
                        if let Some((resolve, _)) = next {
                            let _ = resolve.call1(&JsValue::NULL, &data);
                        }
                    }
                }
            })
        };
        let on_error = {
            let inner = inner.clone();
            Closure::<dyn Fn(JsValue)>::new(move |event: JsValue| {
                let message = JsValue::from_str(&describe(&event));
                for (_, reject) in inner.waiting.borrow_mut().drain(..) {
                    let _ = reject.call1(&JsValue::NULL, &message);
                }
            })
        };
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        // Both handlers live as long as the page.
        on_message.forget();
        on_error.forget();
        let client = Self { worker, inner };
        match client.wait().await? {
            Response::Ready => Ok(client),
            other => Err(WebError::Protocol(format!("expected ready, got {other:?}"))),
        }
    }

    /// Sends streamed messages ([`Response::Encoded`], [`Response::Token`],
    /// [`Response::Shard`]) to `listener`.
    pub fn listen(&self, listener: impl Fn(Response) + 'static) {
        *self.inner.listener.borrow_mut() = Some(Rc::new(listener));
    }

    fn wait(&self) -> impl Future<Output = Result<Response, WebError>> + use<> {
        let inner = self.inner.clone();
        let promise = Promise::new(&mut |resolve, reject| {
            inner.waiting.borrow_mut().push_back((resolve, reject));
        });
        async move {
            let data = JsFuture::from(promise).await.map_err(|e| {
                let message = describe(&e);
                match message.strip_prefix(INTERRUPTED) {
                    Some(reason) => WebError::Interrupted(reason.to_owned()),
                    None => WebError::WorkerCrashed(message),
                }
            })?;
            let text = data
                .as_string()
                .ok_or_else(|| WebError::Protocol("a message that is not text".into()))?;
            serde_json::from_str(&text).map_err(|e| WebError::Protocol(e.to_string()))
        }
    }

    /// Stops the worker at once; requests still waiting fail with [`WebError::Interrupted`]
    /// and `reason`.
    pub fn terminate(&self, reason: &str) {
        *self.inner.listener.borrow_mut() = None;
        self.worker.terminate();
        let message = JsValue::from_str(&format!("{INTERRUPTED}{reason}"));
        for (_, reject) in self.inner.waiting.borrow_mut().drain(..) {
            let _ = reject.call1(&JsValue::NULL, &message);
        }
    }

    /// Sends `request` without waiting for anything (for [`Request::Stop`]).
    ///
    /// # Errors
    /// [`WebError::Js`] when the message cannot be posted.
    pub fn send(&self, request: &Request) -> Result<(), WebError> {
        let json = serde_json::to_string(request).map_err(|e| WebError::Protocol(e.to_string()))?;
        self.worker
            .post_message(&JsValue::from_str(&json))
            .map_err(|e| WebError::js(&e))
    }

    /// Sends `request` and waits for its final answer.
    ///
    /// # Errors
    /// Any [`WebError`]; an error reported by the worker is [`WebError::Remote`].
    pub async fn request(&self, request: &Request) -> Result<Response, WebError> {
        let reply = self.wait();
        self.send(request)?;
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
}
