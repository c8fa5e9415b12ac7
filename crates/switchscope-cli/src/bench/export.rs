//! `bench export-hf`: a converted model as a Hugging Face checkpoint, every tensor in f32 under
//! its checkpoint name (quantized experts dequantized), with a `config.json` that transformers
//! reads. Other engines then run exactly the weights Switchscope runs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use switchscope_core::formats::converted::ConvertedDir;
use switchscope_core::formats::tensor::TensorSource;

use super::fixtures::{SHARD_VALUES, checkpoint_names, write_checkpoint};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A converted Switchscope model directory.
    #[arg(long)]
    model: PathBuf,
    /// The directory to create.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let mut source = ConvertedDir::open(&args.model)
        .with_context(|| format!("opening {}", args.model.display()))?;
    let config = source.manifest.config.clone();
    let mut json = serde_json::to_value(&config)?;
    let object = json
        .as_object_mut()
        .context("the config serializes to an object")?;
    object.insert(
        "architectures".into(),
        serde_json::json!(["SwitchTransformersForConditionalGeneration"]),
    );
    object.insert("model_type".into(), "switch_transformers".into());
    if args.out.exists() {
        anyhow::bail!("{} already exists", args.out.display());
    }
    write_checkpoint(
        &serde_json::to_string_pretty(&json)?,
        &args.out,
        checkpoint_names(&config),
        &mut |name, shape| {
            let t = source
                .get(name)?
                .with_context(|| format!("the model has no tensor {name}"))?;
            anyhow::ensure!(
                t.shape == shape,
                "{name} has shape {:?}, expected {shape:?}",
                t.shape
            );
            Ok(t.data)
        },
        SHARD_VALUES,
    )?;
    if let Some(tokenizer) = &source.manifest.tokenizer {
        std::fs::copy(args.model.join(tokenizer), args.out.join("tokenizer.json"))?;
    }
    println!(
        "wrote {} ({} parameters, f32)",
        args.out.display(),
        config.parameter_count()
    );
    Ok(())
}
