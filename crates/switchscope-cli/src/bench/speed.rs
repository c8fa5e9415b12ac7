//! `bench speed`: how fast one model runs on one backend.
//!
//! One measured run encodes the input (then waits for the device) and decodes a fixed number of
//! tokens greedily with the KV cache, reading each step's logits back to pick the next token, as
//! a generation does; it does not stop at EOS, so every run does the same work. A first run,
//! not counted, loads the experts the input needs and compiles the GPU's kernels; the figures
//! are the medians of the counted runs.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use switchscope_core::Switch;
use switchscope_core::backend::read_f32;
use switchscope_core::kernels::reference::argmax;
use switchscope_core::model::{RunOptions, TokenBatch};
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
}

/// One run: (encode ms, decode ms, decoded ids).
pub fn run_once(m: &Switch, ids: &[u32], new_tokens: usize) -> Result<(f64, f64, Vec<u32>)> {
    pollster::block_on(async {
        let options = RunOptions::default();
        let started = Instant::now();
        let input = TokenBatch::new(&[ids.to_vec()], m.config().pad_token_id)?;
        let encoded = m.model().encode(m.config(), &input, options).await?;
        // Wait for the device: the routing was read back, the last block's output may not be.
        read_f32(encoded.hidden.clone().narrow(1, 0, 1).narrow(2, 0, 1)).await?;
        let encode_ms = started.elapsed().as_secs_f64() * 1e3;
        let started = Instant::now();
        let mut cache = m.model().start_decoding(&encoded);
        let mut output = vec![m.config().decoder_start()];
        for _ in 0..new_tokens {
            let last = [*output.last().expect("starts with the start token")];
            let (logits, _routing) = m
                .model()
                .decode(m.config(), &encoded, &mut cache, &last, 1, options)
                .await?;
            let values = read_f32(logits).await?;
            output.push(argmax(&values) as u32);
        }
        let decode_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok((encode_ms, decode_ms, output))
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
    let (mut encode_ms, mut decode_ms, mut output_ids) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let (e, d, out) = run_once(m, ids, new_tokens)?;
        encode_ms.push(e);
        decode_ms.push(d);
        output_ids = out;
    }
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
        output_ids,
        expert_bytes_fetched,
    })
}

pub fn run(args: &SpeedArgs) -> Result<()> {
    let started = Instant::now();
    let store = StoreOptions {
        generic_experts: args.generic_experts,
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
    let mut speed = measure(&m, &label, &args.backend, &ids, args.new_tokens, args.runs)?;
    speed.load_s = load_s;
    if args.json {
        println!("{}", serde_json::to_string(&speed)?);
    } else {
        println!(
            "| model | backend | input tokens | new tokens | encoder tokens/s | decode tokens/s |"
        );
        println!("|---|---|---|---|---|---|");
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} |",
            speed.model,
            speed.backend,
            ids.len(),
            speed.new_tokens,
            speed.encoder_tokens_per_s,
            speed.decode_tokens_per_s
        );
    }
    Ok(())
}
