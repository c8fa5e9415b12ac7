//! The page's side of the compute worker: requests as async calls, streamed messages to a
//! listener.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{MessageEvent, Worker};

use crate::WebError;
use crate::error::describe;
use crate::protocol::{BackendPreference, Envelope, ProbeReport, Request, Response};

/// The worker's entry script (`public/worker-boot.js`: loads Trunk's `worker.js` and its wasm).
pub const WORKER_URL: &str = "./worker-boot.js";

type Listener = Rc<dyn Fn(Response)>;

/// How [`WorkerClient::terminate`] marks the rejections of the requests it cuts short.
const INTERRUPTED: &str = "\u{1}interrupted:";

/// The id under which [`WorkerClient::spawn`] waits for `ready` (final messages without an id).
const START: u64 = 0;

#[derive(Default)]
struct Inner {
    /// Callers waiting for the final message of their request, by request id.
    waiting: RefCell<HashMap<u64, (Function, Function)>>,
    /// The last request id given out.
    last_id: Cell<u64>,
    listener: RefCell<Option<Listener>>,
}

/// A running compute worker. Each request's final reply goes to its caller, matched by the
/// request's id; streamed messages ([`Response::is_final`] false) go to the listener.
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
        Self::spawn_at(WORKER_URL).await
    }

    /// [`Self::spawn`] with the worker script at `url`.
    ///
    /// # Errors
    /// As [`Self::spawn`].
    pub async fn spawn_at(url: &str) -> Result<Self, WebError> {
        let worker = Worker::new(url).map_err(|e| WebError::WorkerStart(describe(&e)))?;
        let inner = Rc::new(Inner::default());
        let on_message = {
            let inner = inner.clone();
            Closure::<dyn Fn(MessageEvent)>::new(move |event: MessageEvent| {
                let data = event.data();
                let parsed = data
                    .as_string()
                    .ok_or_else(|| "a message that is not text".to_string())
                    .and_then(|t| {
                        serde_json::from_str::<Envelope<Response>>(&t).map_err(|e| e.to_string())
                    });
                match parsed {
                    Ok(Envelope { body, .. }) if !body.is_final() => {
                        let listener = inner.listener.borrow().clone();
                        if let Some(listener) = listener {
                            listener(body);
                        }
                    }
                    Ok(Envelope { id, .. }) => {
                        let caller = inner.waiting.borrow_mut().remove(&id.unwrap_or(START));
                        if let Some((resolve, _)) = caller {
                            let _ = resolve.call1(&JsValue::NULL, &data);
                        }
                    }
                    Err(e) => {
                        let message = JsValue::from_str(&format!("an unreadable reply: {e}"));
                        for (_, (_, reject)) in inner.waiting.borrow_mut().drain() {
                            let _ = reject.call1(&JsValue::NULL, &message);
                        }
                    }
                }
            })
        };
        let on_error = {
            let inner = inner.clone();
            Closure::<dyn Fn(JsValue)>::new(move |event: JsValue| {
                let message = JsValue::from_str(&describe(&event));
                for (_, (_, reject)) in inner.waiting.borrow_mut().drain() {
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
        match client.wait(START).await? {
            Response::Ready => Ok(client),
            other => Err(WebError::Protocol(format!("expected ready, got {other:?}"))),
        }
    }

    /// Sends streamed messages ([`Response::Encoded`], [`Response::Token`],
    /// [`Response::Shard`]) to `listener`.
    pub fn listen(&self, listener: impl Fn(Response) + 'static) {
        *self.inner.listener.borrow_mut() = Some(Rc::new(listener));
    }

    /// The final reply to request `id`, once it arrives.
    fn wait(&self, id: u64) -> impl Future<Output = Result<Response, WebError>> + use<> {
        let inner = self.inner.clone();
        let promise = Promise::new(&mut |resolve, reject| {
            inner.waiting.borrow_mut().insert(id, (resolve, reject));
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
            serde_json::from_str::<Envelope<Response>>(&text)
                .map(|envelope| envelope.body)
                .map_err(|e| WebError::Protocol(e.to_string()))
        }
    }

    /// Stops the worker at once; requests still waiting fail with [`WebError::Interrupted`]
    /// and `reason`.
    pub fn terminate(&self, reason: &str) {
        *self.inner.listener.borrow_mut() = None;
        self.worker.terminate();
        let message = JsValue::from_str(&format!("{INTERRUPTED}{reason}"));
        for (_, (_, reject)) in self.inner.waiting.borrow_mut().drain() {
            let _ = reject.call1(&JsValue::NULL, &message);
        }
    }

    /// Sends `request` without waiting for anything (for [`Request::Stop`]); returns its id.
    ///
    /// # Errors
    /// [`WebError::Js`] when the message cannot be posted.
    pub fn send(&self, request: &Request) -> Result<u64, WebError> {
        let id = self.inner.last_id.get() + 1;
        self.inner.last_id.set(id);
        self.post(id, request)?;
        Ok(id)
    }

    fn post(&self, id: u64, request: &Request) -> Result<(), WebError> {
        let envelope = Envelope {
            id: Some(id),
            body: request,
        };
        let json =
            serde_json::to_string(&envelope).map_err(|e| WebError::Protocol(e.to_string()))?;
        self.worker
            .post_message(&JsValue::from_str(&json))
            .map_err(|e| WebError::js(&e))
    }

    /// Sends `request` and waits for its final answer.
    ///
    /// # Errors
    /// Any [`WebError`]; an error reported by the worker is [`WebError::Remote`].
    pub async fn request(&self, request: &Request) -> Result<Response, WebError> {
        let id = self.inner.last_id.get() + 1;
        self.inner.last_id.set(id);
        let reply = self.wait(id);
        if let Err(e) = self.post(id, request) {
            self.inner.waiting.borrow_mut().remove(&id);
            return Err(e);
        }
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
