//! `bench remote`: what reading a Hugging Face checkpoint in place moves over the network. For
//! each text of the fixed set, the checkpoint's URL is opened afresh (a first visit) and the
//! text generated from; then the whole set in one store (a session). Bytes are counted as the
//! answers arrive: the length probes and headers, the dense tensors, the routed experts' ranges.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use switchscope_core::runtime::generate::GenerateOptions;
use switchscope_core::runtime::store::StoreOptions;
use switchscope_core::tokenizer::Tokenizer;
use switchscope_core::wire::spans::end_of_answer;

use super::fixtures::TEXTS;
use super::stats::mb;
use crate::open::{Opened, Ranged, is_url, open_model};

#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The `http(s)://` URL of a Hugging Face checkpoint directory (with `tokenizer.json`).
    #[arg(long)]
    model: PathBuf,
    /// New tokens per text (decoding also stops once the text's masked span has its answer).
    #[arg(long, default_value_t = 8)]
    max_new_tokens: usize,
    /// Also write the measurements as JSON here.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// What one run moved.
struct Moved {
    /// Bytes over the network: probes, headers, dense tensors, experts.
    network: u64,
    requests: u64,
    dense: u64,
    /// Experts fetched and their bytes.
    experts: u64,
    expert_bytes: u64,
}

fn open(args: &RemoteArgs) -> Result<(Opened, Ranged, Tokenizer)> {
    let mut opened = open_model(&args.model, "cpu", StoreOptions::default())?;
    let ranged = opened.ranged.take().with_context(|| {
        format!(
            "{} is a converted model: bench remote measures a checkpoint read by byte ranges",
            args.model.display()
        )
    })?;
    let tokenizer = Tokenizer::from_bytes(
        opened
            .tokenizer
            .as_deref()
            .context("the checkpoint directory has no tokenizer.json")?,
    )?;
    Ok((opened, ranged, tokenizer))
}

fn generate(opened: &Opened, tokenizer: &Tokenizer, text: &str, new_tokens: usize) -> Result<()> {
    let ids = tokenizer.encode(text)?;
    let options = GenerateOptions {
        max_new_tokens: new_tokens,
        stop_at: end_of_answer(&ids, &tokenizer.sentinel_ids()),
        ..GenerateOptions::default()
    };
    pollster::block_on(
        opened
            .switch
            .generate(&ids, &options, |_| std::future::ready(true)),
    )?;
    Ok(())
}

fn moved(opened: &Opened, ranged: &Ranged) -> Result<Moved> {
    let stats = opened.switch.store().context("a store")?.stats();
    Ok(Moved {
        network: ranged.traffic.bytes.load(Ordering::SeqCst),
        requests: ranged.traffic.requests.load(Ordering::SeqCst),
        dense: ranged.dense_bytes,
        experts: stats.fetches,
        expert_bytes: stats.bytes_fetched,
    })
}

pub fn run(args: &RemoteArgs) -> Result<()> {
    if !is_url(&args.model) {
        bail!("--model must be the http(s):// URL of a checkpoint directory");
    }
    let mut rows = Vec::new();
    let mut files = Vec::new();
    let mut all_experts = 0;
    for text in TEXTS {
        let (opened, ranged, tokenizer) = open(args)?;
        files.clone_from(&ranged.files);
        all_experts = opened
            .switch
            .store()
            .map_or(0, |s| s.manifest().experts.len());
        generate(&opened, &tokenizer, text, args.max_new_tokens)?;
        rows.push((text.to_owned(), moved(&opened, &ranged)?));
    }
    let (opened, ranged, tokenizer) = open(args)?;
    for text in TEXTS {
        generate(&opened, &tokenizer, text, args.max_new_tokens)?;
    }
    rows.push((
        format!("all {} in one store", TEXTS.len()),
        moved(&opened, &ranged)?,
    ));

    let size: u64 = files.iter().map(|(_, len)| len).sum();
    println!(
        "| text | experts fetched / all | MB over the network | of which dense | of which experts | of which headers and probes | requests | / file MB | share |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, (text, m)) in rows.iter().enumerate() {
        let label = if i < TEXTS.len() {
            let short: String = text.chars().take(28).collect();
            format!("{}: {}…", i + 1, short.replace('\n', " "))
        } else {
            text.clone()
        };
        println!(
            "| {label} | {} / {all_experts} | {} | {} | {} | {} | {} | {} | {:.1} % |",
            m.experts,
            mb(m.network),
            mb(m.dense),
            mb(m.expert_bytes),
            mb(m.network - m.dense - m.expert_bytes),
            m.requests,
            mb(size),
            100.0 * m.network as f64 / size as f64,
        );
    }
    println!();
    if let Some(path) = &args.json_out {
        let json = json!({
            "model": args.model,
            "files": files.iter().map(|(name, len)| json!({"name": name, "bytes": len})).collect::<Vec<_>>(),
            "experts": all_experts,
            "runs": rows.iter().map(|(text, m)| json!({
                "text": text,
                "network_bytes": m.network,
                "requests": m.requests,
                "dense_bytes": m.dense,
                "experts_fetched": m.experts,
                "expert_bytes": m.expert_bytes,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
