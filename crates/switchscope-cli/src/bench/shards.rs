//! `bench shards`: what lazy expert loading fetches, and how an expert budget behaves.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use clap::Args;
use switchscope_core::backend::cpu_device;
use switchscope_core::runtime::generate::GenerateOptions;
use switchscope_core::runtime::store::StoreOptions;
use switchscope_core::tokenizer::Tokenizer;
use switchscope_core::wire::StoreStats;
use switchscope_core::{OpenOptions, Switch};

use super::fixtures::{TEXTS, random_model, random_prompts};
use super::stats::mb;

#[derive(Debug, Args)]
pub struct ShardsArgs {
    /// Experts per sparse layer of the random models.
    #[arg(long, value_delimiter = ',', default_value = "8,32,128")]
    experts: Vec<usize>,
    /// Also measure this converted model (with its tokenizer.json) on a fixed text set.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Tokens generated per prompt.
    #[arg(long, default_value_t = 8)]
    new_tokens: usize,
    /// Where the random models are written (a temporary directory by default).
    #[arg(long)]
    work: Option<PathBuf>,
}

/// What a prompt set cost one store.
struct Outcome {
    stats: StoreStats,
    experts_hit: usize,
    expert_bytes_total: u64,
    model_bytes: u64,
}

fn measure(
    dir: &Path,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    options: StoreOptions,
) -> Result<Outcome> {
    let device = cpu_device();
    let options = OpenOptions {
        store: options,
        ..OpenOptions::default()
    };
    let switch = pollster::block_on(Switch::open(dir, &device, options))?;
    let store = switch.store().context("a converted model")?;
    let generate = GenerateOptions {
        max_new_tokens: new_tokens,
        ..GenerateOptions::default()
    };
    for ids in prompts {
        pollster::block_on(switch.generate(ids, &generate, |_| std::future::ready(true)))?;
    }
    let manifest = store.manifest();
    let mut hit = store.loaded_files();
    hit.sort();
    hit.dedup();
    let expert_bytes_total = manifest
        .files
        .iter()
        .filter(|f| f.name.starts_with("experts/"))
        .map(|f| f.bytes)
        .sum();
    Ok(Outcome {
        stats: store.stats(),
        experts_hit: hit.len(),
        expert_bytes_total,
        model_bytes: manifest.total_bytes(),
    })
}

pub fn run(args: &ShardsArgs) -> Result<()> {
    let work = args.work.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("switchscope-bench-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&work);
    let started = Instant::now();
    let mut models: Vec<(String, PathBuf, Vec<Vec<u32>>)> = Vec::new();
    if let Some(dir) = &args.model {
        let tokenizer = Tokenizer::from_bytes(&std::fs::read(dir.join("tokenizer.json"))?)?;
        let prompts = TEXTS
            .iter()
            .map(|t| tokenizer.encode(t))
            .collect::<Result<Vec<_>, _>>()?;
        models.push((dir.display().to_string(), dir.clone(), prompts));
    }
    for &experts in &args.experts {
        let out = random_model(&work, experts, 64, 256, 512)?;
        models.push((
            format!("random, {experts} experts/layer"),
            out,
            random_prompts(512, 8, 24, 7),
        ));
    }

    println!(
        "### Bytes fetched for a fixed prompt set (8 prompts, {} new tokens each, int8 experts, CPU)\n",
        args.new_tokens
    );
    println!(
        "| model | experts hit / all | expert MB fetched | all expert MB | whole model MB | fetched / whole |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, dir, prompts) in &models {
        let o = measure(dir, prompts, args.new_tokens, StoreOptions::default())?;
        let all = count_experts(dir)?;
        println!(
            "| {name} | {} / {all} | {} | {} | {} | {:.1} % |",
            o.experts_hit,
            mb(o.stats.bytes_fetched),
            mb(o.expert_bytes_total),
            mb(o.model_bytes),
            100.0 * o.stats.bytes_fetched as f64 / o.model_bytes as f64
        );
    }

    println!("\n### Hit rate under expert budgets (same prompts; the store lives across them)\n");
    println!(
        "| model | budget | prefetch | requests | hit rate | fetches | evictions | prefetched | prefetch used | prefetch waste kB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, dir, prompts) in &models {
        let n = count_experts(dir)?;
        let text = std::fs::read_to_string(dir.join("manifest.json"))?;
        let manifest = switchscope_core::formats::manifest::Manifest::from_json(&text)?;
        let c = &manifest.config;
        let per_expert = (2 * c.d_model * c.d_ff * 4) as u64;
        for share in [25u64, 50, 100] {
            for prefetch in [false, true] {
                let options = StoreOptions {
                    budget_bytes: Some(per_expert * n * share / 100),
                    prefetch,
                    ..StoreOptions::default()
                };
                let o = measure(dir, prompts, args.new_tokens, options)?;
                let s = o.stats;
                println!(
                    "| {name} | {share} % | {} | {} | {:.1} % | {} | {} | {} | {} | {:.1} |",
                    if prefetch { "on" } else { "off" },
                    s.requests,
                    100.0 * s.hits as f64 / s.requests.max(1) as f64,
                    s.fetches,
                    s.evictions,
                    s.prefetches,
                    s.prefetch_used,
                    s.prefetch_wasted_bytes as f64 / 1e3
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("bench shards: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn count_experts(dir: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(dir.join("manifest.json"))?;
    let manifest = switchscope_core::formats::manifest::Manifest::from_json(&text)?;
    Ok(manifest.experts.len() as u64)
}
