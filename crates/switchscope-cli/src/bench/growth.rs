//! `bench growth`: how time and bytes grow with the input length (on a real model) and with
//! the number of experts per layer (random models of one width). A sparse model's per-token
//! time should stay flat as experts are added: each token still runs one expert per layer.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use switchscope_core::Switch;
use switchscope_core::runtime::store::StoreOptions;
use switchscope_core::tokenizer::Tokenizer;

use super::fixtures::{TEXTS, random_model, random_prompts};
use super::speed::measure;
use super::stats::{mb, median};
use crate::open::open;

#[derive(Debug, Args)]
pub struct GrowthArgs {
    /// A converted model with its tokenizer.json, for the input-length sweep.
    #[arg(long)]
    model: PathBuf,
    /// Input lengths in tokens.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256,512")]
    lengths: Vec<usize>,
    /// Experts per sparse layer of the random models.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,64,128,256")]
    experts: Vec<usize>,
    /// Width of the random models: d_model,d_ff.
    #[arg(long, value_delimiter = ',', default_value = "128,512")]
    width: Vec<usize>,
    /// Input length for the experts sweep.
    #[arg(long, default_value_t = 64)]
    input_tokens: usize,
    /// Tokens decoded per run.
    #[arg(long, default_value_t = 8)]
    new_tokens: usize,
    /// Measured runs per point (after a warm-up run).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where to compute.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "wgpu"])]
    backend: String,
    /// Also write the measurements as JSON here.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Where the random models are written (a temporary directory by default).
    #[arg(long)]
    work: Option<PathBuf>,
}

/// One point of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Input tokens (length sweep) or experts per layer (experts sweep).
    pub x: usize,
    pub encode_ms: f64,
    pub encode_ms_per_token: f64,
    pub decode_ms_per_token: f64,
    /// Expert shards the input needed, and their bytes.
    pub experts_fetched: usize,
    pub bytes_fetched: u64,
    pub expert_bytes_total: u64,
    pub model_bytes_total: u64,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    model: String,
    backend: &'a str,
    new_tokens: usize,
    runs: usize,
    random_width: [usize; 2],
    random_input_tokens: usize,
    lengths: Vec<Point>,
    experts: Vec<Point>,
}

fn point(m: &Switch, x: usize, ids: &[u32], args: &GrowthArgs) -> Result<Point> {
    let speed = measure(m, "", &args.backend, ids, args.new_tokens, args.runs)?;
    let store = m.store().context("a converted model")?;
    let mut files = store.loaded_files();
    files.sort();
    files.dedup();
    let manifest = store.manifest();
    let encode_ms = median(&speed.encode_ms);
    Ok(Point {
        x,
        encode_ms,
        encode_ms_per_token: encode_ms / ids.len() as f64,
        decode_ms_per_token: median(&speed.decode_ms) / args.new_tokens as f64,
        experts_fetched: files.len(),
        bytes_fetched: speed.expert_bytes_fetched.unwrap_or(0),
        expert_bytes_total: manifest
            .files
            .iter()
            .filter(|f| f.name.starts_with("experts/"))
            .map(|f| f.bytes)
            .sum(),
        model_bytes_total: manifest.total_bytes(),
    })
}

/// `len` ids of the fixed text set (repeated as needed), EOS last.
fn text_ids(tokenizer: &Tokenizer, len: usize, eos: u32) -> Result<Vec<u32>> {
    let mut stream = Vec::new();
    while stream.len() < len {
        for text in TEXTS {
            let ids = tokenizer.encode(text)?;
            stream.extend(ids.into_iter().filter(|&i| i != eos));
        }
    }
    stream.truncate(len - 1);
    stream.push(eos);
    Ok(stream)
}

fn print_table(title: &str, x_name: &str, points: &[Point]) {
    println!("### {title}\n");
    println!(
        "| {x_name} | encoder ms | encoder ms / token | decode ms / token | experts fetched | expert MB fetched | all expert MB | model MB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for p in points {
        println!(
            "| {} | {:.1} | {:.2} | {:.2} | {} | {} | {} | {} |",
            p.x,
            p.encode_ms,
            p.encode_ms_per_token,
            p.decode_ms_per_token,
            p.experts_fetched,
            mb(p.bytes_fetched),
            mb(p.expert_bytes_total),
            mb(p.model_bytes_total)
        );
    }
    println!();
}

pub fn run(args: &GrowthArgs) -> Result<()> {
    let started = Instant::now();
    anyhow::ensure!(args.width.len() == 2, "--width takes d_model,d_ff");
    let tokenizer = Tokenizer::from_bytes(
        &std::fs::read(args.model.join("tokenizer.json"))
            .with_context(|| format!("{} needs its tokenizer.json", args.model.display()))?,
    )?;
    let mut lengths = Vec::new();
    for &len in &args.lengths {
        anyhow::ensure!(len >= 2, "input lengths start at 2 tokens");
        // A fresh store per point: the bytes are what this input alone needs.
        let m = open(&args.model, &args.backend, StoreOptions::default())?;
        let ids = text_ids(&tokenizer, len, m.config().eos_token_id)?;
        lengths.push(point(&m, len, &ids, args)?);
        eprintln!(
            "growth: {len} tokens done ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    let model_name = args.model.display().to_string();
    print_table(
        &format!(
            "Input length ({model_name}, {}, {} decoded tokens)",
            args.backend, args.new_tokens
        ),
        "input tokens",
        &lengths,
    );

    let work = args.work.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("switchscope-growth-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&work);
    let [d_model, d_ff] = [args.width[0], args.width[1]];
    let mut experts = Vec::new();
    for &n in &args.experts {
        let dir = random_model(&work, n, d_model, d_ff, 2048)?;
        let m = open(&dir, &args.backend, StoreOptions::default())?;
        let ids = random_prompts(2048, 1, args.input_tokens - 1, 3).remove(0);
        experts.push(point(&m, n, &ids, args)?);
        drop(m);
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!(
            "growth: {n} experts done ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    print_table(
        &format!(
            "Experts per layer (random models: d_model {d_model}, d_ff {d_ff}, 4 + 4 blocks, every other one sparse; {} input tokens, {} decoded, int8 experts, {})",
            args.input_tokens, args.new_tokens, args.backend
        ),
        "experts per layer",
        &experts,
    );
    if let Some(path) = &args.json_out {
        let report = Report {
            model: model_name,
            backend: &args.backend,
            new_tokens: args.new_tokens,
            runs: args.runs,
            random_width: [d_model, d_ff],
            random_input_tokens: args.input_tokens,
            lengths,
            experts,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("bench growth: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
