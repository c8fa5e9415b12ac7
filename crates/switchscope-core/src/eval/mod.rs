//! Evaluation: what quantization costs a converted model against its checkpoint (the CLI's
//! `convert --report`; the speed benches live in the CLI's `bench`).

pub mod report;
