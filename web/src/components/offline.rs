//! The installed, offline app: the update offer, and "Make available offline" / "Remove
//! offline copy" for the loaded model, with storage estimates.

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::prelude::*;

use crate::ctx::Ctx;
use crate::js::get;
use crate::protocol::{Request, Response};
use crate::pwa::{apply_update, call_async, estimate, navigator, register_service_worker};
use crate::state::Status;

fn show_estimate(e: Option<(f64, f64)>) -> String {
    e.map_or_else(
        || "unknown".into(),
        |(usage, quota)| format!("{:.1} MB used of {:.0} MB", usage / 1e6, quota / 1e6),
    )
}

#[component]
pub fn UpdateBanner() -> impl IntoView {
    let waiting = RwSignal::new_local(None::<JsValue>);
    register_service_worker(move |w| waiting.set(Some(w)));
    move || {
        waiting.get().map(|w| {
            view! {
                <section class="panel update" role="status" data-testid="update">
                    "A new version of Switchscope is available. "
                    <button class="primary" data-testid="update-reload" on:click=move |_| apply_update(&w)>
                        "Reload"
                    </button>
                </section>
            }
        })
    }
}

#[component]
pub fn OfflinePanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = ctx.state;
    let progress = state.offline_progress;
    let message = RwSignal::new(None::<String>);
    let failed = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let ready = move || {
        state.model.with(Option::is_some)
            && !busy.get()
            && !matches!(state.status.get(), Status::Generating | Status::Loading)
    };
    let run = move |request: Request| {
        let Some(client) = ctx.client.get_value() else {
            return;
        };
        busy.set(true);
        failed.set(None);
        spawn_local(async move {
            let before = estimate().await;
            if request == Request::MakeOffline {
                // Ask that the browser keep it under storage pressure.
                let storage = get(&navigator(), "storage");
                if !storage.is_undefined() {
                    let _ = call_async(&storage, "persist", &[]).await;
                }
            }
            match client.request(&request).await {
                Ok(Response::Offline {
                    stored,
                    files,
                    bytes,
                }) => {
                    let after = estimate().await;
                    message.set(Some(format!(
                        "{} {files} files ({:.1} MB). Storage before: {}; after: {}.",
                        if stored {
                            "Available offline:"
                        } else {
                            "Removed the offline copy:"
                        },
                        bytes as f64 / 1e6,
                        show_estimate(before),
                        show_estimate(after)
                    )));
                    if !stored {
                        progress.set(None);
                    }
                    // Shards now cached: the shard panel shows it.
                    state.shards.with_untracked(|cells| {
                        for c in cells {
                            let s = c.state.get_untracked();
                            if stored && s == crate::state::ShardState::Remote {
                                c.state.set(crate::state::ShardState::Cached);
                            }
                            if !stored && s == crate::state::ShardState::Cached {
                                c.state.set(crate::state::ShardState::Remote);
                            }
                        }
                    });
                }
                Ok(other) => failed.set(Some(format!("unexpected answer: {other:?}"))),
                Err(e) => failed.set(Some(e.to_string())),
            }
            busy.set(false);
        });
    };
    view! {
        <section class="panel" aria-labelledby="offline-title">
            <h2 id="offline-title">"Offline"</h2>
            <p class="hint">
                "Keep this model in the browser so that Switchscope works without a network \
                 (install it from the browser's menu to get an app icon)."
            </p>
            <div class="actions">
                <button data-testid="make-offline" disabled=move || !ready()
                    on:click=move |_| run(Request::MakeOffline)>"Make available offline"</button>
                <button data-testid="remove-offline" disabled=move || !ready()
                    on:click=move |_| run(Request::RemoveOffline)>"Remove offline copy"</button>
                {move || progress.get().map(|(done, files, bytes_done, bytes)| view! {
                    <progress data-testid="offline-progress" max=bytes.max(1) value=bytes_done></progress>
                    <span>{format!("{done} / {files} files, {:.1} / {:.1} MB", bytes_done as f64 / 1e6, bytes as f64 / 1e6)}</span>
                })}
            </div>
            {move || message.get().map(|m| view! { <p data-testid="offline-status">{m}</p> })}
            {move || failed.get().map(|m| view! { <p class="error" role="alert" data-testid="offline-error">{m}</p> })}
        </section>
    }
}
