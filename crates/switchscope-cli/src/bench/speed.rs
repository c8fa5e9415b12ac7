//! `bench speed`: how fast one model runs on one backend.
//!
//! One measured run is one [`Switch::generate`], the decode loop the CLI and the page use:
//! greedy, with the KV cache, decoding a fixed number of tokens (it does not stop at EOS, so
//! every run does the same work). Encode time runs to the encoder's routing; decode time from
//! there to the last token. A first run, not counted, loads the experts the input needs and
//! compiles the GPU's kernels (with `--all-resident` every expert is loaded first); the figures
//! are the medians of the counted runs, and the device counts (dispatches, uploads, host waits
//! per decoded token) those of the last run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use switchscope_core::Switch;
use switchscope_core::counters::Counts;
use switchscope_core::runtime::generate::{GenerateOptions, Progress};
use switchscope_core::runtime::store::StoreOptions;
use switchscope_core::tokenizer::Tokenizer;

use super::fixtures::random_prompts;
use super::stats::median;
use crate::open::open;

#[derive(Debug, Args)]
pub struct SpeedArgs {
    /// A Hugging Face checkpoint directory or a converted Switchscope model directory.
    #[arg(long)]
    model: PathBuf,
    /// Where to compute.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "wgpu"])]
    backend: String,
    /// Input length (random ids with a fixed seed, EOS last) unless --prompt or --input-ids.
    #[arg(long, default_value_t = 64)]
    input_tokens: usize,
    /// Text to encode with the model's tokenizer.json.
    #[arg(long, conflicts_with = "input_ids")]
    prompt: Option<String>,
    /// Encoder input ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    input_ids: Vec<u32>,
    /// Tokens decoded per run.
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// Measured runs (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print one JSON object instead of a table row.
    #[arg(long)]
    json: bool,
    /// On a GPU, run int8/int4 experts with burn's generic ops on f32 copies instead of our
    /// quantized kernels (for comparing the two).
    #[arg(long)]
    generic_experts: bool,
    /// Make every expert resident before the warm-up (the steady state of a long session).
    #[arg(long)]
    all_resident: bool,
    /// On a GPU, read each sparse layer's routing before its experts run even where the
    /// device could choose them (for comparing the two).
    #[arg(long)]
    host_routing: bool,
    /// Also list the kernels one decoded token launches, by name (from one more run).
    #[arg(long)]
    kernels: bool,
}

/// One model's measured speed.
#[derive(Debug, Clone, Serialize)]
pub struct Speed {
    pub model: String,
    pub backend: String,
    pub input_ids: Vec<u32>,
    pub new_tokens: usize,
    pub runs: usize,
    /// The warm-up run (expert loading and kernel compilation included), seconds.
    pub warmup_s: f64,
    pub load_s: f64,
    /// Per measured run.
    pub encode_ms: Vec<f64>,
    pub decode_ms: Vec<f64>,
    /// Medians of the measured runs.
    pub encoder_ms: f64,
    pub encoder_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// The decoded tokens (the same in every run).
    pub output_ids: Vec<u32>,
    /// Expert bytes read for the input (converted models).
    pub expert_bytes_fetched: Option<u64>,
    /// Whether every expert was resident before the warm-up (`--all-resident`).
    pub all_resident: bool,
    /// Per decoded token, in the last measured run: kernels launched (0 on the CPU), host →
    /// device buffers created or written, device → host reads, and reads the host waited for
    /// before it could queue more work.
    pub dispatches_per_token: f64,
    pub uploads_per_token: f64,
    pub readbacks_per_token: f64,
    pub host_waits_per_token: f64,
    /// The last measured run's decode counts, whole.
    pub decode_counts: Counts,
    /// With `--kernels`: launches per decoded token by kernel name, most first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernels_per_token: Vec<(String, f64)>,
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct Run {
    pub encode_ms: f64,
    pub decode_ms: f64,
    /// The decoder start token, then the decoded ids.
    pub output_ids: Vec<u32>,
    pub counts: Counts,
}

/// One run: a greedy generation of exactly `new_tokens` tokens.
pub fn run_once(m: &Switch, ids: &[u32], new_tokens: usize) -> Result<Run> {
    let options = GenerateOptions {
        max_new_tokens: new_tokens,
        ignore_eos: true,
        ..GenerateOptions::default()
    };
    let started = Instant::now();
    let encoded = std::cell::Cell::new(None);
    let generation = pollster::block_on(m.generate(ids, &options, |progress| {
        if let Progress::Encoded { .. } = progress {
            encoded.set(Some(Instant::now()));
        }
        std::future::ready(true)
    }))?;
    let finished = Instant::now();
    let encoded = encoded.get().unwrap_or(finished);
    Ok(Run {
        encode_ms: (encoded - started).as_secs_f64() * 1e3,
        decode_ms: (finished - encoded).as_secs_f64() * 1e3,
        output_ids: generation.output_ids,
        counts: generation.decode_counts,
    })
}

/// The kernels one more run's decode steps launch, per decoded token, by name.
fn decode_kernels(m: &Switch, ids: &[u32], new_tokens: usize) -> Result<Vec<(String, f64)>> {
    use switchscope_core::counters::Kernels;
    let options = GenerateOptions {
        max_new_tokens: new_tokens,
        ignore_eos: true,
        ..GenerateOptions::default()
    };
    let collecting = std::cell::RefCell::new(None);
    let generation = pollster::block_on(m.generate(ids, &options, |progress| {
        if let Progress::Encoded { .. } = progress {
            *collecting.borrow_mut() = Some(Kernels::start());
        }
        std::future::ready(true)
    }))?;
    let steps = generation.steps.len().max(1) as f64;
    Ok(collecting
        .take()
        .map(Kernels::finish)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, n)| (short_name(name), n as f64 / steps))
        .collect())
}

/// A kernel's type name without module paths (`a::b::Kernel<c::d::AddOp>` → `Kernel<AddOp>`).
fn short_name(name: &str) -> String {
    let mut out = String::new();
    for piece in name.split_inclusive(['<', '>', ',', '(', ')', ' ']) {
        let (word, delimiter) = match piece.char_indices().last() {
            Some((i, c)) if "<>,() ".contains(c) => (&piece[..i], &piece[i..]),
            _ => (piece, ""),
        };
        out.push_str(word.rsplit("::").next().unwrap_or(word));
        out.push_str(delimiter);
    }
    out
}

/// Makes every expert of `m`'s store resident (nothing to do for a model loaded whole).
///
/// # Errors
/// When a shard cannot be fetched or decoded.
pub fn make_all_resident(m: &Switch) -> Result<()> {
    let Some(store) = m.store() else {
        return Ok(());
    };
    pollster::block_on(async {
        for id in store.manifest().expert_ids() {
            store.expert(id.stack, id.block, id.expert).await?;
        }
        Ok(())
    })
}

/// A warm-up run, then `runs` measured runs.
pub fn measure(
    m: &Switch,
    label: &str,
    backend: &str,
    ids: &[u32],
    new_tokens: usize,
    runs: usize,
) -> Result<Speed> {
    let before = m.store().map(|s| s.stats().bytes_fetched);
    let started = Instant::now();
    run_once(m, ids, new_tokens)?;
    let warmup_s = started.elapsed().as_secs_f64();
    let expert_bytes_fetched = m
        .store()
        .zip(before)
        .map(|(s, b)| s.stats().bytes_fetched - b);
    let (mut encode_ms, mut decode_ms) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..runs.max(1) {
        let run = run_once(m, ids, new_tokens)?;
        encode_ms.push(run.encode_ms);
        decode_ms.push(run.decode_ms);
        last = Some(run);
    }
    let last = last.expect("at least one run");
    let per = last.counts.per(new_tokens);
    Ok(Speed {
        model: label.to_owned(),
        backend: backend.to_owned(),
        input_ids: ids.to_vec(),
        new_tokens,
        runs: runs.max(1),
        warmup_s,
        load_s: 0.0,
        encoder_ms: median(&encode_ms),
        encoder_tokens_per_s: ids.len() as f64 * 1e3 / median(&encode_ms),
        decode_tokens_per_s: new_tokens as f64 * 1e3 / median(&decode_ms),
        encode_ms,
        decode_ms,
        output_ids: last.output_ids,
        expert_bytes_fetched,
        all_resident: false,
        dispatches_per_token: per.dispatches,
        uploads_per_token: per.uploads,
        readbacks_per_token: per.readbacks,
        host_waits_per_token: per.host_waits,
        decode_counts: last.counts,
        kernels_per_token: Vec::new(),
    })
}

pub fn run(args: &SpeedArgs) -> Result<()> {
    let started = Instant::now();
    let store = StoreOptions {
        generic_experts: args.generic_experts,
        host_routing: args.host_routing,
        ..StoreOptions::default()
    };
    let m = open(&args.model, &args.backend, store)?;
    let load_s = started.elapsed().as_secs_f64();
    let ids = if let Some(text) = &args.prompt {
        let tokenizer = Tokenizer::from_bytes(
            &std::fs::read(args.model.join("tokenizer.json"))
                .context("--prompt needs the model's tokenizer.json")?,
        )?;
        tokenizer.encode(text)?
    } else if !args.input_ids.is_empty() {
        args.input_ids.clone()
    } else {
        anyhow::ensure!(args.input_tokens >= 1, "--input-tokens must be at least 1");
        let vocab = u32::try_from(m.config().vocab_size)?;
        let mut ids = random_prompts(vocab, 1, args.input_tokens - 1, 11).remove(0);
        ids.truncate(args.input_tokens);
        ids
    };
    let label = args.model.display().to_string();
    if args.all_resident {
        make_all_resident(&m)?;
    }
    let mut speed = measure(&m, &label, &args.backend, &ids, args.new_tokens, args.runs)?;
    speed.load_s = load_s;
    speed.all_resident = args.all_resident;
    if args.kernels {
        speed.kernels_per_token = decode_kernels(&m, &ids, args.new_tokens)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&speed)?);
    } else {
        println!(
            "| model | backend | input tokens | new tokens | encoder tokens/s | decode tokens/s | dispatches/token | uploads/token | host waits/token |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            speed.model,
            speed.backend,
            ids.len(),
            speed.new_tokens,
            speed.encoder_tokens_per_s,
            speed.decode_tokens_per_s,
            speed.dispatches_per_token,
            speed.uploads_per_token,
            speed.host_waits_per_token
        );
        for (kernel, n) in &speed.kernels_per_token {
            println!("{n:8.2} per token  {kernel}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::short_name;

    #[test]
    fn kernel_names_lose_their_module_paths() {
        assert_eq!(
            short_name(
                "burn_cubecl::kernel::binary::KernelBinop<burn_cubecl::kernel::binary::AddOp>"
            ),
            "KernelBinop<AddOp>"
        );
        assert_eq!(
            short_name("a::Entry<x::Args, y::Scalar<z::Lhs>, (), w::T>"),
            "Entry<Args, Scalar<Lhs>, (), T>"
        );
        assert_eq!(short_name("plain"), "plain");
    }
}
