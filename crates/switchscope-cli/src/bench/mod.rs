//! `switchscope bench`: measurements that are not tests. Each prints Markdown tables (the
//! figures in docs/BENCHMARKS.md come from these commands, most of them through
//! `cargo xtask bench`).
//!
//! - `bench shards`: bytes fetched per prompt set vs the whole model, as experts per layer grow
//!   (random models of the same width), and the hit rate of the expert store under budgets, with
//!   and without pre-gating prefetch.
//! - `bench speed`: encoder tokens/s and decode tokens/s of one model on one backend.
//! - `bench growth`: time and bytes as the input grows and as experts per layer grow.
//! - `bench kernels`: one expert's feed-forward on the GPU, our quantized kernels against
//!   burn's quantized tensors, dequantize-then-matmul and f32.
//! - `bench export-hf`: a converted model back to a Hugging Face checkpoint (dequantized), so
//!   that other engines can run exactly the weights we run.
//! - `bench remote`: bytes over the network when a Hugging Face checkpoint is read in place by
//!   its URL, per text of the fixed set and for the set in one store.
//! - `bench random-checkpoint`: writes a random-weight Hugging Face checkpoint for a config (to
//!   convert at real scale and measure the converter's time and memory).

mod export;
mod fixtures;
mod growth;
mod kernels;
mod remote;
mod shards;
mod speed;
mod stats;

use anyhow::{Context, Result};
use clap::Subcommand;
use switchscope_core::model::SwitchConfig;

pub use fixtures::TEXTS;
use fixtures::random_checkpoint;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Bytes fetched vs experts per layer, and hit rates under expert budgets.
    Shards(shards::ShardsArgs),
    /// Encoder and decode tokens/s of one model on one backend (median of several runs).
    Speed(speed::SpeedArgs),
    /// Time and bytes as the input grows (16 → 512 tokens) and as experts per layer grow.
    Growth(growth::GrowthArgs),
    /// One expert's feed-forward on the GPU: our int8/int4 kernels vs burn's quantized
    /// tensors, dequantize-then-matmul and f32 (batch 1 and 64 tokens).
    Kernels(kernels::KernelsArgs),
    /// Write a converted model as a Hugging Face checkpoint (experts dequantized to f32).
    ExportHf(export::ExportArgs),
    /// Write a random-weight Hugging Face checkpoint (config.json + model.safetensors).
    RandomCheckpoint(RandomArgs),
    /// Bytes over the network when a checkpoint is read in place from its URL, per text of the
    /// fixed set (each a first visit) and for the set in one store.
    Remote(remote::RemoteArgs),
}

#[derive(Debug, clap::Args)]
pub struct RandomArgs {
    /// A Hugging Face config.json.
    #[arg(long)]
    config: std::path::PathBuf,
    /// The directory to create.
    #[arg(long)]
    out: std::path::PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Split the weights into `model-0000N-of-0000M.safetensors` files of at most this many MB
    /// (f32), with `model.safetensors.index.json`, as transformers shards a checkpoint.
    #[arg(long, default_value_t = 256.0)]
    shard_mb: f64,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Shards(args) => shards::run(&args),
        BenchCommand::Speed(args) => speed::run(&args),
        BenchCommand::Growth(args) => growth::run(&args),
        BenchCommand::ExportHf(args) => export::run(&args),
        BenchCommand::Kernels(args) => kernels::run(&args),
        BenchCommand::Remote(args) => remote::run(&args),
        BenchCommand::RandomCheckpoint(args) => {
            let text = std::fs::read_to_string(&args.config)
                .with_context(|| format!("reading {}", args.config.display()))?;
            let config = SwitchConfig::from_json(&text)?;
            anyhow::ensure!(args.shard_mb > 0.0, "--shard-mb must be positive");
            let shard_values = (args.shard_mb * 1e6 / 4.0) as usize;
            random_checkpoint(&config, &text, &args.out, args.seed, shard_values.max(1))?;
            println!(
                "wrote {} ({} parameters)",
                args.out.display(),
                config.parameter_count()
            );
            Ok(())
        }
    }
}
