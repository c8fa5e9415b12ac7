//! The shipped default model (`public/models/switchscope-mini/`): its manifest decodes into the
//! architecture and every file matches its size and SHA-256; our runtime reproduces what
//! PyTorch computes with the shipped weights (`tests/fixtures/switchscope-mini/reference.json`,
//! made by `tools/model/make_reference.py`): the same expert for every token in every sparse
//! layer, and the same greedy output, which is also the float32 checkpoint's.

use std::path::{Path, PathBuf};

use serde_json::Value;
use switchscope_core::backend::cpu_device;
use switchscope_core::formats::converted::read_verified;
use switchscope_core::formats::manifest::Manifest;
use switchscope_core::formats::manifest::sha256_hex;
use switchscope_core::model::{RunOptions, StackKind, TokenBatch};
use switchscope_core::runtime::generate::GenerateOptions;
use switchscope_core::runtime::store::StoreOptions;
use switchscope_core::tokenizer::Tokenizer;

mod open;
use open::{open_eager, open_lazy};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_dir() -> PathBuf {
    root().join("public/models/switchscope-mini")
}

fn reference() -> Value {
    let path = root().join("tests/fixtures/switchscope-mini/reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

fn manifest() -> Manifest {
    Manifest::from_json(&std::fs::read_to_string(model_dir().join("manifest.json")).unwrap())
        .unwrap()
}

#[test]
fn the_shipped_manifest_describes_the_architecture_and_every_file_checks_out() {
    let m = manifest();
    let reference = reference();
    let text = std::fs::read(model_dir().join("manifest.json")).unwrap();
    assert_eq!(
        reference["manifest_sha256"].as_str().unwrap(),
        sha256_hex(&text),
        "reference.json belongs to this model directory"
    );
    let c = &m.config;
    let sparse: Vec<(String, usize)> = [StackKind::Encoder, StackKind::Decoder]
        .into_iter()
        .flat_map(|s| {
            c.sparse_blocks(s)
                .into_iter()
                .map(move |b| (s.as_str().to_owned(), b))
        })
        .collect();
    let want: Vec<(String, usize)> = reference["sparse_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["stack"].as_str().unwrap().to_owned(),
                l["block"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(sparse, want);
    assert_eq!(m.experts.len(), sparse.len() * c.num_experts);
    assert!((8..=32).contains(&c.num_experts));
    for file in &m.files {
        read_verified(&model_dir(), &m, &file.name).unwrap();
    }
    let total = m.total_bytes();
    assert!(
        total <= 16 << 20,
        "the shipped model is {total} bytes, over 16 MiB"
    );
    // The tokenizer and the model agree on the vocabulary and the special ids.
    let tokenizer = std::fs::read(model_dir().join(m.tokenizer.as_deref().unwrap())).unwrap();
    let tokenizer: Value = serde_json::from_slice(&tokenizer).unwrap();
    let pieces = tokenizer["model"]["vocab"].as_array().unwrap().len();
    assert_eq!(pieces, c.vocab_size);
    assert_eq!((c.pad_token_id, c.eos_token_id), (0, 1));
}

#[test]
fn our_runtime_routes_and_generates_like_pytorch_on_the_shipped_weights() {
    let reference = reference();
    let device = cpu_device();
    let (_, model) = open_eager(&model_dir(), &device).unwrap();
    let tokenizer =
        Tokenizer::from_bytes(&std::fs::read(model_dir().join("tokenizer.json")).unwrap()).unwrap();
    let examples = reference["examples"].as_array().unwrap();
    assert!(examples.len() >= 5, "fill-in examples from several sources");
    for ex in examples {
        let source = ex["source"].as_str().unwrap();
        let input_ids = ids(&ex["input_ids"]);
        assert_eq!(
            tokenizer.encode(ex["text"].as_str().unwrap()).unwrap(),
            input_ids,
            "{source}: our tokenizer"
        );
        let shipped = &ex["shipped"];
        let decoder_ids = ids(&shipped["decoder_input_ids"]);
        let input = TokenBatch::new(std::slice::from_ref(&input_ids), 0).unwrap();
        let decoder = TokenBatch::new(std::slice::from_ref(&decoder_ids), 0).unwrap();
        let out =
            pollster::block_on(model.forward(&input, &decoder, RunOptions::default())).unwrap();
        let want = shipped["routing"].as_array().unwrap();
        assert_eq!(out.routing[0].len(), want.len());
        for (got, want) in out.routing[0].iter().zip(want) {
            let expected: Vec<i32> = want["expert"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| i32::try_from(e.as_i64().unwrap()).unwrap())
                .collect();
            if got.expert != expected {
                let t = got
                    .expert
                    .iter()
                    .zip(&expected)
                    .position(|(a, b)| a != b)
                    .unwrap();
                panic!(
                    "{source}: {} {} token {t}: expert {} here, {} in PyTorch (top-2 gap there {})",
                    want["stack"], want["block"], got.expert[t], expected[t], want["gap"][t]
                );
            }
        }

        let options = GenerateOptions {
            max_new_tokens: reference["generate"]["max_new_tokens"].as_u64().unwrap() as usize,
            ..GenerateOptions::default()
        };
        let generation =
            pollster::block_on(model.generate(&input_ids, &options, |_| std::future::ready(true)))
                .unwrap();
        assert_eq!(
            generation.output_ids,
            ids(&shipped["output_ids"]),
            "{source}: greedy output on the int8 shards"
        );
        assert_eq!(
            generation.output_ids,
            ids(&ex["f32"]["output_ids"]),
            "{source}: the float32 checkpoint's greedy output"
        );
    }
}

/// Loaded lazily (as the browser does), the model gives the same text and fetches only the
/// experts its routers chose.
#[test]
fn lazily_loaded_it_reads_only_the_routed_experts() {
    let reference = reference();
    let ex = &reference["examples"][0];
    let input_ids = ids(&ex["input_ids"]);
    let (_, model, store) =
        open_lazy(&model_dir(), &cpu_device(), StoreOptions::default()).unwrap();
    let options = GenerateOptions {
        max_new_tokens: 16,
        ..GenerateOptions::default()
    };
    let generation =
        pollster::block_on(model.generate(&input_ids, &options, |_| std::future::ready(true)))
            .unwrap();
    assert_eq!(generation.output_ids, ids(&ex["shipped"]["output_ids"]));
    let mut routed: Vec<String> = generation
        .encoder_routing
        .iter()
        .chain(generation.steps.iter().flat_map(|s| &s.routing))
        .flat_map(|l| {
            l.expert.iter().filter(|&&e| e >= 0).map(move |&e| {
                switchscope_core::formats::manifest::expert_file(l.stack, l.block, e as usize)
            })
        })
        .collect();
    routed.sort();
    routed.dedup();
    let mut loaded = store.loaded_files();
    loaded.sort();
    assert_eq!(loaded, routed);
    assert!(loaded.len() < manifest().experts.len());
}
