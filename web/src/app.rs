//! The root component: the page's panels, laid out as the URL asks.

use leptos::prelude::*;

use crate::components::backend_check::BackendCheck;
use crate::components::export::Export;
use crate::components::offline::{OfflinePanel, UpdateBanner};
use crate::components::prompt::PromptPanel;
use crate::components::routing_grid::{RoutingGrid, TokenDetail};
use crate::components::shard_panel::ShardPanel;
use crate::components::stats::{CapacityWhatIf, ExpertLoad, Performance};
use crate::ctx::Ctx;
use crate::embed::is_embed;
use crate::presets::starting_prompt;
use crate::state::AppState;
use crate::url::{
    DEFAULT_MODEL, all_resident_from_url, backend_preference, budget_from_url, model_url,
    settings_from_url, url_parameter,
};

/// The whole page.
#[component]
pub fn App() -> impl IntoView {
    let mut settings = settings_from_url().unwrap_or_default();
    let (prompt, preset_error) = match starting_prompt(url_parameter, &mut settings) {
        Ok(prompt) => (prompt, None),
        Err(e) => (String::new(), Some(e)),
    };
    let url_error = backend_preference()
        .and_then(|b| {
            Ok((
                b,
                settings_from_url()?,
                budget_from_url()?,
                all_resident_from_url()?,
                model_url()?,
            ))
        })
        .err()
        .map(|e| e.to_string())
        .or(preset_error);
    let state = AppState::new(settings, prompt);
    state.budget_mb.set(budget_from_url().ok().flatten());
    state
        .prefetch
        .set(crate::page::prefetch_from(url_parameter));
    let ctx = Ctx {
        state,
        client: StoredValue::new_local(None),
        text: StoredValue::new(None),
        backend: StoredValue::new(backend_preference().unwrap_or_default()),
        url: StoredValue::new(model_url().unwrap_or_else(|_| DEFAULT_MODEL.to_owned())),
    };
    provide_context(ctx);
    match url_error {
        Some(e) => ctx.fail(e),
        None => ctx.load(),
    }
    let embed = is_embed();
    if embed {
        crate::embed::start(ctx);
    }
    apply_theme();
    let panels = panels(embed);
    let show = move |name: &str| panels.iter().any(|p| p == name);
    let diagnostics = RwSignal::new(false);
    view! {
        {(!embed).then(|| view! {
            <header class="top">
                <h1>"Switchscope"</h1>
                <p class="tagline">
                    "A Switch Transformer running in your browser, showing which expert every token \
                     is routed to — and fetching an expert's weights only when a token needs it."
                </p>
            </header>
        })}
        <main class:embed=embed>
            {(!embed).then(|| view! { <UpdateBanner /> })}
            <BackendBanner />
            {show("prompt").then(|| view! { <PromptPanel /> })}
            {show("grid").then(|| view! { <RoutingGrid /> })}
            {show("detail").then(|| view! { <TokenDetail /> })}
            <div class="columns">
                {show("load").then(|| view! { <ExpertLoad /> })}
                {show("whatif").then(|| view! { <CapacityWhatIf /> })}
            </div>
            {show("shards").then(|| view! { <ShardPanel /> })}
            <div class="columns">
                {show("perf").then(|| view! { <Performance /> })}
                {show("export").then(|| view! { <Export /> })}
                {show("offline").then(|| view! { <OfflinePanel /> })}
            </div>
            {(!embed).then(|| view! {
                <details class="panel" on:toggle=move |ev| {
                    let open = event_target::<web_sys::HtmlDetailsElement>(&ev).open();
                    diagnostics.set(open);
                }>
                    <summary>"Diagnostics: does this backend compute what the CPU computes?"</summary>
                    <Show when=move || diagnostics.get()>
                        <BackendCheck preference=backend_preference() />
                    </Show>
                </details>
            })}
        </main>
    }
}

/// The panels to show (`panels=`, see [`crate::page::panels_from`]).
fn panels(embed: bool) -> Vec<String> {
    crate::page::panels_from(url_parameter("panels").as_deref(), embed)
}

/// `theme=light|dark` sets the colour scheme (otherwise the system's).
fn apply_theme() {
    if let Some(theme) = crate::page::theme_from(url_parameter("theme").as_deref())
        && let Some(root) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.document_element())
    {
        let _ = root.set_attribute("data-theme", theme);
    }
}

/// Which backend computes, why, and the model's facts.
#[component]
fn BackendBanner() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = ctx.state;
    view! {
        <section class="banner-row" aria-live="polite">
            <span>
                "Backend: "
                <strong data-testid="backend">
                    {move || state.model.with(|m| m.as_ref().map(|m| m.backend.as_str()).unwrap_or("…"))}
                </strong>
            </span>
            {move || state.device_lost.get().map(|m| view! {
                <p class="banner warning" role="alert" data-testid="device-lost">{m}</p>
            })}
            {move || state.model.with(|m| m.as_ref().and_then(|m| m.fallback_reason.clone())).map(|r| view! {
                <span class="banner" data-testid="backend-reason">" — " {r}</span>
            })}
            {move || state.model.with(|m| m.as_ref().map(|m| {
                let adapter = m.adapter.as_ref().map(|a| format!(" on {} {}", a.vendor, a.architecture)).unwrap_or_default();
                view! {
                    <span class="facts" data-testid="model-facts">
                        {format!(
                            " · {}{} · {} experts × {} sparse layers · d_model {} · {} · model {:.1} MB, loaded in {:.0} ms",
                            m.url, adapter, m.num_experts, m.sparse_layers.len(), m.d_model,
                            m.quantization, m.total_bytes as f64 / 1e6, m.load_ms
                        )}
                    </span>
                }
            }))}
        </section>
    }
}
