//! The subcommands.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use switchscope_core::BackendKind;
use switchscope_core::backend;
use switchscope_core::model::generate::{GenerateOptions, Sampling};
use switchscope_core::model::weights::load_hf_dir;
use switchscope_core::model::{LayerRouting, RunOptions, SwitchConfig, SwitchModel, TokenBatch};
use switchscope_core::tensor::Device;

#[derive(Debug, Parser)]
#[command(
    name = "switchscope",
    version,
    about = "Run Switch Transformers and see their routing"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One teacher-forced pass: logits for every decoder position and the routing.
    Forward(ForwardArgs),
    /// Generate a continuation, greedy or sampled.
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
struct ModelArgs {
    /// A Hugging Face checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    /// Where to compute.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "wgpu"])]
    backend: String,
    /// Expert capacity = ceil(tokens / experts × factor) instead of the config's.
    #[arg(long)]
    capacity_factor: Option<f64>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ForwardArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Encoder input ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    input_ids: Vec<u32>,
    /// Decoder input ids, comma-separated (usually starting with decoder_start_token_id).
    #[arg(long, value_delimiter = ',', required = true)]
    decoder_input_ids: Vec<u32>,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Encoder input ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    input_ids: Vec<u32>,
    #[arg(long, default_value_t = 20)]
    max_new_tokens: usize,
    /// Pick the most probable token (the default unless --temperature is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    greedy: bool,
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recompute the whole prefix each step instead of using the KV cache.
    #[arg(long)]
    no_cache: bool,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Forward(args) => forward(args),
        Command::Generate(args) => generate(args),
    }
}

fn open(args: &ModelArgs) -> Result<(SwitchConfig, SwitchModel)> {
    let kind: BackendKind = args.backend.parse()?;
    let device: Device = pollster::block_on(backend::gpu_device(kind))?;
    let (config, model) = load_hf_dir(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    Ok((config, model))
}

/// The routing of one sequence as the JSON contract names it.
#[derive(Debug, Serialize)]
struct RoutingJson<'a> {
    stack: &'a str,
    block: usize,
    expert: &'a [i32],
    probs: &'a [Vec<f32>],
    weight: &'a [f32],
    capacity: usize,
}

fn routing_json(routing: &[LayerRouting]) -> Vec<RoutingJson<'_>> {
    routing
        .iter()
        .map(|r| RoutingJson {
            stack: r.stack.as_str(),
            block: r.block,
            expert: &r.expert,
            probs: &r.probs,
            weight: &r.weight,
            capacity: r.capacity,
        })
        .collect()
}

fn print_routing(routing: &[LayerRouting]) {
    for r in routing {
        let experts: Vec<String> = r
            .expert
            .iter()
            .zip(&r.weight)
            .map(|(e, w)| {
                if *e < 0 {
                    "drop".to_owned()
                } else {
                    format!("{e}({w:.2})")
                }
            })
            .collect();
        println!(
            "{:>7} block {:>2}: {}",
            r.stack.as_str(),
            r.block,
            experts.join(" ")
        );
    }
}

fn forward(args: ForwardArgs) -> Result<()> {
    let (config, model) = open(&args.model)?;
    let input = TokenBatch::new(&[args.input_ids], config.pad_token_id)?;
    let decoder = TokenBatch::new(&[args.decoder_input_ids], config.pad_token_id)?;
    let options = RunOptions {
        capacity_factor: args.model.capacity_factor,
    };
    let out = pollster::block_on(model.forward(&config, &input, &decoder, options))?;
    let routing = &out.routing[0];
    if args.model.json {
        let json = serde_json::json!({ "logits": out.logits[0], "routing": routing_json(routing) });
        println!("{json}");
    } else {
        for (i, row) in out.logits[0].iter().enumerate() {
            let best = switchscope_core::model::generate::argmax(row);
            println!(
                "decoder position {i}: argmax token {best} (logit {:.4})",
                row[best]
            );
        }
        print_routing(routing);
    }
    Ok(())
}

fn generate(args: GenerateArgs) -> Result<()> {
    let (config, model) = open(&args.model)?;
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    let sampling = match (args.greedy, args.temperature) {
        (false, Some(temperature)) => Sampling::Sample {
            temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        _ if args.top_k.is_some() || args.top_p.is_some() => {
            bail!("--top-k and --top-p need --temperature (sampling)")
        }
        _ => Sampling::Greedy,
    };
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling,
        use_cache: !args.no_cache,
        run: RunOptions {
            capacity_factor: args.model.capacity_factor,
        },
    };
    let json = args.model.json;
    let generation =
        pollster::block_on(model.generate(&config, &args.input_ids, &options, |step| {
            if !json {
                println!("token {}", step.token);
            }
            true
        }))?;
    let mut routing = generation.encoder_routing.clone();
    for step in &generation.steps {
        routing.extend(step.routing.iter().cloned());
    }
    if json {
        let out = serde_json::json!({
            "output_ids": generation.output_ids,
            "routing": routing_json(&routing),
        });
        println!("{out}");
    } else {
        println!("output ids: {:?}", generation.output_ids);
        print_routing(&routing);
    }
    Ok(())
}
