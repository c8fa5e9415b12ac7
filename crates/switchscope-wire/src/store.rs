//! The expert store, as the page and the CLI see it: what happened to each expert's shard, and
//! the store's counters.

use serde::{Deserialize, Serialize};

use crate::routing::ExpertId;

/// Where fetched bytes were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A local file.
    Disk,
    /// The browser's Cache API (fetched earlier).
    Cache,
    /// The network.
    Network,
}

/// What happened to a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShardEventKind {
    /// The router picked the expert and it was not resident: its shard is being fetched.
    Requested,
    /// The router picked the expert and it was resident.
    Hit,
    /// Pre-gating predicted the expert and its transfer was started early.
    Prefetching,
    /// The shard's bytes arrived and passed the size and SHA-256 checks.
    Fetched {
        bytes: u64,
        origin: Origin,
        /// Whether a prefetch had started the transfer.
        prefetched: bool,
        /// From the request to verified bytes.
        ms: f64,
    },
    /// Decoded onto the device; `resident_bytes` is the store's total afterwards.
    Resident {
        device_bytes: u64,
        resident_bytes: u64,
    },
    /// Dropped from the device to stay within the budget.
    Evicted { resident_bytes: u64 },
    /// The fetch, the check or the decoding failed; nothing was kept.
    Failed { reason: String },
}

/// Something that happened to the shard of `expert`, for the UI and for accounting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEvent {
    #[serde(flatten)]
    pub expert: ExpertId,
    pub file: String,
    #[serde(flatten)]
    pub kind: ShardEventKind,
}

/// Counters over a store's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Times a router asked for an expert.
    pub requests: u64,
    /// Of those, how many found it resident.
    pub hits: u64,
    /// Shards fetched (each a miss).
    pub fetches: u64,
    /// Bytes of the shards fetched.
    pub bytes_fetched: u64,
    /// Fetches that a prefetch had started.
    pub prefetch_used: u64,
    /// Prefetches started.
    pub prefetches: u64,
    /// Bytes of prefetched shards that no router asked for (so far).
    pub prefetch_wasted_bytes: u64,
    pub evictions: u64,
    /// Device bytes of the experts resident now.
    pub resident_bytes: u64,
    /// The most device bytes resident at any time.
    pub peak_resident_bytes: u64,
    /// Device bytes of the expert tables: a copy of every sparse layer's experts once all are
    /// resident, so that the device chooses among them (GPU, no budget).
    #[serde(default)]
    pub table_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Stack;

    #[test]
    fn a_shard_event_is_one_flat_object() {
        let event = ShardEvent {
            expert: ExpertId {
                stack: Stack::Encoder,
                block: 1,
                expert: 5,
            },
            file: "experts/encoder-01-05.safetensors".into(),
            kind: ShardEventKind::Fetched {
                bytes: 10,
                origin: Origin::Cache,
                prefetched: false,
                ms: 1.5,
            },
        };
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"stack":"encoder","block":1,"expert":5,"file":"experts/encoder-01-05.safetensors","kind":"fetched","bytes":10,"origin":"cache","prefetched":false,"ms":1.5}"#
        );
        assert_eq!(serde_json::from_str::<ShardEvent>(&json).unwrap(), event);
    }
}
