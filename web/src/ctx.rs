//! The app's context: its state, the worker, the tokenizer, and the actions that talk to the
//! worker (load, run, stop, what-if), shared with every component through Leptos' context.

use leptos::prelude::*;
use leptos::task::spawn_local;
use switchscope_wire::MAX_INPUT_TOKENS;

use crate::WebError;
use crate::client::WorkerClient;
use crate::protocol::{BackendPreference, Request, Response};
use crate::state::{AppState, Status};
use crate::text::Text;
use crate::url::{all_resident_from_url, url_parameter};

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
    pub fn fail(&self, message: impl Into<String>) {
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
                cache_policy: crate::url::url_parameter("cache").filter(|p| !p.is_empty()),
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
                    // resident=all: every expert on the device before the first run (the shard
                    // panel shows them arrive)
                    if all_resident_from_url().unwrap_or(false) {
                        match client.request(&Request::MakeResident).await {
                            Ok(Response::Resident { .. }) => {}
                            Ok(other) => {
                                return self
                                    .fail(format!("unexpected answer to resident=all: {other:?}"));
                            }
                            Err(e) => return self.fail(e.to_string()),
                        }
                    }
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
            Some(t) => t.encode(&prompt, MAX_INPUT_TOKENS),
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
            format!("The prompt has {n} tokens; only the first {MAX_INPUT_TOKENS} are used.")
        }));
        let pieces = self.text.with_value(|t| {
            t.as_ref()
                .map(|t| encoded.ids.iter().map(|&id| t.piece(id)).collect())
                .unwrap_or_default()
        });
        let run = state.trace.with_untracked(|t| t.run) + 1;
        state.trace.set(crate::state::Trace {
            run,
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
