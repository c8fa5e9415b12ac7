//! `inspect`: what a converted model directory holds.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use switchscope_core::formats::manifest::Manifest;

use crate::display::human_bytes;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A converted model directory.
    pub dir: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn inspect(args: InspectArgs) -> Result<()> {
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
