//! The page's own logic, in plain Rust without the DOM or Leptos, so that it is tested as it
//! is (`web/tests/browser/page.rs`): the routing trace and how streamed messages fold into it,
//! expert load and the load-balancing loss, the exports (CSV, JSON), the URL's parameters and
//! the permalink that writes them back, and the lost-device banner's text.

use serde::Serialize;

use crate::protocol::{LayerRouting, Response, Sampling, Settings, ShardEventKind, Stack};

/// The most tokens one run may generate.
pub const MAX_NEW_TOKENS: usize = 256;

/// Every panel, by the name `panels=` uses.
pub const PANELS: [&str; 9] = [
    "prompt", "grid", "detail", "load", "whatif", "shards", "perf", "export", "offline",
];

/// The panels the embed shows when `panels=` names none.
pub const EMBED_PANELS: [&str; 3] = ["prompt", "grid", "detail"];

/// URL parameters a permalink keeps as the current URL has them: they choose what is loaded
/// and how the page looks, not what a run does (`origins=`: the embed's hosts).
pub const KEPT_PARAMETERS: [&str; 7] = [
    "model", "backend", "theme", "panels", "origins", "resident", "cache",
];

/// The routing of one run: tokens and, per sparse layer, the router's decisions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// Which run this is (counted from 1 by the page): what the grid's cells are keyed by, with
    /// the token.
    pub run: u64,
    pub prompt: String,
    pub input_ids: Vec<u32>,
    pub input_pieces: Vec<String>,
    pub output_ids: Vec<u32>,
    pub output_pieces: Vec<String>,
    /// Per sparse encoder layer, over the input tokens.
    pub encoder: Vec<LayerRouting>,
    /// Per sparse decoder layer, over the generated tokens (one routed per step).
    pub decoder: Vec<LayerRouting>,
    /// Milliseconds per generated token.
    pub step_ms: Vec<f64>,
    /// Milliseconds per encoder block (when timed).
    pub encoder_block_ms: Vec<f64>,
    /// Per generated token, milliseconds per decoder block (when timed).
    pub decoder_block_ms: Vec<Vec<f64>>,
}

impl Trace {
    /// Every layer, encoder first.
    pub fn layers(&self) -> impl Iterator<Item = &LayerRouting> {
        self.encoder.iter().chain(&self.decoder)
    }

    /// The pieces of the sequence `stack` routes.
    pub fn pieces(&self, stack: Stack) -> &[String] {
        match stack {
            Stack::Encoder => &self.input_pieces,
            Stack::Decoder => &self.output_pieces,
        }
    }

    /// Adds one decoding step's routing (one token per layer) to the decoder's rows.
    pub fn push_step(&mut self, routing: Vec<LayerRouting>) {
        if self.decoder.is_empty() {
            self.decoder = routing;
            return;
        }
        for (row, step) in self.decoder.iter_mut().zip(routing) {
            row.expert.extend(step.expert);
            row.chosen.extend(step.chosen);
            row.weight.extend(step.weight);
            row.probs.extend(step.probs);
        }
    }

    /// Whether `response` changes the trace ([`Trace::fold`] takes it).
    pub fn takes(response: &Response) -> bool {
        matches!(response, Response::Encoded { .. } | Response::Token { .. })
    }

    /// Folds a streamed message into the trace: the encoder's routing, or one generated token
    /// (named by `piece`) with its decoder routing. Other messages leave it as it is.
    pub fn fold(&mut self, response: Response, piece: impl Fn(u32) -> String) {
        match response {
            Response::Encoded {
                routing, block_ms, ..
            } => {
                self.encoder = routing;
                self.encoder_block_ms = block_ms;
            }
            Response::Token {
                id,
                routing,
                ms,
                block_ms,
                ..
            } => {
                self.output_ids.push(id);
                self.output_pieces.push(piece(id));
                self.step_ms.push(ms);
                if !block_ms.is_empty() {
                    self.decoder_block_ms.push(block_ms);
                }
                self.push_step(routing);
            }
            _ => {}
        }
    }
}

/// Tokens per expert (by the router's choice) of one layer.
pub fn load(route: &LayerRouting, experts: usize) -> Vec<usize> {
    let mut counts = vec![0; experts];
    for &c in &route.chosen {
        if let Some(n) = counts.get_mut(c as usize) {
            *n += 1;
        }
    }
    counts
}

/// Switch Transformer's load-balancing loss of one layer: `E · Σₑ fₑ · Pₑ`, with `fₑ` the
/// fraction of tokens routed to expert `e` and `Pₑ` its mean router probability (1 when
/// perfectly balanced).
pub fn balance_loss(route: &LayerRouting, experts: usize) -> f64 {
    let tokens = route.chosen.len();
    if tokens == 0 || experts == 0 {
        return 0.0;
    }
    let counts = load(route, experts);
    (0..experts)
        .map(|e| {
            let f = counts[e] as f64 / tokens as f64;
            let p: f64 = route
                .probs
                .iter()
                .map(|row| f64::from(row.get(e).copied().unwrap_or(0.0)))
                .sum::<f64>()
                / tokens as f64;
            f * p
        })
        .sum::<f64>()
        * experts as f64
}

/// The CSV header.
pub const CSV_HEADER: &str = "stack,block,token,piece,expert,chosen,probability,dropped";

/// The routing `layers` shows (the run's, or a capacity what-if's) as CSV: one line per
/// (layer, token), the token's piece from `trace`; the probability in the shortest digits that
/// read back as the same `f32`, as the JSON export writes it.
pub fn csv(layers: &[LayerRouting], trace: &Trace) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    for route in layers {
        let pieces = trace.pieces(route.stack);
        for i in 0..route.expert.len() {
            let piece = pieces
                .get(i)
                .map_or("", String::as_str)
                .replace('"', "\"\"");
            out.push_str(&format!(
                "{},{},{i},\"{piece}\",{},{},{},{}\n",
                route.stack.as_str(),
                route.block,
                route.expert[i],
                route.chosen[i],
                route.weight[i],
                route.expert[i] < 0
            ));
        }
    }
    out
}

/// The JSON export.
#[derive(Debug, Serialize)]
pub struct TraceExport<'a> {
    pub model: &'a str,
    pub prompt: &'a str,
    pub settings: Settings,
    /// The capacity factor of the what-if whose routing this is (`None`: the run's own).
    pub what_if_capacity_factor: Option<f64>,
    pub input_ids: &'a [u32],
    pub input_pieces: &'a [String],
    pub output_ids: &'a [u32],
    pub output_pieces: &'a [String],
    /// Encoder layers, then decoder layers.
    pub routing: &'a [LayerRouting],
}

impl<'a> TraceExport<'a> {
    /// The export of `trace` with the routing `layers` shows.
    pub fn new(
        model: &'a str,
        settings: Settings,
        trace: &'a Trace,
        layers: &'a [LayerRouting],
        what_if: Option<f64>,
    ) -> Self {
        Self {
            model,
            prompt: &trace.prompt,
            settings,
            what_if_capacity_factor: what_if,
            input_ids: &trace.input_ids,
            input_pieces: &trace.input_pieces,
            output_ids: &trace.output_ids,
            output_pieces: &trace.output_pieces,
            routing: layers,
        }
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// A number parameter: absent or empty is `None`.
fn number<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<T>, String> {
    match get(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}={v} in the URL is not a valid number")),
    }
}

/// Generation settings from URL parameters (`get` names a parameter's value): `max_new_tokens`,
/// `sampling=greedy|sample`, `temperature`, `top_k`, `top_p`, `seed`, `capacity_factor`,
/// `time_layers=1`, `spans=all`.
///
/// # Errors
/// A sentence naming the parameter.
pub fn settings_from(get: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
    let mut settings = Settings::default();
    if let Some(n) = number::<usize>(&get, "max_new_tokens")? {
        settings.max_new_tokens = n.clamp(1, MAX_NEW_TOKENS);
    }
    settings.capacity_factor = number(&get, "capacity_factor")?;
    settings.time_layers = get("time_layers").as_deref() == Some("1");
    settings.stop_at_spans = get("spans").as_deref() != Some("all");
    settings.sampling = match get("sampling").as_deref() {
        None | Some("" | "greedy") => Sampling::Greedy,
        Some("sample") => Sampling::Sample {
            temperature: number(&get, "temperature")?.unwrap_or(0.8),
            top_k: number(&get, "top_k")?,
            top_p: number(&get, "top_p")?,
            seed: number(&get, "seed")?.unwrap_or(0),
        },
        Some(other) => {
            return Err(format!(
                "unknown sampling {other:?} in the URL: use greedy or sample"
            ));
        }
    };
    Ok(settings)
}

/// The expert memory budget in MB from `budget_mb=` (`None`: unlimited; 0 too, as in the
/// settings' field).
///
/// # Errors
/// A sentence naming the parameter.
pub fn budget_from(get: impl Fn(&str) -> Option<String>) -> Result<Option<f64>, String> {
    Ok(number::<f64>(&get, "budget_mb")?.filter(|&mb| mb > 0.0))
}

/// Whether `resident=all` asks for every expert on the device once the model is loaded (a warm
/// session's steady state, as `switchscope bench speed --all-resident`).
///
/// # Errors
/// A sentence naming the parameter, for any other value.
pub fn all_resident_from(get: impl Fn(&str) -> Option<String>) -> Result<bool, String> {
    match get("resident").as_deref() {
        None | Some("") => Ok(false),
        Some("all") => Ok(true),
        Some(other) => Err(format!(
            "unknown resident={other:?} in the URL: use resident=all (every expert on the device \
             from the start) or leave it out (experts arrive when routed to)"
        )),
    }
}

/// Pre-gating prefetch from `prefetch=` (on unless `0`).
pub fn prefetch_from(get: impl Fn(&str) -> Option<String>) -> bool {
    get("prefetch").as_deref() != Some("0")
}

/// The panels to show: `panels=` (comma-separated names of [`PANELS`]), else every panel on
/// the page and [`EMBED_PANELS`] when embedded.
pub fn panels_from(panels: Option<&str>, embed: bool) -> Vec<String> {
    match panels {
        Some(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| PANELS.contains(&p.as_str()))
            .collect(),
        _ if embed => EMBED_PANELS.iter().map(|p| (*p).to_owned()).collect(),
        _ => PANELS.iter().map(|p| (*p).to_owned()).collect(),
    }
}

/// The colour scheme `theme=` asks for (`light` or `dark`; anything else: the system's).
pub fn theme_from(theme: Option<&str>) -> Option<&'static str> {
    match theme {
        Some("light") => Some("light"),
        Some("dark") => Some("dark"),
        _ => None,
    }
}

/// The embed's allowed origins from `origins=` (comma-separated), normalised (no trailing
/// `/`); `*` is never one.
pub fn origins_from(origins: Option<&str>) -> Vec<String> {
    origins
        .unwrap_or_default()
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty() && o != "*")
        .collect()
}

/// A permalink's parameters, in order: those of [`KEPT_PARAMETERS`] the current URL has
/// (`get`), then the prompt, every setting, the budget and prefetch, so that
/// [`settings_from`], [`budget_from`] and [`prefetch_from`] read back what the page had.
pub fn permalink_parameters(
    get: impl Fn(&str) -> Option<String>,
    prompt: &str,
    settings: &Settings,
    budget_mb: Option<f64>,
    prefetch: bool,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = KEPT_PARAMETERS
        .iter()
        .filter_map(|k| get(k).map(|v| ((*k).to_owned(), v)))
        .collect();
    let mut set = |k: &str, v: String| out.push((k.to_owned(), v));
    set("prompt", prompt.to_owned());
    set("max_new_tokens", settings.max_new_tokens.to_string());
    if let Some(f) = settings.capacity_factor {
        set("capacity_factor", f.to_string());
    }
    if settings.time_layers {
        set("time_layers", "1".into());
    }
    if !settings.stop_at_spans {
        set("spans", "all".into());
    }
    match settings.sampling {
        Sampling::Greedy => set("sampling", "greedy".into()),
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
            seed,
        } => {
            set("sampling", "sample".into());
            set("temperature", temperature.to_string());
            if let Some(k) = top_k {
                set("top_k", k.to_string());
            }
            if let Some(p) = top_p {
                set("top_p", p.to_string());
            }
            set("seed", seed.to_string());
        }
    }
    if let Some(mb) = budget_mb {
        set("budget_mb", mb.to_string());
    }
    set("prefetch", if prefetch { "1" } else { "0" }.into());
    out
}

/// The banner shown when the GPU device was lost (`reason` and `message` from WebGPU) and the
/// page went on on the CPU; `running`: a run was interrupted.
pub fn device_lost_message(reason: &str, message: &str, running: bool) -> String {
    let detail = if message.is_empty() {
        reason.to_owned()
    } else {
        format!("{reason}: {message}")
    };
    format!(
        "The GPU device was lost ({detail}). Switchscope switched to the CPU and loaded the \
         model again{}.",
        if running {
            "; the run in progress was interrupted, run it again"
        } else {
            ""
        }
    )
}

/// Demand requests to the expert store and how many found their expert resident, counted from
/// the shard events as they arrive (the shard panel's live hit rate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCount {
    pub requests: u64,
    pub hits: u64,
}

impl CacheCount {
    /// Counts one shard event: a hit or a request that missed; other events are not requests.
    pub fn count(&mut self, kind: &ShardEventKind) {
        match kind {
            ShardEventKind::Hit => {
                self.requests += 1;
                self.hits += 1;
            }
            ShardEventKind::Requested => self.requests += 1,
            _ => {}
        }
    }

    /// The shard panel's sentence for the store's `policy`.
    pub fn sentence(&self, policy: &str) -> String {
        if self.requests == 0 {
            return format!("Expert cache ({policy}): no requests yet");
        }
        format!(
            "Expert cache ({policy}): {} of {} requests found their expert resident ({:.0} % hit \
             rate)",
            self.hits,
            self.requests,
            100.0 * self.hits as f64 / self.requests as f64
        )
    }
}
