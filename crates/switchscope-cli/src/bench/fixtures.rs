//! What the benchmarks measure on: a fixed text set, random Hugging Face checkpoints for a
//! config, the models converted from them, and random prompts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use switchscope_core::formats::convert::{ConvertOptions, convert};
use switchscope_core::formats::converted::ConvertedDir;
use switchscope_core::formats::quant::Scheme;
use switchscope_core::formats::safetensors::{OutTensor, serialize, write_file};
use switchscope_core::formats::shard::{dense_tensors, expert_prefix};
use switchscope_core::formats::tensor::TensorSource;
use switchscope_core::model::{StackKind, SwitchConfig};
use switchscope_core::runtime::generate::SplitMix64;

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

/// One of the page's prompt presets, as `bench shards` runs it.
#[derive(Debug)]
pub struct Preset {
    pub label: &'static str,
    pub prompt: &'static str,
    pub max_new_tokens: usize,
}

/// The page's prompt presets (`web/src/presets.rs`, which the CLI does not link; a test below
/// checks that the two lists agree).
pub const PRESETS: [Preset; 5] = [
    Preset {
        label: "English → Spanish",
        prompt: "translate English to Spanish: And Ephron answered Abraham, saying unto him,",
        max_new_tokens: 64,
    },
    Preset {
        label: "Spanish → English",
        prompt: "translate Spanish to English: Y respondieron los hijos de Heth á Abraham, y dijéronle:",
        max_new_tokens: 64,
    },
    Preset {
        label: "Modernize",
        prompt: "modernize: And Ephron answered Abraham, saying unto him,",
        max_new_tokens: 64,
    },
    Preset {
        label: "Fill in prose",
        prompt: "Fellow-Citizens of the Senate and of the House of <extra_id_0>:",
        max_new_tokens: 24,
    },
    Preset {
        label: "Fill in Python",
        prompt: "def __init__(self, <extra_id_0>):\n    self.name = name",
        max_new_tokens: 24,
    },
];

/// A session's prompts for the expert cache: the fixed text set, then the default model's tasks
/// (translation both ways, modernizing, filling in) and the page's default prompt, one after
/// another in one store.
pub const SESSION: [&str; 15] = [
    TEXTS[0],
    TEXTS[1],
    TEXTS[2],
    TEXTS[3],
    TEXTS[4],
    TEXTS[5],
    TEXTS[6],
    TEXTS[7],
    "translate English to Spanish: And God said, Let there be light: and there was light.",
    "translate Spanish to English: En el principio creó Dios los cielos y la tierra.",
    "modernize: And the earth was without form, and void; and darkness was upon the face of the deep.",
    "translate English to Spanish: Blessed are the meek: for they shall inherit the earth.",
    "translate Spanish to English: Y llamó Dios á la luz Día, y á las tinieblas llamó Noche.",
    "Fellow-Citizens of the Senate and of the House of <extra_id_0>:",
    "modernize: Thou shalt love thy neighbour as thyself.",
];

/// Random values with standard deviation about `scale` (sum of uniforms).
pub(super) fn random_values(rng: &mut SplitMix64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let s: f64 = (0..4).map(|_| rng.next_f64() - 0.5).sum();
            (s * 1.732) as f32 * scale
        })
        .collect()
}

/// Every tensor name a config implies, with its shape: the dense ones, then each expert's.
pub(super) fn checkpoint_names(config: &SwitchConfig) -> Vec<(String, Vec<usize>)> {
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
    names
}

/// The values of a named tensor of a given shape.
type Values<'a> = dyn FnMut(&str, &[usize]) -> Result<Vec<f32>> + 'a;

/// Values per safetensors file of a written checkpoint unless told otherwise (256 MB of f32).
pub(super) const SHARD_VALUES: usize = 64 << 20;

/// Writes `config_text` and one f32 tensor per name (values from `values`), one safetensors
/// file per `shard_values` values (with an index when more than one), as transformers writes
/// them.
pub(super) fn write_checkpoint(
    config_text: &str,
    out: &Path,
    names: Vec<(String, Vec<usize>)>,
    values: &mut Values<'_>,
    shard_values: usize,
) -> Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("config.json"), config_text)?;
    let mut files: Vec<Vec<OutTensor>> = vec![Vec::new()];
    let mut in_file = 0usize;
    for (name, shape) in names {
        let n: usize = shape.iter().product();
        if in_file + n > shard_values && !files.last().expect("one").is_empty() {
            files.push(Vec::new());
            in_file = 0;
        }
        in_file += n;
        let data = values(&name, &shape)?;
        anyhow::ensure!(
            data.len() == n,
            "{name}: {} values for shape {shape:?}",
            data.len()
        );
        files.last_mut().expect("one").push(OutTensor {
            name,
            dtype: "F32",
            shape,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
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

/// Writes `config_text` and random weights for every tensor the config implies, in files of
/// `shard_values` values at most.
pub(super) fn random_checkpoint(
    config: &SwitchConfig,
    config_text: &str,
    out: &Path,
    seed: u64,
    shard_values: usize,
) -> Result<()> {
    let mut rng = SplitMix64::new(seed);
    write_checkpoint(
        config_text,
        out,
        checkpoint_names(config),
        &mut |name, shape| {
            let n = shape.iter().product();
            Ok(if name.ends_with("layer_norm.weight") {
                vec![1.0; n]
            } else {
                random_values(&mut rng, n, 0.05)
            })
        },
        shard_values,
    )
}

/// A model's Hugging Face config: `experts` experts in every other block of `layers` encoder
/// and `layers` decoder blocks, width `d_model`, `d_ff` (heads of 64, or 16 below 256).
pub(super) fn random_config(
    experts: usize,
    d_model: usize,
    d_ff: usize,
    layers: usize,
    vocab: usize,
) -> String {
    let d_kv = if d_model >= 256 { 64 } else { 16 };
    serde_json::json!({
        "architectures": ["SwitchTransformersForConditionalGeneration"],
        "model_type": "switch_transformers",
        "vocab_size": vocab, "d_model": d_model, "d_ff": d_ff, "d_kv": d_kv,
        "num_heads": d_model / d_kv,
        "num_layers": layers, "num_decoder_layers": layers,
        "num_sparse_encoder_layers": layers / 2, "num_sparse_decoder_layers": layers / 2,
        "encoder_sparse_step": 2, "decoder_sparse_step": 2,
        "num_experts": experts, "expert_capacity": 64,
        "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "dense_act_fn": "relu", "tie_word_embeddings": true, "router_bias": false,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0
    })
    .to_string()
}

/// A random model with `experts` experts per sparse layer (4 + 4 blocks, every other one
/// sparse), converted to int8 experts in `work/random-{experts}`; the checkpoint is removed.
pub(super) fn random_model(
    work: &Path,
    experts: usize,
    d_model: usize,
    d_ff: usize,
    vocab: usize,
) -> Result<PathBuf> {
    let text = random_config(experts, d_model, d_ff, 4, vocab);
    let config = SwitchConfig::from_json(&text)?;
    let hf = work.join(format!("random-{experts}-hf"));
    let out = work.join(format!("random-{experts}"));
    random_checkpoint(&config, &text, &hf, experts as u64, SHARD_VALUES)?;
    int8_from(&hf, &out)?;
    Ok(out)
}

/// `count` random prompts of `len` ids from `[3, vocab)` followed by EOS (fixed seed).
pub(super) fn random_prompts(vocab: u32, count: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| 3 + (rng.next_u64() % u64::from(vocab - 3)) as u32)
                .chain([1])
                .collect()
        })
        .collect()
}

/// The converted model at `model` upcycled: each expert duplicated into `k` (weights plus noise
/// of `noise / 10` times their RMS), each router row too (plus `noise` times its RMS), so that the copies split what the
/// original expert received along directions of the hidden state: a model with `k` times the
/// experts whose routing keeps the original's structure. Written to `work/upcycled-{k}` with
/// int8 experts (the checkpoint is removed); the tokenizer is the original's.
pub(super) fn upcycled_model(work: &Path, model: &Path, k: usize, noise: f32) -> Result<PathBuf> {
    let mut source = ConvertedDir::open(model)?;
    let mut config = source.manifest.config.clone();
    let original = config.num_experts;
    config.num_experts *= k;
    let mut json = serde_json::to_value(&config)?;
    if let Some(object) = json.as_object_mut() {
        object.insert(
            "architectures".into(),
            serde_json::json!(["SwitchTransformersForConditionalGeneration"]),
        );
        object.insert("model_type".into(), "switch_transformers".into());
    }
    let hf = work.join(format!("upcycled-{k}-hf"));
    let out = work.join(format!("upcycled-{k}"));
    let _ = std::fs::remove_dir_all(&hf);
    let mut rng = SplitMix64::new(k as u64);
    // new expert e is a copy of the original's expert e / k
    let noisy = |rng: &mut SplitMix64, values: Vec<f32>, scale: f32| {
        let rms = (values.iter().map(|v| v * v).sum::<f32>() / values.len().max(1) as f32).sqrt();
        let n = random_values(rng, values.len(), scale * rms);
        values
            .into_iter()
            .zip(n)
            .map(|(v, n)| v + n)
            .collect::<Vec<f32>>()
    };
    write_checkpoint(
        &serde_json::to_string_pretty(&json)?,
        &hf,
        checkpoint_names(&config),
        &mut |name, shape| {
            if name.ends_with(".router.classifier.weight") {
                let t = source
                    .get(name)?
                    .with_context(|| format!("the model has no tensor {name}"))?;
                let d_model = t.shape[1];
                let rows: Vec<f32> = (0..original * k)
                    .flat_map(|e| t.data[(e / k) * d_model..(e / k + 1) * d_model].to_vec())
                    .collect();
                return Ok(noisy(&mut rng, rows, noise));
            }
            let Some((prefix, rest)) = name.split_once(".experts.expert_") else {
                let t = source
                    .get(name)?
                    .with_context(|| format!("the model has no tensor {name}"))?;
                anyhow::ensure!(t.shape == shape, "{name} has shape {:?}", t.shape);
                return Ok(t.data);
            };
            let (e, suffix) = rest.split_once('.').context("an expert tensor name")?;
            let e: usize = e.parse()?;
            let from = format!("{prefix}.experts.expert_{}.{suffix}", e / k);
            let t = source
                .get(&from)?
                .with_context(|| format!("the model has no tensor {from}"))?;
            Ok(noisy(&mut rng, t.data, noise / 10.0))
        },
        SHARD_VALUES,
    )?;
    if let Some(tokenizer) = &source.manifest.tokenizer {
        std::fs::copy(model.join(tokenizer), hf.join("tokenizer.json"))?;
    }
    let _ = std::fs::remove_dir_all(&out);
    int8_from(&hf, &out)?;
    Ok(out)
}

/// Converts the checkpoint at `hf` to int8 experts at `out`, then removes the checkpoint.
fn int8_from(hf: &Path, out: &Path) -> Result<()> {
    convert(
        hf,
        out,
        &ConvertOptions {
            experts: Scheme::Int8,
            ..ConvertOptions::default()
        },
        &mut |_, _, _| {},
    )?;
    std::fs::remove_dir_all(hf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::PRESETS;

    /// The presets here are the page's: same prompts, same max new tokens, none missing.
    #[test]
    fn presets_match_the_pages() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/src/presets.rs");
        let page = std::fs::read_to_string(path).expect("web/src/presets.rs");
        assert_eq!(
            page.matches("        prompt: \"").count(),
            PRESETS.len(),
            "preset count"
        );
        for preset in &PRESETS {
            let at = page
                .find(&format!("prompt: {:?},", preset.prompt))
                .unwrap_or_else(|| panic!("the page has no preset {:?}", preset.prompt));
            let rest = &page[at..];
            let tokens = rest["max_new_tokens: ".len() + rest.find("max_new_tokens: ").unwrap()..]
                .split(',')
                .next()
                .unwrap();
            assert_eq!(
                tokens,
                preset.max_new_tokens.to_string(),
                "{}",
                preset.label
            );
        }
    }
}
