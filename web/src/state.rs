//! The page's state: what the worker reported, kept in Leptos signals, and how each streamed
//! message changes it.

use leptos::prelude::*;

pub use crate::page::{CacheCount, Trace};
use crate::protocol::{
    LayerRouting, ModelInfo, Origin, Response, RunSummary, Settings, ShardEvent, ShardEventKind,
    ShardInfo, Stack,
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
    pub what_if: RwSignal<Option<(f64, Vec<LayerRouting>)>>,
    pub shards: RwSignal<Vec<ShardCell>>,
    /// Bytes of model files that came over the network since the model was loaded (its dense
    /// weights and tokenizer included, when the browser's cache did not have them).
    pub downloaded: RwSignal<u64>,
    /// The expert store's demand requests since the model was loaded, and how many found their
    /// expert resident (counted from the shard events as they arrive).
    pub cache: RwSignal<CacheCount>,
    pub summary: RwSignal<Option<RunSummary>>,
    /// The token whose router probabilities are shown: (stack, index).
    pub focus: RwSignal<Option<(Stack, usize)>>,
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
            cache: RwSignal::new(CacheCount::default()),
            summary: RwSignal::new(None),
            focus: RwSignal::new(None),
            offline_progress: RwSignal::new(None),
            download: RwSignal::new(None),
            device_lost: RwSignal::new(None),
        }
    }

    /// The layers to draw, copied (for exports): the what-if's when one is shown, else the
    /// run's.
    pub fn shown_layers(&self) -> Vec<LayerRouting> {
        self.with_shown_layers(|layers| layers.iter().map(|&l| l.clone()).collect())
    }

    /// `f` of the layers to draw, borrowed (no copy of the trace), tracking what they come from.
    pub fn with_shown_layers<R>(&self, f: impl FnOnce(&[&LayerRouting]) -> R) -> R {
        self.what_if.with(|w| match w {
            Some((_, layers)) => f(&layers.iter().collect::<Vec<_>>()),
            None => self.trace.with(|t| f(&t.layers().collect::<Vec<_>>())),
        })
    }

    /// [`Self::with_shown_layers`] without tracking.
    pub fn with_shown_layers_untracked<R>(&self, f: impl FnOnce(&[&LayerRouting]) -> R) -> R {
        self.what_if.with_untracked(|w| match w {
            Some((_, layers)) => f(&layers.iter().collect::<Vec<_>>()),
            None => self
                .trace
                .with_untracked(|t| f(&t.layers().collect::<Vec<_>>())),
        })
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
        self.cache.set(CacheCount::default());
        self.model.set(Some(info.clone()));
    }

    fn shard_event(&self, event: &ShardEvent) {
        if matches!(event.kind, ShardEventKind::Hit | ShardEventKind::Requested) {
            self.cache.update(|c| c.count(&event.kind));
        }
        let cell = self.shards.with_untracked(|cells| {
            cells.iter().copied().find(|c| {
                c.info.with_value(|i| {
                    let id = &event.expert;
                    i.stack == id.stack && i.block == id.block && i.expert == id.expert
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
        if Trace::takes(&response) {
            self.trace.update(|t| t.fold(response, piece));
            return;
        }
        match response {
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
