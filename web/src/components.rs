//! The page's components, by feature.

pub mod backend_check;
pub mod export;
pub mod offline;
pub mod palette;
pub mod prompt;
pub mod routing_grid;
pub mod shard_panel;
pub mod stats;
