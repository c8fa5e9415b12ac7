//! Messages from the worker to the page: streamed updates and final replies, in [`Envelope`]s.

use wasm_bindgen::prelude::*;
use web_sys::DedicatedWorkerGlobalScope;

use crate::protocol::{Envelope, Response};

pub(super) fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Sends `response` to the page (streamed: it answers no request by itself).
pub fn post(response: &Response) {
    reply(None, response);
}

/// Sends `response` to the page as the final answer to request `id`.
pub(super) fn reply(id: Option<u64>, response: &Response) {
    let envelope = Envelope { id, body: response };
    let json = serde_json::to_string(&envelope).unwrap_or_else(|e| {
        let id = id.map_or(String::new(), |id| format!(r#""id":{id},"#));
        format!(r#"{{{id}"body":{{"type":"error","message":"could not encode a reply: {e}"}}}}"#)
    });
    if let Err(e) = scope().post_message(&JsValue::from_str(&json)) {
        web_sys::console::error_1(&e);
    }
}
