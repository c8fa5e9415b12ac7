//! The installed app: the service worker's registration and its update offer, and the
//! browser's storage estimate.

use js_sys::{Promise, Reflect};
use leptos::task::spawn_local;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::js::{call, get};

pub async fn call_async(
    target: &JsValue,
    method: &str,
    args: &[JsValue],
) -> Result<JsValue, JsValue> {
    let promise: Promise = call(target, method, args)?.dyn_into()?;
    JsFuture::from(promise).await
}

pub fn navigator() -> JsValue {
    get(&js_sys::global(), "navigator")
}

/// `navigator.storage.estimate()` as (usage, quota) in bytes.
pub async fn estimate() -> Option<(f64, f64)> {
    let storage = get(&navigator(), "storage");
    if storage.is_undefined() {
        return None;
    }
    let e = call_async(&storage, "estimate", &[]).await.ok()?;
    Some((get(&e, "usage").as_f64()?, get(&e, "quota").as_f64()?))
}

/// Registers `sw.js`; calls `on_update` when a new version is installed and waiting.
pub fn register_service_worker(on_update: impl Fn(JsValue) + 'static) {
    let container = get(&navigator(), "serviceWorker");
    if container.is_undefined() {
        return;
    }
    let on_update = std::rc::Rc::new(on_update);
    spawn_local(async move {
        let Ok(registration) = call_async(&container, "register", &["sw.js".into()]).await else {
            return;
        };
        let had_controller = !get(&container, "controller").is_null();
        let waiting = get(&registration, "waiting");
        if !waiting.is_null() && !waiting.is_undefined() && had_controller {
            on_update(waiting);
        }
        let reg = registration.clone();
        let found = Closure::<dyn Fn()>::new(move || {
            let installing = get(&reg, "installing");
            let on_update = on_update.clone();
            let worker = installing.clone();
            let changed = Closure::<dyn Fn()>::new(move || {
                let installed = get(&worker, "state").as_string().as_deref() == Some("installed");
                let controlled = !get(&get(&navigator(), "serviceWorker"), "controller").is_null();
                if installed && controlled {
                    on_update(worker.clone());
                }
            });
            let _ = Reflect::set(&installing, &"onstatechange".into(), changed.as_ref());
            changed.forget();
        });
        let _ = Reflect::set(&registration, &"onupdatefound".into(), found.as_ref());
        found.forget();
    });
}

/// Tells the waiting service worker to take over, then reloads once it has.
pub fn apply_update(waiting: &JsValue) {
    let container = get(&navigator(), "serviceWorker");
    let reload = Closure::<dyn Fn()>::new(|| {
        if let Some(w) = web_sys::window() {
            let _ = w.location().reload();
        }
    });
    let _ = Reflect::set(&container, &"oncontrollerchange".into(), reload.as_ref());
    reload.forget();
    let _ = call(waiting, "postMessage", &["skip-waiting".into()]);
}
