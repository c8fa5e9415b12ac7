//! The root component, the page's URL parameters and the actions that talk to the worker.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::WebError;
use crate::client::WorkerClient;
use crate::components::backend_check::BackendCheck;
use crate::components::embed::is_embed;
use crate::components::export::Export;
use crate::components::offline::{OfflinePanel, UpdateBanner};
use crate::components::prompt::PromptPanel;
use crate::components::routing_grid::{RoutingGrid, TokenDetail};
use crate::components::shard_panel::ShardPanel;
use crate::components::stats::{CapacityWhatIf, ExpertLoad, Performance};
use crate::protocol::{BackendPreference, Request, Response, Settings};
use crate::state::{AppState, Status};
use crate::text::Text;

/// The model loaded when the URL names none.
pub const DEFAULT_MODEL: &str = "models/switchscope-mini/";
/// The default model's variants: (label, directory).
pub const VARIANTS: [(&str, &str); 2] = [
    ("int8 experts", DEFAULT_MODEL),
    ("int4 experts", "models/switchscope-mini-int4/"),
];
/// The longest prompt sent to the model, in tokens (longer ones are shortened with a notice).
pub const MAX_PROMPT_TOKENS: usize = 512;
pub use crate::page::{MAX_NEW_TOKENS, PANELS};

/// The value of URL query parameter `name`, if present.
pub fn url_parameter(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search)
        .ok()?
        .get(name)
}

/// The backend asked for with `?backend=auto|webgpu|cpu` (default `auto`).
///
/// # Errors
/// [`WebError::InvalidParameter`] for any other value.
pub fn backend_preference() -> Result<BackendPreference, WebError> {
    url_parameter("backend")
        .map_or(Ok(BackendPreference::Auto), |v| {
            BackendPreference::parse(&v)
        })
        .map_err(WebError::InvalidParameter)
}

/// Generation settings from the URL (`max_new_tokens`, `sampling=greedy|sample`,
/// `temperature`, `top_k`, `top_p`, `seed`, `capacity_factor`, `time_layers=1`, `spans=all`).
///
/// # Errors
/// [`WebError::InvalidParameter`] naming the parameter.
pub fn settings_from_url() -> Result<Settings, WebError> {
    crate::page::settings_from(url_parameter).map_err(WebError::InvalidParameter)
}

/// The expert memory budget from `budget_mb=` (`None`: unlimited).
///
/// # Errors
/// [`WebError::InvalidParameter`] naming the parameter.
pub fn budget_from_url() -> Result<Option<f64>, WebError> {
    crate::page::budget_from(url_parameter).map_err(WebError::InvalidParameter)
}

/// The model directory to load: `?model=` (same origin only) or the default.
///
/// # Errors
/// [`WebError::InvalidParameter`] for a URL on another origin.
pub fn model_url() -> Result<String, WebError> {
    let Some(url) = url_parameter("model").filter(|u| !u.is_empty()) else {
        return Ok(DEFAULT_MODEL.to_owned());
    };
    let location = web_sys::window().map(|w| w.location());
    let origin = location.as_ref().and_then(|l| l.origin().ok());
    let href = location
        .as_ref()
        .and_then(|l| l.href().ok())
        .unwrap_or_default();
    let resolved = web_sys::Url::new_with_base(&url, &href)
        .map_err(|_| WebError::InvalidParameter(format!("model={url} is not a valid URL")))?;
    if Some(resolved.origin()) != origin && !allowed_model_origins().contains(&resolved.origin()) {
        return Err(WebError::InvalidParameter(format!(
            "model={url} is on another origin ({}); only models on this site, or on origins this \
             deployment allows, can be loaded",
            resolved.origin()
        )));
    }
    Ok(resolved.href())
}

/// Other origins this deployment lets `?model=` load from: the space-separated `content` of
/// `<meta name="switchscope-model-origins">` in `index.html` (empty as shipped). A deployment
/// that fills it in must also allow the origins in the page's `connect-src` policy.
pub fn allowed_model_origins() -> Vec<String> {
    web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| {
            d.query_selector(r#"meta[name="switchscope-model-origins"]"#)
                .ok()
                .flatten()
        })
        .and_then(|m| m.get_attribute("content"))
        .map(|c| {
            c.split_whitespace()
                .filter(|o| *o != "*" && *o != "null")
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What the app needs to act: its state, the worker and the tokenizer.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub state: AppState,
    pub client: StoredValue<Option<WorkerClient>, LocalStorage>,
    pub text: StoredValue<Option<Text>>,
    pub backend: StoredValue<BackendPreference>,
    pub url: StoredValue<String>,
}

impl Ctx {
    fn fail(&self, message: impl Into<String>) {
        self.state.error.set(Some(message.into()));
        self.state.status.set(Status::Error);
    }

    /// (Re)loads the model with the current budget and prefetch settings.
    pub fn load(self) {
        let state = self.state;
        state.status.set(Status::Loading);
        state.error.set(None);
        spawn_local(async move {
            let client = match self.client.get_value() {
                Some(client) => client,
                None => match WorkerClient::spawn().await {
                    Ok(client) => {
                        let text = self.text;
                        client.listen(move |response| {
                            if let Response::DeviceLost { reason, message } = &response {
                                return self.device_lost(reason, message);
                            }
                            state.apply(response, |id| {
                                text.with_value(|t| {
                                    t.as_ref().map_or_else(|| format!("#{id}"), |t| t.piece(id))
                                })
                            });
                        });
                        self.client.set_value(Some(client.clone()));
                        client
                    }
                    Err(e) => return self.fail(e.to_string()),
                },
            };
            let request = Request::Load {
                url: self.url.get_value(),
                backend: self.backend.get_value(),
                budget_bytes: state
                    .budget_mb
                    .get_untracked()
                    .map(|mb| (mb * 1_048_576.0) as u64),
                prefetch: state.prefetch.get_untracked(),
            };
            match client.request(&request).await {
                Ok(Response::Loaded(info)) => {
                    let text = match &info.tokenizer_json {
                        Some(json) => match Text::new(json, info.eos_token_id, info.pad_token_id) {
                            Ok(t) => Some(t),
                            Err(e) => return self.fail(e),
                        },
                        None => {
                            return self
                                .fail("the model has no tokenizer.json, so text cannot be typed");
                        }
                    };
                    self.text.set_value(text);
                    state.downloaded.set(info.downloaded_bytes);
                    state.loaded(&info);
                    state.status.set(Status::Idle);
                    if url_parameter("autorun").as_deref() == Some("1") {
                        self.run();
                    }
                }
                Ok(other) => self.fail(format!("unexpected answer to load: {other:?}")),
                Err(e) => self.fail(e.to_string()),
            }
        });
    }

    /// Tokenizes the prompt and generates, streaming into the state.
    pub fn run(self) {
        let state = self.state;
        if matches!(
            state.status.get_untracked(),
            Status::Generating | Status::Loading
        ) {
            return;
        }
        let Some(client) = self.client.get_value() else {
            return self.fail("the model is not loaded yet");
        };
        let prompt = state.prompt.get_untracked();
        let encoded = self.text.with_value(|t| match t {
            Some(t) => t.encode(&prompt, MAX_PROMPT_TOKENS),
            None => Err("the model is not loaded yet".into()),
        });
        let encoded = match encoded {
            Ok(e) => e,
            Err(message) => {
                state.error.set(Some(message));
                state.status.set(Status::Error);
                return;
            }
        };
        state.notice.set(encoded.truncated_from.map(|n| {
            format!("The prompt has {n} tokens; only the first {MAX_PROMPT_TOKENS} are used.")
        }));
        let pieces = self.text.with_value(|t| {
            t.as_ref()
                .map(|t| encoded.ids.iter().map(|&id| t.piece(id)).collect())
                .unwrap_or_default()
        });
        state.trace.set(crate::state::Trace {
            prompt,
            input_ids: encoded.ids.clone(),
            input_pieces: pieces,
            ..Default::default()
        });
        state.what_if.set(None);
        state.summary.set(None);
        state.focus.set(None);
        state.error.set(None);
        state.status.set(Status::Generating);
        let settings = state.settings.get_untracked();
        let stop_at = if settings.stop_at_spans {
            self.text
                .with_value(|t| t.as_ref().and_then(|t| t.end_of_answer(&encoded.ids)))
        } else {
            None
        };
        let request = Request::Generate {
            input_ids: encoded.ids,
            settings,
            stop_at,
        };
        spawn_local(async move {
            match client.request(&request).await {
                Ok(Response::Done(summary)) => {
                    if summary.stopped {
                        let n = summary.output_ids.len();
                        state.notice.set(Some(match &summary.cancelled {
                            Some(what) => format!(
                                "Stopped after {n} tokens, while an expert was downloading ({what})."
                            ),
                            None => format!("Stopped after {n} tokens."),
                        }));
                    }
                    state.download.set(None);
                    state.summary.set(Some(summary));
                    state.status.set(Status::Done);
                }
                Ok(other) => self.fail(format!("unexpected answer to generate: {other:?}")),
                // The worker was replaced (GPU device lost): the reload drives the status.
                Err(WebError::Interrupted(_)) => {}
                Err(e) => self.fail(e.to_string()),
            }
        });
    }

    /// The GPU device was lost: replace the worker, and load the model again on the CPU (its
    /// expert files come from the browser's cache where they were fetched before).
    fn device_lost(self, reason: &str, message: &str) {
        let Some(client) = self.client.get_value() else {
            return;
        };
        // Interrupted: still generating, or the run already failed because of the lost device
        // (its error can arrive before this message).
        let state = self.state;
        let running = match state.status.get_untracked() {
            Status::Generating => true,
            Status::Error => {
                state.summary.with_untracked(Option::is_none)
                    && state.trace.with_untracked(|t| !t.input_ids.is_empty())
            }
            _ => false,
        };
        self.state
            .device_lost
            .set(Some(crate::page::device_lost_message(
                reason, message, running,
            )));
        self.client.set_value(None);
        client.terminate("the GPU device was lost");
        self.backend.set_value(BackendPreference::Cpu);
        self.state.download.set(None);
        self.load();
    }

    /// Asks the worker to stop after the current token.
    pub fn stop(self) {
        if let Some(client) = self.client.get_value()
            && let Err(e) = client.send(&Request::Stop)
        {
            self.fail(e.to_string());
        }
    }

    /// Recomputes the finished run's routing with capacity factor `factor`.
    pub fn what_if(self, factor: f64) {
        let state = self.state;
        let Some(client) = self.client.get_value() else {
            return;
        };
        let (input_ids, output_ids) = state
            .trace
            .with_untracked(|t| (t.input_ids.clone(), t.output_ids.clone()));
        if input_ids.is_empty() || output_ids.is_empty() {
            return;
        }
        spawn_local(async move {
            let request = Request::Route {
                input_ids,
                output_ids,
                capacity_factor: Some(factor),
            };
            match client.request(&request).await {
                Ok(Response::Routed { routing }) => state.what_if.set(Some((factor, routing))),
                Ok(other) => self.fail(format!("unexpected answer to route: {other:?}")),
                Err(e) => self.fail(e.to_string()),
            }
        });
    }
}

/// The whole page.
#[component]
pub fn App() -> impl IntoView {
    let url_error = backend_preference()
        .and_then(|b| Ok((b, settings_from_url()?, budget_from_url()?, model_url()?)))
        .err();
    let settings = settings_from_url().unwrap_or_default();
    let prompt = url_parameter("prompt").unwrap_or_else(|| {
        "Fellow-Citizens of the Senate and of the House of <extra_id_0>:".into()
    });
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
        Some(e) => ctx.fail(e.to_string()),
        None => ctx.load(),
    }
    let embed = is_embed();
    if embed {
        crate::components::embed::start(ctx);
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
