//! The page's state: what the worker reported, kept in Leptos signals, and how each streamed
//! message changes it.

use leptos::prelude::*;

use crate::protocol::{
    ModelInfo, Origin, Response, Route, RunSummary, Settings, ShardEvent, ShardEventKind,
    ShardInfo, StackName,
};

/// What the app is doing (`data-testid="status"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Idle,
    Loading,
    Generating,
    Done,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Loading => "loading",
            Self::Generating => "generating",
            Self::Done => "done",
            Self::Error => "error",
        }
    }
}

/// Where an expert's shard is (`data-state` of a `shard` cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardState {
    /// Only on the server.
    Remote,
    /// Being fetched (requested by a router or by a prefetch).
    Fetching,
    /// In the browser's cache, not on the device.
    Cached,
    /// Decoded on the device.
    Resident,
    /// Dropped from the device to stay within the budget (still cached).
    Evicted,
    /// Its fetch or check failed.
    Failed,
}

impl ShardState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Remote => "remote",
            Self::Fetching => "fetching",
            Self::Cached => "cached",
            Self::Resident => "resident",
            Self::Evicted => "evicted",
            Self::Failed => "failed",
        }
    }
}

/// One expert's shard and its live state.
#[derive(Debug, Clone, Copy)]
pub struct ShardCell {
    pub info: StoredValue<ShardInfo>,
    pub state: RwSignal<ShardState>,
    /// Milliseconds of its last fetch.
    pub ms: RwSignal<Option<f64>>,
}

/// The routing of one run: tokens and, per sparse layer, the router's decisions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    pub prompt: String,
    pub input_ids: Vec<u32>,
    pub input_pieces: Vec<String>,
    pub output_ids: Vec<u32>,
    pub output_pieces: Vec<String>,
    /// Per sparse encoder layer, over the input tokens.
    pub encoder: Vec<Route>,
    /// Per sparse decoder layer, over the generated tokens (one routed per step).
    pub decoder: Vec<Route>,
    /// Milliseconds per generated token.
    pub step_ms: Vec<f64>,
    /// Milliseconds per encoder block (when timed).
    pub encoder_block_ms: Vec<f64>,
    /// Per generated token, milliseconds per decoder block (when timed).
    pub decoder_block_ms: Vec<Vec<f64>>,
}

impl Trace {
    /// Every layer, encoder first.
    pub fn layers(&self) -> impl Iterator<Item = &Route> {
        self.encoder.iter().chain(&self.decoder)
    }

    /// The pieces of the sequence `stack` routes.
    pub fn pieces(&self, stack: StackName) -> &[String] {
        match stack {
            StackName::Encoder => &self.input_pieces,
            StackName::Decoder => &self.output_pieces,
        }
    }

    /// Adds one decoding step's routing (one token per layer) to the decoder's rows.
    pub fn push_step(&mut self, routing: Vec<Route>) {
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
}

/// All the page's signals (cheap to copy into closures).
#[derive(Debug, Clone, Copy)]
pub struct AppState {
    pub status: RwSignal<Status>,
    pub error: RwSignal<Option<String>>,
    /// Something the user should know that is not an error (e.g. a shortened prompt).
    pub notice: RwSignal<Option<String>>,
    pub model: RwSignal<Option<ModelInfo>>,
    pub prompt: RwSignal<String>,
    pub settings: RwSignal<Settings>,
    /// Device budget for experts in MB (`None`: unlimited).
    pub budget_mb: RwSignal<Option<f64>>,
    pub prefetch: RwSignal<bool>,
    pub trace: RwSignal<Trace>,
    /// A capacity what-if being shown instead of the run's own routing: (factor, layers).
    pub what_if: RwSignal<Option<(f64, Vec<Route>)>>,
    pub shards: RwSignal<Vec<ShardCell>>,
    /// Bytes of model files that came over the network (dense weights included).
    pub downloaded: RwSignal<u64>,
    pub summary: RwSignal<Option<RunSummary>>,
    /// The token whose router probabilities are shown: (stack, index).
    pub focus: RwSignal<Option<(StackName, usize)>>,
    /// "Make available offline": files done, files, bytes done, bytes.
    pub offline_progress: RwSignal<Option<(usize, usize, u64, u64)>>,
    /// The download in progress: file, bytes received, bytes expected.
    pub download: RwSignal<Option<(String, u64, u64)>>,
    /// Set when the GPU device was lost and the page went on on the CPU: what happened.
    pub device_lost: RwSignal<Option<String>>,
}

impl AppState {
    pub fn new(settings: Settings, prompt: String) -> Self {
        Self {
            status: RwSignal::new(Status::Loading),
            error: RwSignal::new(None),
            notice: RwSignal::new(None),
            model: RwSignal::new(None),
            prompt: RwSignal::new(prompt),
            settings: RwSignal::new(settings),
            budget_mb: RwSignal::new(None),
            prefetch: RwSignal::new(true),
            trace: RwSignal::new(Trace::default()),
            what_if: RwSignal::new(None),
            shards: RwSignal::new(Vec::new()),
            downloaded: RwSignal::new(0),
            summary: RwSignal::new(None),
            focus: RwSignal::new(None),
            offline_progress: RwSignal::new(None),
            download: RwSignal::new(None),
            device_lost: RwSignal::new(None),
        }
    }

    /// The layers to draw: the what-if's when one is shown, else the run's.
    pub fn shown_layers(&self) -> Vec<Route> {
        if let Some((_, layers)) = self.what_if.get() {
            return layers;
        }
        self.trace.with(|t| t.layers().cloned().collect())
    }

    /// Sets up the shard cells of a freshly loaded model.
    pub fn loaded(&self, info: &ModelInfo) {
        let cells = info
            .shards
            .iter()
            .map(|s| ShardCell {
                info: StoredValue::new(s.clone()),
                state: RwSignal::new(if s.cached {
                    ShardState::Cached
                } else {
                    ShardState::Remote
                }),
                ms: RwSignal::new(None),
            })
            .collect();
        self.shards.set(cells);
        self.model.set(Some(info.clone()));
    }

    fn shard_event(&self, event: &ShardEvent) {
        let cell = self.shards.with_untracked(|cells| {
            cells.iter().copied().find(|c| {
                c.info.with_value(|i| {
                    i.stack == event.stack && i.block == event.block && i.expert == event.expert
                })
            })
        });
        let Some(cell) = cell else { return };
        match &event.kind {
            ShardEventKind::Requested | ShardEventKind::Prefetching => {
                cell.state.set(ShardState::Fetching);
            }
            ShardEventKind::Hit | ShardEventKind::Resident { .. } => {
                cell.state.set(ShardState::Resident);
            }
            ShardEventKind::Fetched {
                bytes, origin, ms, ..
            } => {
                cell.ms.set(Some(*ms));
                if *origin == Origin::Network {
                    self.downloaded.update(|d| *d += bytes);
                }
            }
            ShardEventKind::Evicted { .. } => cell.state.set(ShardState::Evicted),
            ShardEventKind::Failed { reason } => {
                // A download cancelled by Stop leaves the shard where it was: on the server.
                cell.state.set(if reason.contains("cancelled") {
                    ShardState::Remote
                } else {
                    ShardState::Failed
                });
                self.download.set(None);
            }
        }
    }

    /// Applies a streamed message from the worker; `piece` names a token id.
    pub fn apply(&self, response: Response, piece: impl Fn(u32) -> String) {
        match response {
            Response::Encoded {
                routing, block_ms, ..
            } => self.trace.update(|t| {
                t.encoder = routing;
                t.encoder_block_ms = block_ms;
            }),
            Response::Token {
                id,
                routing,
                ms,
                block_ms,
                ..
            } => self.trace.update(|t| {
                t.output_ids.push(id);
                t.output_pieces.push(piece(id));
                t.step_ms.push(ms);
                if !block_ms.is_empty() {
                    t.decoder_block_ms.push(block_ms);
                }
                t.push_step(routing);
            }),
            Response::Shard(event) => self.shard_event(&event),
            Response::OfflineProgress {
                files_done,
                files,
                bytes_done,
                bytes,
            } => self
                .offline_progress
                .set(Some((files_done, files, bytes_done, bytes))),
            Response::Download {
                file,
                received,
                total,
            } => self
                .download
                .set((received < total).then_some((file, received, total))),
            _ => {}
        }
    }
}
