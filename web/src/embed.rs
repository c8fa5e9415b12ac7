//! The embedded view (`embed.html`) and its postMessage API.
//!
//! The host page sends `{type: "switchscope:run", prompt, settings?}`; the embed posts
//! `switchscope:ready` once loaded, then `switchscope:token` (`{index, text}`),
//! `switchscope:routing` (`{index, routing}`: the encoder's layers first with index -1, then
//! each step's decoder layers), `switchscope:done` (`{output}`), `switchscope:error`
//! (`{message}`) and `switchscope:resize` (`{height}`). Messages are accepted only from the
//! origins listed in the `origins=` URL parameter (comma-separated; none by default) and posted
//! only to those origins, never to `*`.

use leptos::prelude::*;
use serde::Deserialize;
use wasm_bindgen::prelude::*;

use crate::ctx::Ctx;
use crate::protocol::Settings;
use crate::spans;
use crate::state::Status;
use crate::url::url_parameter;

/// Whether the page is the embedded view.
pub fn is_embed() -> bool {
    web_sys::window()
        .and_then(|w| w.location().pathname().ok())
        .is_some_and(|p| p.ends_with("embed.html"))
}

/// The origins allowed to drive the embed (`origins=`), normalised (no trailing `/`).
pub fn allowed_origins() -> Vec<String> {
    crate::page::origins_from(url_parameter("origins").as_deref())
}

#[derive(Debug, Deserialize)]
struct RunMessage {
    #[serde(rename = "type")]
    kind: String,
    prompt: Option<String>,
    settings: Option<Settings>,
}

/// Posts `message` to the parent window, once per allowed origin (the browser delivers it only
/// where the parent's origin matches).
fn post(origins: &[String], message: &serde_json::Value) {
    let Some(parent) = web_sys::window().and_then(|w| w.parent().ok().flatten()) else {
        return;
    };
    let Ok(value) = serde_wasm(message) else {
        return;
    };
    for origin in origins {
        let _ = parent.post_message(&value, origin);
    }
}

/// A JSON value as a plain JavaScript object.
fn serde_wasm(value: &serde_json::Value) -> Result<JsValue, JsValue> {
    js_sys::JSON::parse(&value.to_string())
}

/// Wires the postMessage API to the app (call once, in embed mode).
pub fn start(ctx: Ctx) {
    let origins = allowed_origins();
    let state = ctx.state;
    {
        let origins = origins.clone();
        let on_message =
            Closure::<dyn Fn(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
                if !origins.iter().any(|o| *o == event.origin()) {
                    return;
                }
                let Ok(text) = js_sys::JSON::stringify(&event.data()) else {
                    return;
                };
                let Ok(message) = serde_json::from_str::<RunMessage>(&String::from(text)) else {
                    return;
                };
                if message.kind != "switchscope:run" {
                    return;
                }
                if let Some(prompt) = message.prompt {
                    state.prompt.set(prompt);
                }
                if let Some(settings) = message.settings {
                    state.settings.set(settings);
                }
                ctx.run();
            });
        if let Some(window) = web_sys::window() {
            let _ = window
                .add_event_listener_with_callback("message", on_message.as_ref().unchecked_ref());
        }
        on_message.forget();
    }

    // ready: once the model is loaded.
    let sent_ready = StoredValue::new(false);
    let posted_tokens = StoredValue::new(0usize);
    let origins = StoredValue::new(origins);
    Effect::new(move |_| {
        let status = state.status.get();
        origins.with_value(|origins| match status {
            Status::Idle if !sent_ready.get_value() => {
                sent_ready.set_value(true);
                post(origins, &serde_json::json!({ "type": "switchscope:ready" }));
            }
            Status::Generating => posted_tokens.set_value(0),
            Status::Done => {
                let (text, filled) = state.trace.with_untracked(|t| {
                    ctx.text.with_value(|x| match x {
                        Some(x) => (
                            x.decode(&t.output_ids),
                            x.fill_in(&t.prompt, &t.input_ids, &t.output_ids)
                                .map(|pieces| spans::fill_in_text(&pieces)),
                        ),
                        None => (String::new(), None),
                    })
                });
                post(
                    origins,
                    &serde_json::json!({ "type": "switchscope:done", "output": text, "filled": filled }),
                );
            }
            Status::Error => {
                let message = state.error.get_untracked().unwrap_or_default();
                post(
                    origins,
                    &serde_json::json!({ "type": "switchscope:error", "message": message }),
                );
            }
            _ => {}
        });
    });
    // token and routing: as they stream.
    Effect::new(move |_| {
        state.trace.with(|t| {
            origins.with_value(|origins| {
                let from = posted_tokens.get_value();
                if from == 0 && !t.encoder.is_empty() && t.output_ids.is_empty() {
                    post(origins, &serde_json::json!({
                        "type": "switchscope:routing", "index": -1, "routing": t.encoder,
                    }));
                }
                for index in from..t.output_ids.len() {
                    let text = ctx.text.with_value(|x| {
                        x.as_ref().map(|x| x.decode(&t.output_ids[index..=index])).unwrap_or_default()
                    });
                    post(origins, &serde_json::json!({ "type": "switchscope:token", "index": index, "text": text }));
                    let step: Vec<serde_json::Value> = t
                        .decoder
                        .iter()
                        .map(|layer| serde_json::json!({
                            "stack": layer.stack, "block": layer.block,
                            "expert": layer.expert.get(index), "chosen": layer.chosen.get(index),
                            "weight": layer.weight.get(index), "probs": layer.probs.get(index),
                        }))
                        .collect();
                    post(origins, &serde_json::json!({ "type": "switchscope:routing", "index": index, "routing": step }));
                }
                posted_tokens.set_value(t.output_ids.len());
            });
        });
    });
    // resize: whenever the document's height changes.
    let observer_origins = origins.get_value();
    let last = std::rc::Rc::new(std::cell::Cell::new(0i32));
    let on_resize = Closure::<dyn Fn()>::new(move || {
        let Some(body) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.document_element())
        else {
            return;
        };
        let height = body.scroll_height();
        if height != last.replace(height) {
            post(
                &observer_origins,
                &serde_json::json!({ "type": "switchscope:resize", "height": height }),
            );
        }
    });
    // Through Reflect: a typed binding would add a web-sys feature to every build, the worker's too.
    let observe = || -> Result<(), JsValue> {
        let constructor: js_sys::Function =
            js_sys::Reflect::get(&js_sys::global(), &"ResizeObserver".into())?.dyn_into()?;
        let observer =
            js_sys::Reflect::construct(&constructor, &js_sys::Array::of1(on_resize.as_ref()))?;
        let body = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.body())
            .ok_or("no body")?;
        let observe: js_sys::Function =
            js_sys::Reflect::get(&observer, &"observe".into())?.dyn_into()?;
        observe.call1(&observer, &body)?;
        Ok(())
    };
    let _ = observe();
    on_resize.forget();
}
