//! `forward` and `generate`: run a model and show its routing.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use switchscope_core::Switch;
use switchscope_core::model::{RunOptions, TokenBatch};
use switchscope_core::runtime::generate::{GenerateOptions, Progress};
use switchscope_core::runtime::policy::Policy;
use switchscope_core::runtime::store::{ExpertStore, StoreOptions};
use switchscope_core::tokenizer::Tokenizer;
use switchscope_core::wire::spans;
use switchscope_core::wire::{MAX_INPUT_TOKENS, Sampling, fit_input};

use crate::display::{print_routing, routing_json, shards_json};
use crate::open::{Opened, is_url, load_tokenizer, open_model};

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A Hugging Face checkpoint directory or a converted Switchscope model directory, or the
    /// `http(s)://` URL of either (a checkpoint is then read by byte ranges: only the experts
    /// the router picks are downloaded).
    #[arg(long)]
    pub model: PathBuf,
    /// Where to compute.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "wgpu"])]
    pub backend: String,
    /// Expert capacity = ceil(tokens / experts × factor) instead of the config's.
    #[arg(long)]
    pub capacity_factor: Option<f64>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Keep at most this many MB (MiB, as the page's `budget_mb=`) of a converted model's
    /// experts resident (as decoded on the backend), giving experts up as `--cache-policy` says;
    /// no limit by default.
    #[arg(long)]
    pub expert_budget_mb: Option<f64>,
    /// Which resident expert goes when the budget is full: lru, lfu, least-stale, stale-lfu or
    /// next-use, each optionally followed by +pins.
    #[arg(long, default_value_t = Policy::default())]
    pub cache_policy: Policy,
}

#[derive(Debug, Args)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Encoder input ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub input_ids: Vec<u32>,
    /// Decoder input ids, comma-separated (usually starting with decoder_start_token_id).
    #[arg(long, value_delimiter = ',', required = true)]
    pub decoder_input_ids: Vec<u32>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Encoder input ids, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "prompt",
        conflicts_with = "prompt"
    )]
    pub input_ids: Vec<u32>,
    /// Text to encode with the model's tokenizer.json (instead of --input-ids).
    #[arg(long)]
    pub prompt: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub max_new_tokens: usize,
    /// Pick the most probable token (the default unless --temperature is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    pub greedy: bool,
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Recompute the whole prefix each step instead of using the KV cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Stop once every masked span of the input has its answer (at the sentinel after the
    /// input's last one), as the app does, instead of at `</s>` like transformers.
    #[arg(long)]
    pub stop_at_spans: bool,
}

impl ModelArgs {
    /// The model these arguments name, on their backend.
    fn open(&self) -> Result<Switch> {
        Ok(self.open_with_tokenizer()?.switch)
    }

    /// The model, with the tokenizer it came with when opened from a URL.
    fn open_with_tokenizer(&self) -> Result<Opened> {
        let budget_bytes = match self.expert_budget_mb {
            Some(mb) if !(mb.is_finite() && mb > 0.0) => {
                bail!("--expert-budget-mb must be a positive number of MB, not {mb}")
            }
            Some(mb) => Some((mb * 1_048_576.0) as u64),
            None => None,
        };
        let store = StoreOptions {
            budget_bytes,
            policy: self.cache_policy,
            ..StoreOptions::default()
        };
        open_model(&self.model, &self.backend, store)
    }
}

pub fn forward(args: ForwardArgs) -> Result<()> {
    let switch = args.model.open()?;
    let config = switch.config();
    let input = TokenBatch::new(&[args.input_ids], config.pad_token_id)?;
    let decoder = TokenBatch::new(&[args.decoder_input_ids], config.pad_token_id)?;
    let options = RunOptions {
        capacity_factor: args.model.capacity_factor,
        ..RunOptions::default()
    };
    let out = pollster::block_on(switch.forward(&input, &decoder, options))?;
    let routing = &out.routing[0];
    if args.model.json {
        let json = serde_json::json!({
            "logits": out.logits[0],
            "routing": routing_json(routing),
            "shards_loaded": shards_json(switch.store()),
        });
        println!("{json}");
    } else {
        for (i, row) in out.logits[0].iter().enumerate() {
            let best = switchscope_core::kernels::reference::argmax(row);
            println!(
                "decoder position {i}: argmax token {best} (logit {:.4})",
                row[best]
            );
        }
        print_routing(routing);
    }
    Ok(())
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    let Opened {
        switch,
        tokenizer: fetched_tokenizer,
        ..
    } = args.model.open_with_tokenizer()?;
    let config = switch.config();
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
        ignore_eos: false,
    };
    let json = args.model.json;
    let tokenizer = match (&args.prompt, fetched_tokenizer) {
        (Some(_), Some(bytes)) => Some(Tokenizer::from_bytes(&bytes)?),
        (Some(_), None) if is_url(&args.model.model) => {
            bail!(
                "--prompt needs a tokenizer: {} has no tokenizer.json (use --input-ids)",
                args.model.model.display()
            )
        }
        (Some(_), None) => Some(load_tokenizer(&args.model.model)?),
        (None, _) => None,
    };
    let mut input_ids = match (&args.prompt, &tokenizer) {
        (Some(prompt), Some(t)) => t.encode(prompt)?,
        _ => args.input_ids.clone(),
    };
    if let Some(before) = fit_input(&mut input_ids, MAX_INPUT_TOKENS, config.eos_token_id) {
        eprintln!(
            "warning: the input has {before} tokens; only the first {MAX_INPUT_TOKENS} are used"
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
    let generation = pollster::block_on(switch.generate(&input_ids, &options, |progress| {
        if let Progress::Step(step) = progress
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
            "shards_loaded": shards_json(switch.store()),
            "expert_cache": cache_json(switch.store()),
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
        if let Some(store) = switch.store() {
            let stats = store.stats();
            println!(
                "expert cache ({}): {} of {} requests found their expert resident, {} evictions",
                store.options().policy,
                stats.hits,
                stats.requests,
                stats.evictions
            );
        }
    }
    Ok(())
}

/// The expert store's policy, budget and counts (null for a checkpoint read whole).
fn cache_json(store: Option<&std::sync::Arc<ExpertStore>>) -> serde_json::Value {
    store.map_or(serde_json::Value::Null, |s| {
        let stats = s.stats();
        serde_json::json!({
            "policy": s.options().policy.to_string(),
            "budget_bytes": s.options().budget_bytes,
            "requests": stats.requests,
            "hits": stats.hits,
            "evictions": stats.evictions,
        })
    })
}
