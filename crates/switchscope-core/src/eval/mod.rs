//! Evaluation: what quantization costs a converted model against its checkpoint (the CLI's
//! `convert --report`), and the expert cache's policies against the optimum on recorded
//! request traces (`cache`, for `bench shards`; the speed benches live in the CLI's `bench`).

pub mod cache;
pub mod report;
