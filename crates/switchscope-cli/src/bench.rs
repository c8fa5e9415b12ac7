//! `switchscope bench`: measurements that are not tests. Each prints Markdown tables (the
//! figures in docs/BENCHMARKS.md come from these commands).
//!
//! - `bench shards`: bytes fetched per prompt set vs the whole model, as experts per layer grow
//!   (random models of the same width), and the hit rate of the expert store under budgets, with
//!   and without pre-gating prefetch.
//! - `bench random-checkpoint`: writes a random-weight Hugging Face checkpoint for a config (to
//!   convert at real scale and measure the converter's time and memory).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use switchscope_core::backend::cpu_device;
use switchscope_core::model::generate::{GenerateOptions, SplitMix64};
use switchscope_core::model::weights::load_converted_lazy_with;
use switchscope_core::model::{StackKind, SwitchConfig};
use switchscope_core::shards::convert::{ConvertOptions, convert, dense_tensors, expert_prefix};
use switchscope_core::shards::quant::Scheme;
use switchscope_core::shards::safetensors::{OutTensor, serialize, write_file};
use switchscope_core::shards::store::{StoreOptions, StoreStats};
use switchscope_core::tokenizer::Tokenizer;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Bytes fetched vs experts per layer, and hit rates under expert budgets.
    Shards(ShardsArgs),
    /// Write a random-weight Hugging Face checkpoint (config.json + model.safetensors).
    RandomCheckpoint(RandomArgs),
}

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

#[derive(Debug, Args)]
pub struct RandomArgs {
    /// A Hugging Face config.json.
    #[arg(long)]
    config: PathBuf,
    /// The directory to create.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Shards(args) => shards(&args),
        BenchCommand::RandomCheckpoint(args) => {
            let text = std::fs::read_to_string(&args.config)
                .with_context(|| format!("reading {}", args.config.display()))?;
            let config = SwitchConfig::from_json(&text)?;
            random_checkpoint(&config, &text, &args.out, args.seed)?;
            println!(
                "wrote {} ({} parameters)",
                args.out.display(),
                config.parameter_count()
            );
            Ok(())
        }
    }
}

/// A fixed text set: English prose, Spanish, code, numbers.
pub const TEXTS: [&str; 8] = [
    "The ship sailed out of the harbour at dawn, and the <extra_id_0> watched from the shore.",
    "In the beginning was the word, and the word was <extra_id_0> with the people.",
    "Y dijo Dios: sea la luz; y fue la <extra_id_0>. Y vio Dios que la luz era buena.",
    "def mean(values):\n    return sum(values) / <extra_id_0>(values)",
    "for i in range(10):\n    print(i * <extra_id_0>)",
    "The budget rose from 1,250 million in 1998 to 3,480 million in <extra_id_0>.",
    "Congress shall make no law respecting an establishment of <extra_id_0>.",
    "Le système de paquets Debian <extra_id_0> les dépendances entre logiciels.",
];

/// Random values with standard deviation about `scale` (sum of uniforms).
fn random_values(rng: &mut SplitMix64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let s: f64 = (0..4).map(|_| rng.next_f64() - 0.5).sum();
            (s * 1.732) as f32 * scale
        })
        .collect()
}

/// Writes `config_text` and random weights for every tensor the config implies, one
/// safetensors file per 64 M values (with an index when more than one).
fn random_checkpoint(
    config: &SwitchConfig,
    config_text: &str,
    out: &Path,
    seed: u64,
) -> Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("config.json"), config_text)?;
    let mut names = dense_tensors(config);
    for stack in [StackKind::Encoder, StackKind::Decoder] {
        for block in config.sparse_blocks(stack) {
            for e in 0..config.num_experts {
                let p = expert_prefix(stack, block, e);
                names.push((format!("{p}.wi.weight"), vec![config.d_ff, config.d_model]));
                names.push((format!("{p}.wo.weight"), vec![config.d_model, config.d_ff]));
            }
        }
    }
    let mut rng = SplitMix64::new(seed);
    let mut files: Vec<Vec<OutTensor>> = vec![Vec::new()];
    let mut in_file = 0usize;
    for (name, shape) in names {
        let n: usize = shape.iter().product();
        if in_file + n > 64 << 20 && !files.last().expect("one").is_empty() {
            files.push(Vec::new());
            in_file = 0;
        }
        in_file += n;
        let values = if name.ends_with("layer_norm.weight") {
            vec![1.0; n]
        } else {
            random_values(&mut rng, n, 0.05)
        };
        files.last_mut().expect("one").push(OutTensor {
            name,
            dtype: "F32",
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
    }
    let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
    if files.len() == 1 {
        write_file(
            &out.join("model.safetensors"),
            &serialize(&files[0], &metadata),
        )?;
        return Ok(());
    }
    let mut weight_map = serde_json::Map::new();
    let count = files.len();
    for (i, tensors) in files.iter().enumerate() {
        let name = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
        for t in tensors {
            weight_map.insert(t.name.clone(), serde_json::Value::String(name.clone()));
        }
        write_file(&out.join(&name), &serialize(tensors, &metadata))?;
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(
        out.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index)?,
    )?;
    Ok(())
}

/// A small model's config with `experts` experts per sparse layer (same width for every count).
fn random_config(experts: usize) -> String {
    serde_json::json!({
        "architectures": ["SwitchTransformersForConditionalGeneration"],
        "model_type": "switch_transformers",
        "vocab_size": 512, "d_model": 64, "d_ff": 256, "d_kv": 16, "num_heads": 4,
        "num_layers": 4, "num_decoder_layers": 4,
        "num_sparse_encoder_layers": 2, "num_sparse_decoder_layers": 2,
        "encoder_sparse_step": 2, "decoder_sparse_step": 2,
        "num_experts": experts, "expert_capacity": 64,
        "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "dense_act_fn": "relu", "tie_word_embeddings": true, "router_bias": false,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0
    })
    .to_string()
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
    let (config, model, store) = load_converted_lazy_with(dir, &device, options)?;
    let generate = GenerateOptions {
        max_new_tokens: new_tokens,
        ..GenerateOptions::default()
    };
    for ids in prompts {
        pollster::block_on(model.generate(&config, ids, &generate, |_| std::future::ready(true)))?;
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

fn random_prompts(vocab: u32, count: usize, len: usize) -> Vec<Vec<u32>> {
    let mut rng = SplitMix64::new(7);
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| 3 + (rng.next_u64() % u64::from(vocab - 3)) as u32)
                .chain([1])
                .collect()
        })
        .collect()
}

fn mb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / 1e6)
}

fn shards(args: &ShardsArgs) -> Result<()> {
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
        let text = random_config(experts);
        let config = SwitchConfig::from_json(&text)?;
        let hf = work.join(format!("random-{experts}-hf"));
        let out = work.join(format!("random-{experts}"));
        random_checkpoint(&config, &text, &hf, experts as u64)?;
        convert(
            &hf,
            &out,
            &ConvertOptions {
                experts: Scheme::Int8,
                ..ConvertOptions::default()
            },
            &mut |_, _, _| {},
        )?;
        models.push((
            format!("random, {experts} experts/layer"),
            out,
            random_prompts(512, 8, 24),
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
        let manifest = switchscope_core::shards::manifest::Manifest::from_json(&text)?;
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
    let manifest = switchscope_core::shards::manifest::Manifest::from_json(&text)?;
    Ok(manifest.experts.len() as u64)
}
