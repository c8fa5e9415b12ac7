//! What quantization cost: per-tensor relative error of the converted weights, routing
//! agreement with the unquantized model (share of token × sparse-layer decisions sent to the
//! same expert) and greedy next-token agreement, on a fixed set of inputs.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::CoreError;
use crate::backend::cpu_device;
use crate::formats::checkpoint::open_hf_source;
use crate::formats::converted::ConvertedDir;
use crate::formats::shard::{dense_tensors, expert_prefix};
use crate::formats::tensor::TensorSource;
use crate::kernels::reference::argmax;
use crate::model::{RunOptions, TokenBatch};
use crate::runtime::generate::GenerateOptions;
use crate::runtime::{OpenOptions, Switch};

/// One tensor's error: `‖W − Ŵ‖ / ‖W‖` (Frobenius).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorError {
    pub name: String,
    pub relative_error: f64,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizationReport {
    /// Every tensor whose stored form differs from the checkpoint's, largest error first.
    pub tensors: Vec<TensorError>,
    /// Share of routing decisions (token × sparse layer, encoder and decoder) that agree.
    pub routing_agreement: f64,
    pub routing_decisions: usize,
    /// Share of decoder positions whose most probable next token agrees.
    pub next_token_agreement: f64,
    pub next_token_positions: usize,
}

impl QuantizationReport {
    /// The mean relative error over the tensors.
    pub fn mean_error(&self) -> f64 {
        if self.tensors.is_empty() {
            return 0.0;
        }
        self.tensors.iter().map(|t| t.relative_error).sum::<f64>() / self.tensors.len() as f64
    }
}

fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        diff += f64::from(x - y).powi(2);
        norm += f64::from(x).powi(2);
    }
    if norm == 0.0 {
        return diff.sqrt();
    }
    (diff / norm).sqrt()
}

/// Compares the converted model in `converted` with the checkpoint in `hf` (both on the CPU
/// backend) on `inputs`
/// (encoder ids, each ending with `</s>`). The decoder input of each comparison is the
/// unquantized model's greedy continuation of `new_tokens` tokens.
///
/// # Errors
/// Loading or running either model.
pub async fn quantization_report(
    hf: &Path,
    converted: &Path,
    inputs: &[Vec<u32>],
    new_tokens: usize,
) -> Result<QuantizationReport, CoreError> {
    let (config, mut source) = open_hf_source(hf)?;
    let mut stored = ConvertedDir::open(converted)?;
    let mut tensors = Vec::new();
    let mut names: Vec<(String, Vec<usize>)> = dense_tensors(&config);
    for e in &stored.manifest.experts.clone() {
        let p = expert_prefix(e.stack, e.block, e.expert);
        names.push((format!("{p}.wi.weight"), vec![]));
        names.push((format!("{p}.wo.weight"), vec![]));
    }
    for (name, _) in names {
        let (Some(a), Some(b)) = (source.get(&name)?, stored.get(&name)?) else {
            continue;
        };
        let error = relative_error(&a.data, &b.data);
        if error > 0.0 {
            tensors.push(TensorError {
                name,
                relative_error: error,
            });
        }
    }
    tensors.sort_by(|a, b| b.relative_error.total_cmp(&a.relative_error));

    let device = cpu_device();
    let reference = Switch::open(hf, &device, OpenOptions::default()).await?;
    let eager = OpenOptions {
        eager: true,
        ..OpenOptions::default()
    };
    let quantized = Switch::open(converted, &device, eager).await?;
    let options = GenerateOptions {
        max_new_tokens: new_tokens,
        ..GenerateOptions::default()
    };
    let (mut same, mut total, mut next_same, mut next_total) = (0, 0, 0, 0);
    for ids in inputs {
        let greedy = reference
            .generate(ids, &options, |_| std::future::ready(true))
            .await?;
        let input = TokenBatch::new(std::slice::from_ref(ids), config.pad_token_id)?;
        let mut decoder = greedy.output_ids.clone();
        if decoder.len() > 1 {
            decoder.pop();
        }
        let decoder = TokenBatch::new(&[decoder], config.pad_token_id)?;
        let a = reference
            .forward(&input, &decoder, RunOptions::default())
            .await?;
        let b = quantized
            .forward(&input, &decoder, RunOptions::default())
            .await?;
        for (la, lb) in a.routing[0].iter().zip(&b.routing[0]) {
            for (ea, eb) in la.chosen.iter().zip(&lb.chosen) {
                total += 1;
                same += usize::from(ea == eb);
            }
        }
        for (ra, rb) in a.logits[0].iter().zip(&b.logits[0]) {
            next_total += 1;
            next_same += usize::from(argmax(ra) == argmax(rb));
        }
    }
    Ok(QuantizationReport {
        tensors,
        routing_agreement: same as f64 / total.max(1) as f64,
        routing_decisions: total,
        next_token_agreement: next_same as f64 / next_total.max(1) as f64,
        next_token_positions: next_total,
    })
}
