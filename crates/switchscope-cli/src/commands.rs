//! The subcommands.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::sync::Arc;
use switchscope_core::BackendKind;
use switchscope_core::backend;
use switchscope_core::model::generate::{self, GenerateOptions, Sampling};
use switchscope_core::model::spans;

use switchscope_core::model::weights::{load_converted_lazy_with, load_model_dir};
use switchscope_core::model::{LayerRouting, RunOptions, SwitchConfig, SwitchModel, TokenBatch};
use switchscope_core::shards::convert::{ConvertOptions, Phase};
use switchscope_core::shards::manifest::Manifest;
use switchscope_core::shards::quant::Scheme;
use switchscope_core::shards::report::{QuantizationReport, quantization_report};
use switchscope_core::shards::store::{ExpertStore, StoreOptions};
use switchscope_core::tensor::Device;
use switchscope_core::tokenizer::Tokenizer;

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
    /// Convert a Hugging Face checkpoint into a Switchscope model directory.
    Convert(ConvertArgs),
    /// Describe a converted model directory: config, sizes per part, experts per layer.
    Inspect(InspectArgs),
    /// Measurements (not tests): shard traffic and hit rates, random checkpoints.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

#[derive(Debug, Args)]
struct ConvertArgs {
    /// The Hugging Face checkpoint directory.
    #[arg(long)]
    from: PathBuf,
    /// The directory to create (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// How expert weights are stored.
    #[arg(long, default_value = "int8", value_parser = ["int8", "int4", "f16", "f32"])]
    quant: String,
    /// Values per scale along the input dimension (int8, int4).
    #[arg(long, default_value_t = 32)]
    group_size: usize,
    /// Keep scales in f32 instead of f16.
    #[arg(long)]
    f32_scales: bool,
    /// How the dense weights are stored (int8: every matrix but the routers and the position
    /// biases, block-wise like the experts).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "int8"])]
    dense: String,
    /// Same as `--dense f16`.
    #[arg(long, conflicts_with = "dense")]
    f16_dense: bool,
    /// Then measure what quantization cost on a fixed input set: per-tensor relative error,
    /// routing agreement and greedy next-token agreement with the checkpoint.
    #[arg(long)]
    report: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// A converted model directory.
    dir: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ModelArgs {
    /// A Hugging Face checkpoint directory or a converted Switchscope model directory.
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
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "prompt",
        conflicts_with = "prompt"
    )]
    input_ids: Vec<u32>,
    /// Text to encode with the model's tokenizer.json (instead of --input-ids).
    #[arg(long)]
    prompt: Option<String>,
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
    /// Stop once every masked span of the input has its answer (at the sentinel after the
    /// input's last one), as the app does, instead of at `</s>` like transformers.
    #[arg(long)]
    stop_at_spans: bool,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Forward(args) => forward(args),
        Command::Generate(args) => generate(args),
        Command::Convert(args) => convert(args),
        Command::Inspect(args) => inspect(args),
        Command::Bench(command) => crate::bench::run(command),
    }
}

/// A loaded model; for a converted model directory, the store its experts come from on demand.
pub(crate) type Opened = (SwitchConfig, SwitchModel, Option<Arc<ExpertStore>>);

fn open(args: &ModelArgs) -> Result<Opened> {
    open_model(&args.model, &args.backend)
}

/// Opens a checkpoint or converted model directory on `backend` (`cpu` or `wgpu`).
pub(crate) fn open_model(dir: &std::path::Path, backend: &str) -> Result<Opened> {
    open_model_with(dir, backend, StoreOptions::default())
}

/// [`open_model`] with the expert store's options (converted models).
pub(crate) fn open_model_with(
    dir: &std::path::Path,
    backend: &str,
    options: StoreOptions,
) -> Result<Opened> {
    let kind: BackendKind = backend.parse()?;
    let device: Device = pollster::block_on(backend::gpu_device(kind))?;
    let context = || format!("loading {}", dir.display());
    if dir.join("manifest.json").is_file() {
        let (config, model, store) =
            load_converted_lazy_with(dir, &device, options).with_context(context)?;
        return Ok((config, model, Some(store)));
    }
    let (config, model) = load_model_dir(dir, &device).with_context(context)?;
    Ok((config, model, None))
}

/// The shards read so far (converted models only), as JSON.
fn shards_json(store: Option<&Arc<ExpertStore>>) -> serde_json::Value {
    store.map_or(serde_json::Value::Null, |s| {
        serde_json::json!(s.loaded_files())
    })
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
    let (config, model, store) = open(&args.model)?;
    let input = TokenBatch::new(&[args.input_ids], config.pad_token_id)?;
    let decoder = TokenBatch::new(&[args.decoder_input_ids], config.pad_token_id)?;
    let options = RunOptions {
        capacity_factor: args.model.capacity_factor,
        ..RunOptions::default()
    };
    let out = pollster::block_on(model.forward(&config, &input, &decoder, options))?;
    let routing = &out.routing[0];
    if args.model.json {
        let json = serde_json::json!({
            "logits": out.logits[0],
            "routing": routing_json(routing),
            "shards_loaded": shards_json(store.as_ref()),
        });
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
    let (config, model, store) = open(&args.model)?;
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
            ..RunOptions::default()
        },
        stop_at: None,
    };
    let json = args.model.json;
    let tokenizer = match &args.prompt {
        Some(_) => Some(load_tokenizer(&args.model.model)?),
        None => None,
    };
    let mut input_ids = match (&args.prompt, &tokenizer) {
        (Some(prompt), Some(t)) => t.encode(prompt)?,
        _ => args.input_ids.clone(),
    };
    if let Some(before) = generate::fit_input(
        &mut input_ids,
        generate::MAX_INPUT_TOKENS,
        config.eos_token_id,
    ) {
        eprintln!(
            "warning: the input has {before} tokens; only the first {} are used",
            generate::MAX_INPUT_TOKENS
        );
    }
    let sentinels = tokenizer
        .as_ref()
        .map(Tokenizer::sentinel_ids)
        .unwrap_or_default();
    let options = GenerateOptions {
        stop_at: args
            .stop_at_spans
            .then(|| spans::end_of_answer(&input_ids, &sentinels))
            .flatten(),
        ..options
    };
    let generation =
        pollster::block_on(model.generate(&config, &input_ids, &options, |progress| {
            if let generate::Progress::Step(step) = progress
                && !json
                && tokenizer.is_none()
            {
                println!("token {}", step.token);
            }
            std::future::ready(true)
        }))?;
    let text = match &tokenizer {
        Some(t) => Some(t.decode(&generation.output_ids)?),
        None => None,
    };
    // The prompt with its masked spans filled in, when it has any.
    let filled = match (&args.prompt, &tokenizer) {
        (Some(prompt), Some(t)) if spans::has_spans(&input_ids, &sentinels) => {
            let pieces = spans::fill_in_answer(
                prompt,
                &generation.output_ids,
                &sentinels,
                (config.pad_token_id, config.eos_token_id),
                |ids| t.decode(ids).unwrap_or_default(),
            );
            Some(spans::fill_in_text(&pieces))
        }
        _ => None,
    };
    let mut routing = generation.encoder_routing.clone();
    for step in &generation.steps {
        routing.extend(step.routing.iter().cloned());
    }
    if json {
        let out = serde_json::json!({
            "input_ids": input_ids,
            "output_ids": generation.output_ids,
            "routing": routing_json(&routing),
            "shards_loaded": shards_json(store.as_ref()),
        });
        let mut out = out;
        if let Some(text) = &text {
            out["output_text"] = serde_json::Value::from(text.clone());
        }
        if let Some(filled) = &filled {
            out["filled_in"] = serde_json::Value::from(filled.clone());
        }
        println!("{out}");
    } else {
        if let Some(text) = &text {
            println!("{text}");
        }
        if let Some(filled) = &filled {
            println!("filled in: {filled}");
        }
        println!("output ids: {:?}", generation.output_ids);
        print_routing(&routing);
    }
    Ok(())
}

/// The tokenizer of a model directory (`tokenizer.json`; converted directories keep it too).
fn load_tokenizer(dir: &std::path::Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        bail!(
            "--prompt needs a tokenizer: {} has no tokenizer.json (use --input-ids)",
            dir.display()
        );
    }
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Tokenizer::from_bytes(&bytes)?)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

fn convert(args: ConvertArgs) -> Result<()> {
    let options = ConvertOptions {
        experts: Scheme::parse(&args.quant)?,
        group_size: args.group_size,
        f16_scales: !args.f32_scales,
        dense: if args.f16_dense {
            Scheme::F16
        } else {
            Scheme::parse(&args.dense)?
        },
    };
    let started = std::time::Instant::now();
    let mut bar = Progress::new(!args.json);
    let summary = switchscope_core::shards::convert::convert(
        &args.from,
        &args.out,
        &options,
        &mut |phase, done, total| {
            bar.update(phase, done, total);
        },
    )
    .with_context(|| format!("converting {}", args.from.display()))?;
    bar.finish();
    let m = &summary.manifest;
    let total = m.total_bytes();
    let seconds = started.elapsed().as_secs_f64();
    let report = if args.report {
        let inputs = report_inputs(&args.from, &summary.manifest.config)?;
        Some(pollster::block_on(quantization_report(
            &args.from, &args.out, &inputs, 8,
        ))?)
    } else {
        None
    };
    if args.json {
        let out = serde_json::json!({
            "out": args.out,
            "files": m.files.len(),
            "bytes": total,
            "source_f32_bytes": summary.source_f32_bytes,
            "compression": summary.source_f32_bytes as f64 / total as f64,
            "seconds": seconds,
            "report": report,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "wrote {} files, {} ({} as f32: {:.2}× smaller) to {} in {seconds:.1} s",
        m.files.len(),
        human_bytes(total),
        human_bytes(summary.source_f32_bytes),
        summary.source_f32_bytes as f64 / total as f64,
        args.out.display()
    );
    if let Some(r) = report {
        print_report(&r, options.experts);
    }
    Ok(())
}

/// The fixed input set of `--report`: the benchmark texts when the checkpoint has a
/// tokenizer, else 16 fixed pseudo-random id sequences.
fn report_inputs(from: &std::path::Path, config: &SwitchConfig) -> Result<Vec<Vec<u32>>> {
    if from.join("tokenizer.json").is_file() {
        let tokenizer = load_tokenizer(from)?;
        return crate::bench::TEXTS
            .iter()
            .map(|t| Ok(tokenizer.encode(t)?))
            .collect();
    }
    let mut rng = switchscope_core::model::generate::SplitMix64::new(11);
    let vocab = config.vocab_size as u64;
    Ok((0..16)
        .map(|_| {
            (0..24)
                .map(|_| 3 + (rng.next_u64() % (vocab - 3)) as u32)
                .chain([config.eos_token_id])
                .collect()
        })
        .collect())
}

fn print_report(r: &QuantizationReport, scheme: Scheme) {
    println!(
        "\nquantization report ({} tensors differ from the checkpoint):",
        r.tensors.len()
    );
    println!(
        "  relative error: mean {:.4}, largest {:.4}",
        r.mean_error(),
        r.tensors.first().map_or(0.0, |t| t.relative_error)
    );
    for t in r.tensors.iter().take(5) {
        println!("    {:.4}  {}", t.relative_error, t.name);
    }
    let goal = match scheme {
        Scheme::Int8 => Some(0.99),
        Scheme::Int4 => Some(0.97),
        _ => None,
    };
    let verdict = goal.map_or(String::new(), |g| {
        let met = if r.routing_agreement >= g {
            "met"
        } else {
            "NOT met"
        };
        format!(" (goal ≥ {:.0} %: {met})", g * 100.0)
    });
    println!(
        "  routing agreement: {:.2} % of {} decisions{verdict}",
        100.0 * r.routing_agreement,
        r.routing_decisions
    );
    println!(
        "  greedy next-token agreement: {:.2} % of {} positions",
        100.0 * r.next_token_agreement,
        r.next_token_positions
    );
}

fn inspect(args: InspectArgs) -> Result<()> {
    let path = args.dir.join("manifest.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let m = Manifest::from_json(&text)?;
    let expert_bytes: u64 = m
        .experts
        .iter()
        .filter_map(|e| m.file(&e.file))
        .map(|f| f.bytes)
        .sum();
    let dense_bytes = m.file(&m.dense).map_or(0, |f| f.bytes);
    let mut layers: Vec<serde_json::Value> = Vec::new();
    for stack in [
        switchscope_core::model::StackKind::Encoder,
        switchscope_core::model::StackKind::Decoder,
    ] {
        for block in m.config.sparse_blocks(stack) {
            let files: Vec<_> = m
                .experts
                .iter()
                .filter(|e| e.stack == stack && e.block == block)
                .collect();
            let bytes: u64 = files
                .iter()
                .filter_map(|e| m.file(&e.file))
                .map(|f| f.bytes)
                .sum();
            layers.push(serde_json::json!({ "stack": stack.as_str(), "block": block, "experts": files.len(), "bytes": bytes }));
        }
    }
    let c = &m.config;
    if args.json {
        let out = serde_json::json!({
            "format": m.format, "version": m.version, "config": c, "quantization": m.quantization,
            "tokenizer": m.tokenizer, "parameters": c.parameter_count(),
            "bytes": { "total": m.total_bytes(), "dense": dense_bytes, "experts": expert_bytes },
            "expert_bytes_each": if m.experts.is_empty() { 0 } else { expert_bytes / m.experts.len() as u64 },
            "sparse_layers": layers,
        });
        println!("{out}");
        return Ok(());
    }
    let q = &m.quantization;
    println!("{} format v{}", m.format, m.version);
    println!(
        "model: d_model {}, d_ff {}, heads {}×{}, {}+{} blocks, {} experts, vocab {}, {} parameters",
        c.d_model,
        c.d_ff,
        c.num_heads,
        c.d_kv,
        c.num_layers,
        c.decoder_layers(),
        c.num_experts,
        c.vocab_size,
        c.parameter_count()
    );
    println!(
        "weights: experts {} (group {}, {} scales), dense {}; tokenizer: {}",
        q.experts.as_str(),
        q.group_size,
        q.scale_dtype,
        q.dense.as_str(),
        m.tokenizer.as_deref().unwrap_or("none")
    );
    println!(
        "size: {} in all: dense {}, experts {} ({} files, {} each)",
        human_bytes(m.total_bytes()),
        human_bytes(dense_bytes),
        human_bytes(expert_bytes),
        m.experts.len(),
        human_bytes(if m.experts.is_empty() {
            0
        } else {
            expert_bytes / m.experts.len() as u64
        })
    );
    for l in &layers {
        println!(
            "  {:>7} block {:>2}: {} experts, {}",
            l["stack"].as_str().unwrap_or(""),
            l["block"],
            l["experts"],
            human_bytes(l["bytes"].as_u64().unwrap_or(0))
        );
    }
    Ok(())
}

/// A progress bar per conversion phase on stderr (redrawn in place on a terminal, one line per
/// phase otherwise).
struct Progress {
    visible: bool,
    tty: bool,
    phase: Option<Phase>,
    started: std::time::Instant,
    drawn: usize,
}

impl Progress {
    fn new(visible: bool) -> Self {
        use std::io::IsTerminal;
        Self {
            visible,
            tty: std::io::stderr().is_terminal(),
            phase: None,
            started: std::time::Instant::now(),
            drawn: usize::MAX,
        }
    }

    fn update(&mut self, phase: Phase, done: usize, total: usize) {
        if !self.visible {
            return;
        }
        if self.phase != Some(phase) {
            self.finish();
            self.phase = Some(phase);
            self.started = std::time::Instant::now();
            self.drawn = usize::MAX;
        }
        // Redraw on a terminal; elsewhere only the phase's end.
        if !self.tty && done < total {
            return;
        }
        let width = 30;
        let filled = (done * width).checked_div(total).unwrap_or(width);
        if filled == self.drawn && done < total {
            return;
        }
        self.drawn = filled;
        eprint!(
            "\r{:>9} [{}{}] {done}/{total} {:.1} s",
            format!("{phase:?}").to_lowercase(),
            "=".repeat(filled),
            " ".repeat(width - filled),
            self.started.elapsed().as_secs_f64()
        );
    }

    fn finish(&mut self) {
        if self.visible && self.phase.is_some() {
            eprintln!();
        }
        self.phase = None;
    }
}
