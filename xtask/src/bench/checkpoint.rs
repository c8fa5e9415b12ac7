//! `checkpoint`: bytes over the network when a Hugging Face checkpoint is read in place from
//! its URL. Random checkpoints with switch-base's layer sizes and 64 and 128 experts per sparse
//! layer (reduced depth) are served by our HTTP server; `switchscope bench remote` runs the
//! fixed text set against their URLs, and the server's own count of body bytes sent must equal
//! the sum of what the CLI says it received.

use std::sync::atomic::Ordering;

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::http::{self, Site};

/// switch-base's widths (d_model 768, d_ff 3072, 12 heads, its vocabulary), 2 + 2 blocks with
/// one sparse layer each.
fn config(experts: usize) -> Value {
    serde_json::json!({
        "architectures": ["SwitchTransformersForConditionalGeneration"],
        "model_type": "switch_transformers",
        "vocab_size": 32128, "d_model": 768, "d_ff": 3072, "d_kv": 64, "num_heads": 12,
        "num_layers": 2, "num_decoder_layers": 2,
        "num_sparse_encoder_layers": 1, "num_sparse_decoder_layers": 1,
        "encoder_sparse_step": 2, "decoder_sparse_step": 2,
        "num_experts": experts, "expert_capacity": 64,
        "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "dense_act_fn": "relu", "tie_word_embeddings": true, "router_bias": false,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0
    })
}

impl Bench {
    pub(super) fn checkpoint(&mut self) -> Result<()> {
        let dir = self.out.join("checkpoints");
        std::fs::create_dir_all(&dir)?;
        let mut section = vec![
            "## 7. A checkpoint read in place\n".to_owned(),
            "Random checkpoints with switch-base's widths (d_model 768, d_ff 3072, 12 heads, vocabulary 32,128; f32; 2 + 2 blocks, one sparse layer in each stack), served by `cargo xtask serve --dir`'s server; `switchscope bench remote` opens each by URL on the CPU, once per text (a first visit) and once for the set in one store, with the default model's tokenizer. Server-counted bytes equal the CLI's.\n".to_owned(),
        ];
        for experts in [64, 128] {
            let name = format!("base-{experts}");
            let out = dir.join(&name);
            let config_path = dir.join(format!("{name}.config.json"));
            let text = config(experts).to_string();
            // The checkpoint is kept between runs while its config is the same.
            let fresh = std::fs::read_to_string(out.join("config.json")).ok() != Some(text.clone());
            if fresh {
                if out.exists() {
                    std::fs::remove_dir_all(&out)?;
                }
                std::fs::write(&config_path, &text)?;
                tools::run(
                    self.cli()
                        .args(["bench", "random-checkpoint", "--config"])
                        .arg(&config_path)
                        .arg("--out")
                        .arg(&out),
                )?;
                std::fs::write(out.join("config.json"), &text)?;
            }
            std::fs::copy(
                root().join(MODEL).join("tokenizer.json"),
                out.join("tokenizer.json"),
            )?;
            let mut site = Site::new(root().join("dist"));
            site.mounts.push(("ck".to_owned(), dir.clone()));
            let sent = site.sent.clone();
            let addr = http::spawn(site)?;
            let json = self.out.join(format!("remote-{name}.json"));
            let table = stdout_of(
                self.cli()
                    .args(["bench", "remote", "--model"])
                    .arg(format!("http://{addr}/ck/{name}/"))
                    .arg("--json-out")
                    .arg(&json),
            )?;
            let measured = read_json(&json)?;
            let received: u64 = measured["runs"]
                .as_array()
                .context("runs")?
                .iter()
                .map(|r| r["network_bytes"].as_u64().unwrap_or(0))
                .sum();
            let served = sent.load(Ordering::SeqCst);
            if served != received {
                bail!("{name}: the server sent {served} body bytes, the CLI counted {received}");
            }
            let size: u64 = measured["files"]
                .as_array()
                .context("files")?
                .iter()
                .map(|f| f["bytes"].as_u64().unwrap_or(0))
                .sum();
            section.push(format!(
                "#### {experts} experts per sparse layer ({} files, {:.2} GB of weights; {} bytes served in all, as counted)\n\n{table}",
                measured["files"].as_array().map_or(0, Vec::len),
                size as f64 / 1e9,
                served
            ));
        }
        self.report.push(section.join("\n"));
        Ok(())
    }
}
