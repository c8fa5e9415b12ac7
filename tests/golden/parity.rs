//! Golden parity with Hugging Face transformers' `SwitchTransformersForConditionalGeneration`.
//!
//! The fixtures in `tests/fixtures/` are tiny random checkpoints with reference outputs
//! written by `tests/fixtures/make_fixtures.py` (transformers 5). Checked here: the routed
//! expert of every token (100 %), router probabilities, encoder states and logits (max abs
//! error ≤ 1e-4 on the CPU backend, ≤ 1e-3 on wgpu), and greedy generation with and without
//! the KV cache (identical ids).

use std::path::{Path, PathBuf};

use serde_json::Value;
use switchscope_core::BackendKind;
use switchscope_core::Switch;
use switchscope_core::backend::{cpu_device, gpu_device};
use switchscope_core::model::{LayerRouting, RunOptions, SwitchConfig, TokenBatch};
use switchscope_core::runtime::generate::GenerateOptions;
use switchscope_core::tensor::Device;

mod open;
use open::open_eager;

const CPU_TOLERANCE: f32 = 1e-4;
const GPU_TOLERANCE: f32 = 1e-3;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn reference(name: &str) -> Value {
    let path = fixtures().join(name).join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn flat(v: &Value, out: &mut Vec<f32>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flat(i, out)),
        Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
        other => panic!("not a number: {other}"),
    }
}

fn max_diff(reference: &Value, ours: &[f32], what: &str) -> f32 {
    let mut want = Vec::new();
    flat(reference, &mut want);
    assert_eq!(want.len(), ours.len(), "{what}: element count");
    want.iter()
        .zip(ours)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn load(name: &str, device: &Device) -> (SwitchConfig, Switch) {
    open_eager(&fixtures().join(name), device).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// Compares our routing of sequence `row` (all sparse layers in order) with the reference's.
fn check_routing(
    name: &str,
    ours: &[LayerRouting],
    reference: &Value,
    row: Option<usize>,
    tol: f32,
) {
    let layers = reference.as_array().unwrap();
    assert_eq!(ours.len(), layers.len(), "{name}: sparse layer count");
    for (got, want) in ours.iter().zip(layers) {
        assert_eq!(
            got.stack.as_str(),
            want["stack"].as_str().unwrap(),
            "{name}: stack order"
        );
        assert_eq!(
            got.block as u64,
            want["block"].as_u64().unwrap(),
            "{name}: block order"
        );
        let (experts, probs) = match row {
            Some(r) => (&want["expert"][r], &want["probs"][r]),
            None => (&want["expert"], &want["probs"]),
        };
        let want_experts: Vec<i64> = experts
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_i64().unwrap())
            .collect();
        let got_experts: Vec<i64> = got.expert.iter().map(|&e| i64::from(e)).collect();
        assert_eq!(
            got_experts,
            want_experts,
            "{name}: {} block {} routes differently",
            got.stack.as_str(),
            got.block
        );
        let ours: Vec<f32> = got.probs.iter().flatten().copied().collect();
        let d = max_diff(probs, &ours, "router probs");
        assert!(d <= tol, "{name}: router probabilities differ by {d}");
    }
}

async fn check_fixture(name: &str, device: &Device, tol: f32) {
    let reference = reference(name);
    let (config, model) = load(name, device);

    // A batch of two sequences of different lengths, padded, with the attention mask.
    let mask: Vec<bool> = ids(&reference["attention_mask"])
        .concat()
        .iter()
        .map(|&m| m == 1)
        .collect();
    let input = TokenBatch::new(&ids(&reference["input_ids"]), config.pad_token_id)
        .unwrap()
        .with_mask(mask)
        .unwrap();
    let decoder =
        TokenBatch::new(&ids(&reference["decoder_input_ids"]), config.pad_token_id).unwrap();
    let out = model
        .forward(&input, &decoder, RunOptions::default())
        .await
        .unwrap();
    let logits: Vec<f32> = out.logits.iter().flatten().flatten().copied().collect();
    let d = max_diff(&reference["logits"], &logits, "logits");
    assert!(
        d <= tol,
        "{name}: batch logits differ by {d} (tolerance {tol})"
    );
    for row in 0..2 {
        check_routing(
            name,
            &out.routing[row],
            &reference["routing"],
            Some(row),
            tol,
        );
    }
    let encoded = model
        .model()
        .encode(&config, &input, RunOptions::default())
        .await
        .unwrap();
    let hidden = switchscope_core::backend::read_f32(encoded.hidden)
        .await
        .unwrap();
    let d = max_diff(
        &reference["encoder_last_hidden_state"],
        &hidden,
        "encoder states",
    );
    assert!(d <= tol, "{name}: encoder states differ by {d}");

    // One unpadded sequence, as `switchscope forward` runs it.
    let single = &reference["single"];
    // Stored with a batch dimension of one.
    let input = TokenBatch::new(&ids(&single["input_ids"]), 0).unwrap();
    let decoder = TokenBatch::new(&ids(&single["decoder_input_ids"]), 0).unwrap();
    let out = model
        .forward(&input, &decoder, RunOptions::default())
        .await
        .unwrap();
    let logits: Vec<f32> = out.logits[0].iter().flatten().copied().collect();
    let d = max_diff(&single["logits"], &logits, "single logits");
    assert!(d <= tol, "{name}: single logits differ by {d}");
    check_routing(name, &out.routing[0], &single["routing"], Some(0), tol);

    // Greedy generation, with and without the cache.
    for case in reference["greedy"].as_array().unwrap() {
        let input: Vec<u32> = ids(&Value::Array(vec![case["input_ids"].clone()]))[0].clone();
        let max_new_tokens = case["max_new_tokens"].as_u64().unwrap() as usize;
        for (use_cache, key) in [(true, "output_ids_cache"), (false, "output_ids_no_cache")] {
            let options = GenerateOptions {
                max_new_tokens,
                use_cache,
                ..GenerateOptions::default()
            };
            let generation = model
                .generate(&input, &options, |_| std::future::ready(true))
                .await
                .unwrap();
            let want = ids(&Value::Array(vec![case[key].clone()]))[0].clone();
            assert_eq!(
                generation.output_ids, want,
                "{name}: greedy ({key}) for input {input:?}"
            );
        }
    }
}

fn fixture_names() -> Vec<&'static str> {
    let mut names = vec!["tiny", "tiny-drop", "tiny-sharded", "tiny-bin"];
    if fixtures().join("tiny-8/reference.json").exists() {
        names.push("tiny-8");
    }
    names
}

#[test]
fn parity_on_cpu() {
    for name in fixture_names() {
        pollster::block_on(check_fixture(name, &cpu_device(), CPU_TOLERANCE));
    }
}

#[test]
fn parity_on_wgpu() {
    let device = pollster::block_on(gpu_device(BackendKind::Wgpu))
        .expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
    for name in ["tiny", "tiny-drop"] {
        pollster::block_on(check_fixture(name, &device, GPU_TOLERANCE));
    }
}

#[test]
fn dropped_tokens_exist_in_the_drop_fixture() {
    let reference = reference("tiny-drop");
    let dropped = reference["dropped"]["encoder"].as_u64().unwrap();
    assert!(dropped > 0, "tiny-drop must drop tokens to test capacity");
}

#[test]
fn errors_name_the_problem() {
    let device = cpu_device();
    let missing = open_eager(&fixtures().join("does-not-exist"), &device).unwrap_err();
    assert!(missing.to_string().contains("config.json"), "{missing}");
    let (config, model) = load("tiny", &device);
    let bad = TokenBatch::new(&[vec![5, 100_000]], 0).unwrap();
    let err =
        pollster::block_on(model.model().encode(&config, &bad, RunOptions::default())).unwrap_err();
    assert!(err.to_string().contains("100000"), "{err}");
    assert!(TokenBatch::new(&[vec![]], 0).is_err());
}

/// Timing every block (for the app's per-layer times) observes without changing anything: one
/// time per encoder block, one per decoder block and step, and the same tokens and routing.
#[test]
fn timing_blocks_changes_no_output() {
    fn clock() -> f64 {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
            * 1e3
    }
    let device = cpu_device();
    let (config, model) = open_eager(&fixtures().join("tiny"), &device).unwrap();
    let input = vec![5, 25, 59, 107, 1];
    let plain = GenerateOptions {
        max_new_tokens: 4,
        ..GenerateOptions::default()
    };
    let timed = GenerateOptions {
        run: RunOptions {
            block_clock: Some(clock),
            ..RunOptions::default()
        },
        ..plain
    };
    let mut encoder_ms = Vec::new();
    let a =
        pollster::block_on(model.generate(&input, &plain, |_| std::future::ready(true))).unwrap();
    let b = pollster::block_on(model.generate(&input, &timed, |p| {
        if let switchscope_core::runtime::generate::Progress::Encoded { block_ms, .. } = p {
            encoder_ms = block_ms.to_vec();
        }
        std::future::ready(true)
    }))
    .unwrap();
    assert_eq!(a.output_ids, b.output_ids);
    assert_eq!(a.encoder_routing, b.encoder_routing);
    assert_eq!(encoder_ms.len(), config.num_layers);
    assert!(encoder_ms.iter().all(|&ms| ms >= 0.0));
    for (sa, sb) in a.steps.iter().zip(&b.steps) {
        assert_eq!(sa.routing, sb.routing);
        assert!(sa.block_ms.is_empty());
        assert_eq!(sb.block_ms.len(), config.decoder_layers());
    }
}
