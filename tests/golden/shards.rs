//! Converting the fixture checkpoints into the shard format and loading them back: exact for
//! f32, within the stated agreement for int8 and int4; bad shards give typed errors.

use std::path::{Path, PathBuf};

use switchscope_core::CoreError;
use switchscope_core::backend::cpu_device;
use switchscope_core::formats::convert::{ConvertOptions, convert};
use switchscope_core::formats::manifest::Manifest;
use switchscope_core::formats::quant::Scheme;
use switchscope_core::model::{RunOptions, TokenBatch};
use switchscope_core::runtime::store::StoreOptions;

mod open;
use open::{open_eager, open_lazy};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchscope-shards-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn convert_to(from: &str, scheme: Scheme, tag: &str) -> PathBuf {
    let out = scratch(tag);
    let options = ConvertOptions {
        experts: scheme,
        ..ConvertOptions::default()
    };
    convert(&fixture(from), &out, &options, &mut |_, _, _| {}).unwrap();
    out
}

/// Sequences to compare routing on: the fixture's inputs and a fixed set of id sequences.
fn inputs() -> Vec<Vec<u32>> {
    let mut rows: Vec<Vec<u32>> = (0..12u32)
        .map(|s| {
            (0..16u32)
                .map(|i| 3 + (s * 31 + i * 17 + i * i * 7) % 120)
                .chain([1])
                .collect()
        })
        .collect();
    rows.push(vec![5, 25, 59, 107, 1]);
    rows
}

/// Routing agreement (fraction of token × sparse-layer decisions equal) and greedy next-token
/// agreement of converted model `b` against checkpoint `a`.
fn agreement(a: &Path, b: &Path) -> (f64, f64) {
    let r = pollster::block_on(switchscope_core::eval::report::quantization_report(
        a,
        b,
        &inputs(),
        3,
    ))
    .unwrap();
    (r.routing_agreement, r.next_token_agreement)
}

#[test]
fn f32_conversion_is_exact_and_quantized_ones_agree() {
    let hf = fixture("tiny");
    let f32_dir = convert_to("tiny", Scheme::F32, "f32");
    let (routing, next) = agreement(&hf, &f32_dir);
    assert_eq!(
        (routing, next),
        (1.0, 1.0),
        "f32 shards must reproduce the checkpoint"
    );

    let int8 = convert_to("tiny", Scheme::Int8, "int8");
    let (routing, next) = agreement(&hf, &int8);
    eprintln!("int8: routing agreement {routing:.4}, next-token agreement {next:.4}");
    assert!(routing >= 0.99, "int8 routing agreement {routing}");

    let int4 = convert_to("tiny", Scheme::Int4, "int4");
    let (routing, next) = agreement(&hf, &int4);
    eprintln!("int4: routing agreement {routing:.4}, next-token agreement {next:.4}");
    assert!(routing >= 0.97, "int4 routing agreement {routing}");

    // Sizes: int4 experts are smaller than int8, which are smaller than f32.
    let size = |dir: &Path| {
        let m = Manifest::from_json(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
            .unwrap();
        m.experts
            .iter()
            .map(|e| m.file(&e.file).unwrap().bytes)
            .sum::<u64>()
    };
    assert!(size(&int4) < size(&int8) && size(&int8) < size(&f32_dir));
    for dir in [f32_dir, int8, int4] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

fn reference_of(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn numbers(v: &serde_json::Value) -> Vec<f64> {
    match v {
        serde_json::Value::Array(items) => items.iter().flat_map(numbers).collect(),
        other => vec![other.as_f64().unwrap()],
    }
}

/// Every checkpoint format (sharded safetensors, `pytorch_model.bin` in bf16, a model with 8
/// experts in every block) converts into a model that computes what transformers computed for
/// that checkpoint (its `reference.json`): with f32 shards, the same logits within the parity
/// tests' CPU tolerance (1e-4) and the same expert for every token; and with int8 shards, the
/// sharded checkpoint, which holds `tiny`'s tensors, gives `tiny`'s shards byte for byte.
#[test]
fn every_checkpoint_format_converts() {
    for name in ["tiny-sharded", "tiny-bin", "tiny-8"] {
        let single = reference_of(name)["single"].clone();
        let row = |key: &str| -> Vec<u32> {
            numbers(&single[key][0])
                .into_iter()
                .map(|x| x as u32)
                .collect()
        };
        let out = convert_to(name, Scheme::F32, &format!("{name}-f32"));
        let (_, model) = open_eager(&out, &cpu_device()).unwrap();
        let input = TokenBatch::new(&[row("input_ids")], 0).unwrap();
        let decoder = TokenBatch::new(&[row("decoder_input_ids")], 0).unwrap();
        let got =
            pollster::block_on(model.forward(&input, &decoder, RunOptions::default())).unwrap();
        let logits: Vec<f64> = got.logits[0]
            .iter()
            .flatten()
            .map(|&x| f64::from(x))
            .collect();
        let want = numbers(&single["logits"]);
        assert_eq!(logits.len(), want.len(), "{name}: logits");
        let worst = logits
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-4, "{name}: logits differ by {worst}");
        let layers = single["routing"].as_array().unwrap();
        assert_eq!(got.routing[0].len(), layers.len(), "{name}: sparse layers");
        for (ours, theirs) in got.routing[0].iter().zip(layers) {
            let expert: Vec<i32> = numbers(&theirs["expert"][0])
                .into_iter()
                .map(|e| e as i32)
                .collect();
            assert_eq!(
                (ours.stack.as_str(), ours.block as u64, &ours.expert),
                (
                    theirs["stack"].as_str().unwrap(),
                    theirs["block"].as_u64().unwrap(),
                    &expert
                ),
                "{name}: routing"
            );
        }
        std::fs::remove_dir_all(out).unwrap();
    }

    let files = |dir: &Path| {
        let m = Manifest::from_json(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
            .unwrap();
        let mut files: Vec<(String, u64, String)> = m
            .files
            .into_iter()
            .filter(|f| f.name != "tokenizer.json")
            .map(|f| (f.name, f.bytes, f.sha256))
            .collect();
        files.sort();
        files
    };
    let single = convert_to("tiny", Scheme::Int8, "tiny-int8-single");
    let sharded = convert_to("tiny-sharded", Scheme::Int8, "tiny-int8-sharded");
    assert!(files(&single).len() > 16);
    assert_eq!(files(&sharded), files(&single));
    for dir in [single, sharded] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn bad_shards_are_typed_errors_naming_the_file() {
    let dir = convert_to("tiny", Scheme::Int8, "bad");
    let m =
        Manifest::from_json(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let shard = dir.join(&m.experts[0].file);
    let original = std::fs::read(&shard).unwrap();
    let device = cpu_device();
    let expect_shard_error = |what: &str| {
        let err = open_eager(&dir, &device).unwrap_err();
        match &err {
            CoreError::Shard { file, reason } => {
                assert_eq!(file, &m.experts[0].file, "{what}: {err}");
                assert!(reason.contains(what), "{what}: {err}");
            }
            other => panic!("{what}: expected a shard error, got {other}"),
        }
    };

    // Corrupt: same size, one byte flipped.
    let mut corrupt = original.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xFF;
    std::fs::write(&shard, &corrupt).unwrap();
    expect_shard_error("sha256");

    // Truncated.
    std::fs::write(&shard, &original[..original.len() / 2]).unwrap();
    expect_shard_error("truncated");

    // Missing.
    std::fs::remove_file(&shard).unwrap();
    expect_shard_error("cannot be read");

    // Restored: loads again.
    std::fs::write(&shard, &original).unwrap();
    open_eager(&dir, &device).unwrap();

    // A manifest naming a file outside the directory, or from a future version.
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let escaped = text.replacen(&m.experts[0].file, "../../etc/passwd", 2);
    std::fs::write(dir.join("manifest.json"), escaped).unwrap();
    let err = open_eager(&dir, &device).unwrap_err();
    assert!(
        matches!(err, CoreError::Manifest(_)) && err.to_string().contains(".."),
        "{err}"
    );
    let future = text.replacen("\"version\": 1", "\"version\": 9", 1);
    std::fs::write(dir.join("manifest.json"), future).unwrap();
    let err = open_eager(&dir, &device).unwrap_err();
    assert!(err.to_string().contains("version 9"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_existing_output_is_not_overwritten_and_failures_leave_nothing() {
    let out = scratch("exists");
    std::fs::create_dir_all(&out).unwrap();
    let err = convert(
        &fixture("tiny"),
        &out,
        &ConvertOptions::default(),
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    std::fs::remove_dir_all(&out).unwrap();

    // A bad group size fails before writing anything.
    let options = ConvertOptions {
        group_size: 12,
        ..ConvertOptions::default()
    };
    assert!(convert(&fixture("tiny"), &out, &options, &mut |_, _, _| {}).is_err());
    assert!(!out.exists());
    // (Only this conversion's: other tests of this process convert at the same time.)
    let parent = out.parent().unwrap();
    let temporary = format!(
        ".{}.partial-{}",
        out.file_name().unwrap().to_string_lossy(),
        std::process::id()
    );
    let leftovers = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy() == temporary)
        .count();
    assert_eq!(leftovers, 0, "no temporary directory is left behind");
}

/// Loaded lazily, a converted model reads exactly the shards of the experts its routers chose
/// (dropped tokens need none), and computes what the eagerly loaded model computes.
#[test]
fn lazy_loading_reads_exactly_the_routed_experts() {
    use std::collections::BTreeSet;
    use switchscope_core::formats::manifest::expert_file;

    for (fixture_name, scheme) in [("tiny", Scheme::Int8), ("tiny-drop", Scheme::Int4)] {
        let dir = convert_to(fixture_name, scheme, &format!("lazy-{fixture_name}"));
        let device = cpu_device();
        let (config, model, store) = open_lazy(&dir, &device, StoreOptions::default()).unwrap();
        assert!(
            store.loaded_files().is_empty(),
            "nothing is read before the first token"
        );

        let input = TokenBatch::new(&[vec![5, 25, 59, 107, 1]], 0).unwrap();
        let decoder = TokenBatch::new(&[vec![0, 17, 42]], 0).unwrap();
        let out =
            pollster::block_on(model.forward(&input, &decoder, RunOptions::default())).unwrap();
        let routed: BTreeSet<String> = out.routing[0]
            .iter()
            .flat_map(|layer| {
                layer
                    .expert
                    .iter()
                    .filter(|&&e| e >= 0)
                    .map(move |&e| expert_file(layer.stack, layer.block, e as usize))
            })
            .collect();
        let loaded: Vec<String> = store.loaded_files();
        let loaded_set: BTreeSet<String> = loaded.iter().cloned().collect();
        assert_eq!(loaded.len(), loaded_set.len(), "each shard is read once");
        assert_eq!(
            loaded_set, routed,
            "{fixture_name}: shards read = experts routed to"
        );
        assert!(
            loaded.len() < config.num_experts * 4,
            "a forward pass does not need every expert"
        );

        // Same numbers as loading every expert up front.
        let (_, eager) = open_eager(&dir, &device).unwrap();
        let want =
            pollster::block_on(eager.forward(&input, &decoder, RunOptions::default())).unwrap();
        assert_eq!(out.logits, want.logits);
        assert_eq!(out.routing, want.routing);

        // A second pass reads nothing new, and the store keeps no history of its hits (a
        // long session would hold one event per routed token).
        pollster::block_on(model.forward(&input, &decoder, RunOptions::default())).unwrap();
        assert_eq!(store.loaded_files().len(), loaded.len());
        assert!(store.stats().hits > 0);
        assert!(
            store.events().is_empty(),
            "events are kept only with record_events"
        );

        // A corrupt shard of an expert that is needed fails the pass with the shard's name, and
        // is not kept: once repaired, the same model succeeds.
        let (_, model, store) = open_lazy(&dir, &device, StoreOptions::default()).unwrap();
        let victim = dir.join(&loaded[0]);
        let original = std::fs::read(&victim).unwrap();
        let mut corrupt = original.clone();
        corrupt[original.len() / 2] ^= 0x55;
        std::fs::write(&victim, &corrupt).unwrap();
        let err =
            pollster::block_on(model.forward(&input, &decoder, RunOptions::default())).unwrap_err();
        assert!(
            matches!(&err, CoreError::Shard { file, .. } if *file == loaded[0]),
            "{err}"
        );
        std::fs::write(&victim, &original).unwrap();
        pollster::block_on(model.forward(&input, &decoder, RunOptions::default())).unwrap();
        assert!(store.loaded_files().contains(&loaded[0]));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Every eviction policy, under budgets of 4, 8 and 16 of the default model's 32 experts,
/// generates exactly what the unbounded store generates, and the live store's hits equal the
/// offline replay of the unbounded store's recorded trace (what `bench shards` reports is what
/// the store does); the policies, and the pins, change what is hit.
#[test]
fn every_policy_changes_no_output_and_the_replay_counts_what_the_store_does() {
    use switchscope_core::eval::cache::{Budget, replay};
    use switchscope_core::runtime::generate::GenerateOptions;
    use switchscope_core::runtime::policy::Policy;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/models/switchscope-mini");
    let device = cpu_device();
    let recording = StoreOptions {
        record_trace: true,
        ..StoreOptions::default()
    };
    let (config, free, free_store) = open_lazy(&dir, &device, recording).unwrap();
    let options = GenerateOptions {
        max_new_tokens: 8,
        ..GenerateOptions::default()
    };
    let run = |switch: &switchscope_core::Switch| {
        inputs()
            .iter()
            .take(6)
            .map(|row| {
                let g = pollster::block_on(
                    switch.generate(row, &options, |_| std::future::ready(true)),
                )
                .unwrap();
                (g.output_ids, g.steps.len())
            })
            .collect::<Vec<_>>()
    };
    let want = run(&free);
    let trace = free_store.trace();
    let experts = free_store.manifest().expert_ids();
    let expert_bytes = (2 * config.d_model * config.d_ff * 4) as u64;
    let mut hits = std::collections::BTreeMap::new();
    for policy in Policy::ALL {
        for slots in [4, 8, 16] {
            let options = StoreOptions {
                budget_bytes: Some(slots as u64 * expert_bytes),
                policy,
                ..StoreOptions::default()
            };
            let (_, tight, store) = open_lazy(&dir, &device, options).unwrap();
            assert_eq!(run(&tight), want, "{policy}, {slots} experts");
            let live = store.stats();
            let replayed = replay(&trace, &experts, policy, Budget::Shared(slots));
            assert_eq!(
                (live.requests, live.hits),
                (replayed.requests, replayed.hits),
                "{policy}, {slots} experts"
            );
            hits.insert((policy.to_string(), slots), live.hits);
        }
    }
    let differ = |a: &str, b: &str| {
        [4, 8, 16]
            .iter()
            .any(|&s| hits[&(a.to_owned(), s)] != hits[&(b.to_owned(), s)])
    };
    assert!(
        differ("lru", "least-stale") && differ("lru", "lfu"),
        "{hits:?}"
    );
    assert!(differ("lru", "lru+pins"), "pins change nothing: {hits:?}");
}

/// Under a budget of two experts the store evicts (by its default policy), never holds more
/// than the budget, and computes exactly what the unbounded store computes; every fetch is
/// announced (requested → fetched → resident) and counted.
#[test]
fn a_residency_budget_evicts_and_changes_no_number() {
    use switchscope_core::wire::ShardEventKind;

    let dir = convert_to("tiny-8", Scheme::Int8, "budget");
    let device = cpu_device();
    let (config, free, free_store) = open_lazy(&dir, &device, StoreOptions::default()).unwrap();
    let expert_bytes = (2 * config.d_model * config.d_ff * 4) as u64;
    let options = StoreOptions {
        budget_bytes: Some(2 * expert_bytes),
        record_events: true,
        ..StoreOptions::default()
    };
    let (_, tight, store) = open_lazy(&dir, &device, options).unwrap();
    for row in inputs() {
        let input = TokenBatch::new(std::slice::from_ref(&row), 0).unwrap();
        let decoder = TokenBatch::new(&[vec![0, row[1], row[2]]], 0).unwrap();
        let want =
            pollster::block_on(free.forward(&input, &decoder, RunOptions::default())).unwrap();
        let got =
            pollster::block_on(tight.forward(&input, &decoder, RunOptions::default())).unwrap();
        assert_eq!(got.logits, want.logits);
        assert_eq!(got.routing, want.routing);
    }
    let stats = store.stats();
    assert!(stats.peak_resident_bytes <= 2 * expert_bytes, "{stats:?}");
    assert!(
        stats.evictions > 0,
        "a two-expert budget must evict: {stats:?}"
    );
    assert!(store.resident().len() <= 2);
    assert_eq!(stats.requests, free_store.stats().requests);
    assert_eq!(stats.requests, stats.hits + stats.fetches);
    assert!(
        stats.fetches > free_store.stats().fetches,
        "evicted experts are fetched again"
    );

    // Every miss is requested, then fetched (from disk), then (after the evictions that make
    // room) resident, in that order.
    let events = store.events();
    for (i, e) in events.iter().enumerate() {
        if e.kind == ShardEventKind::Requested {
            assert!(
                matches!(events[i + 1].kind, ShardEventKind::Fetched { .. }),
                "{:?}",
                &events[i..i + 2]
            );
            let next = events[i + 2..]
                .iter()
                .find(|n| !matches!(n.kind, ShardEventKind::Evicted { .. }))
                .unwrap();
            assert!(matches!(next.kind, ShardEventKind::Resident { .. }));
            assert_eq!(next.expert, e.expert);
        }
    }
    // The least recently used goes first: the first eviction is of an expert whose last use is
    // older than that of every expert resident at that moment.
    let first_evicted = events
        .iter()
        .position(|e| matches!(e.kind, ShardEventKind::Evicted { .. }))
        .unwrap();
    let victim = events[first_evicted].expert;
    let last_use = |id| events[..first_evicted].iter().rposition(|e| e.expert == id);
    let others: Vec<_> = events[..first_evicted]
        .iter()
        .filter(|e| matches!(e.kind, ShardEventKind::Resident { .. }) && e.expert != victim)
        .map(|e| e.expert)
        .collect();
    let victim_last = last_use(victim).unwrap();
    let newest_other = others.iter().filter_map(|&o| last_use(o)).max().unwrap();
    assert!(victim_last < newest_other);
    std::fs::remove_dir_all(dir).unwrap();
}

/// With prefetch on, pre-gating starts fetching the next sparse layer's experts early: the
/// numbers do not change, some fetches were started by a prefetch, and bytes prefetched but
/// never asked for are counted as waste.
#[test]
fn prefetch_by_pregating_changes_no_number_and_is_accounted() {
    use switchscope_core::wire::ShardEventKind;

    let dir = convert_to("tiny-8", Scheme::Int4, "prefetch");
    let device = cpu_device();
    let (_, plain, plain_store) = open_lazy(&dir, &device, StoreOptions::default()).unwrap();
    let options = StoreOptions {
        prefetch: true,
        record_events: true,
        ..StoreOptions::default()
    };
    let (_, eager, store) = open_lazy(&dir, &device, options).unwrap();
    for row in inputs() {
        let input = TokenBatch::new(std::slice::from_ref(&row), 0).unwrap();
        let decoder = TokenBatch::new(&[vec![0, row[1]]], 0).unwrap();
        let want =
            pollster::block_on(plain.forward(&input, &decoder, RunOptions::default())).unwrap();
        let got =
            pollster::block_on(eager.forward(&input, &decoder, RunOptions::default())).unwrap();
        assert_eq!(got.logits, want.logits);
        assert_eq!(got.routing, want.routing);
    }
    let (s, p) = (store.stats(), plain_store.stats());
    assert_eq!(plain_store.stats().prefetches, 0);
    assert!(s.prefetches > 0 && s.prefetch_used > 0, "{s:?}");
    assert!(s.prefetch_used <= s.prefetches);
    assert_eq!(s.fetches, p.fetches, "prefetch fetches nothing twice");
    let prefetched: u64 = store
        .events()
        .iter()
        .filter(|e| e.kind == ShardEventKind::Prefetching)
        .count() as u64;
    assert_eq!(prefetched, s.prefetches);
    let shard = store
        .manifest()
        .files
        .iter()
        .find(|f| f.name.starts_with("experts/"))
        .unwrap()
        .bytes;
    assert_eq!(
        s.prefetch_wasted_bytes,
        (s.prefetches - s.prefetch_used) * shard
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `convert --report`'s measurement: exact for f32 shards; for int8, every expert matrix has a
/// small, non-zero error and the goals hold (routing ≥ 99 %).
#[test]
fn the_quantization_report_measures_what_int8_costs() {
    use switchscope_core::eval::report::quantization_report;

    let hf = fixture("tiny");
    let exact = convert_to("tiny", Scheme::F32, "report-f32");
    let r = pollster::block_on(quantization_report(&hf, &exact, &inputs(), 4)).unwrap();
    assert!(r.tensors.is_empty(), "{:?}", r.tensors.first());
    assert_eq!((r.routing_agreement, r.next_token_agreement), (1.0, 1.0));

    let int8 = convert_to("tiny", Scheme::Int8, "report-int8");
    let r = pollster::block_on(quantization_report(&hf, &int8, &inputs(), 4)).unwrap();
    assert_eq!(
        r.tensors.len(),
        4 * 4 * 2,
        "every expert matrix, nothing else"
    );
    assert!(
        r.tensors
            .iter()
            .all(|t| t.relative_error > 0.0 && t.relative_error < 0.02),
        "{:?}",
        r.tensors.first()
    );
    assert!(r.routing_agreement >= 0.99, "{}", r.routing_agreement);
    assert!(
        r.routing_decisions > inputs().len() * 4,
        "encoder and decoder decisions"
    );
    for dir in [exact, int8] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// `tiny` with every matrix the int8 dense scheme stores (2-D, neither a router nor a relative
/// position bias; the experts untouched) rounded to int8 here, by the scheme's definition: per
/// row, groups of 32 input columns, scale = absmax / 127, code = round(w / scale), stored back
/// as the f32 `code × scale`. An f32 checkpoint, computed by the reference path.
fn int8_rounded_tiny(tag: &str) -> PathBuf {
    use switchscope_core::formats::safetensors::{
        OutTensor, SafetensorsFile, serialize, write_file,
    };
    let out = scratch(tag);
    std::fs::create_dir_all(&out).unwrap();
    for name in ["config.json", "generation_config.json"] {
        std::fs::copy(fixture("tiny").join(name), out.join(name)).unwrap();
    }
    let mut file = SafetensorsFile::open(&fixture("tiny").join("model.safetensors")).unwrap();
    let names: Vec<String> = file.tensors.keys().cloned().collect();
    let mut tensors = Vec::new();
    let mut rounded = 0;
    for name in names {
        let (info, bytes) = file.read(&name).unwrap().unwrap();
        assert_eq!(info.dtype, "F32", "{name}");
        let mut values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        if info.shape.len() == 2
            && !name.contains(".router.")
            && !name.contains("relative_attention_bias")
            && !name.contains(".experts.")
        {
            rounded += 1;
            for row in values.chunks_mut(info.shape[1]) {
                for group in row.chunks_mut(32) {
                    let max = group.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                    for v in group {
                        *v = (*v / scale).round().clamp(-127.0, 127.0) * scale;
                    }
                }
            }
        }
        tensors.push(OutTensor {
            name,
            dtype: "F32",
            shape: info.shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
    }
    assert!(
        rounded > 8,
        "the embedding and the attention and feed-forward matrices"
    );
    let bytes = serialize(&tensors, &file.metadata);
    write_file(&out.join("model.safetensors"), &bytes).unwrap();
    out
}

/// Dense weights in int8: the dense file shrinks, the routers stay f32, both loaders (files,
/// and any `ExpertSource` through `ModelLocation::Source`) decode the same model, and it still routes
/// like the checkpoint.
#[test]
fn int8_dense_weights_shrink_and_load_the_same_both_ways() {
    use switchscope_core::eval::report::quantization_report;
    use switchscope_core::formats::safetensors::SafetensorsFile;
    use switchscope_core::runtime::source::FileSource;
    use switchscope_core::{ModelLocation, OpenOptions, Switch};

    let f32_dense = convert_to("tiny", Scheme::Int8, "dense-f32");
    let out = scratch("dense-int8");
    let options = ConvertOptions {
        dense: Scheme::Int8,
        ..ConvertOptions::default()
    };
    convert(&fixture("tiny"), &out, &options, &mut |_, _, _| {}).unwrap();
    let manifest =
        Manifest::from_json(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.quantization.dense, Scheme::Int8);
    let bytes = |dir: &Path| {
        std::fs::metadata(dir.join("dense.safetensors"))
            .unwrap()
            .len()
    };
    assert!(
        bytes(&out) * 2 < bytes(&f32_dense),
        "{} vs {}",
        bytes(&out),
        bytes(&f32_dense)
    );
    let dense = SafetensorsFile::open(&out.join("dense.safetensors")).unwrap();
    assert!(dense.tensors.contains_key("shared.qweight"));
    assert_eq!(
        dense.tensors["encoder.block.1.layer.1.mlp.router.classifier.weight"].dtype, "F32",
        "routers stay f32"
    );

    let device = cpu_device();
    let (_, eager) = open_eager(&out, &device).unwrap();
    let at = ModelLocation::Source {
        manifest: Box::new(manifest),
        source: Box::new(FileSource::new(&out)),
    };
    let lazy = pollster::block_on(Switch::open(at, &device, OpenOptions::default())).unwrap();
    let input = TokenBatch::new(&[vec![5, 25, 59, 107, 1]], 0).unwrap();
    let decoder = TokenBatch::new(&[vec![0, 17, 42]], 0).unwrap();
    let a = pollster::block_on(eager.forward(&input, &decoder, RunOptions::default())).unwrap();
    let b = pollster::block_on(lazy.forward(&input, &decoder, RunOptions::default())).unwrap();
    assert_eq!(a.logits, b.logits);
    assert_eq!(a.routing, b.routing);

    // The int8 dense weights decode to exactly the checkpoint's matrices rounded by the
    // scheme's definition (f32 scales and f32 experts here, so that nothing else differs): no
    // tensor differs, and every routing decision and next token is the same.
    let rounded = int8_rounded_tiny("dense-rounded");
    let exact = scratch("dense-int8-f32-scales");
    let options = ConvertOptions {
        dense: Scheme::Int8,
        experts: Scheme::F32,
        f16_scales: false,
        ..ConvertOptions::default()
    };
    convert(&fixture("tiny"), &exact, &options, &mut |_, _, _| {}).unwrap();
    let same = pollster::block_on(quantization_report(&rounded, &exact, &inputs(), 4)).unwrap();
    assert!(same.tensors.is_empty(), "{:?}", same.tensors.first());
    assert_eq!(
        (same.routing_agreement, same.next_token_agreement),
        (1.0, 1.0)
    );

    // Against the float checkpoint, int8 dense weights route exactly as often alike as the
    // rounding itself does (the rounded checkpoint in f32 shards, which are exact), and with
    // f16 scales and int8 experts added, the routing stays within the rounding's own agreement
    // less what int8 experts alone lose.
    let rounded_f32 = scratch("dense-rounded-f32");
    let options = ConvertOptions {
        experts: Scheme::F32,
        ..ConvertOptions::default()
    };
    convert(&rounded, &rounded_f32, &options, &mut |_, _, _| {}).unwrap();
    let rounding = pollster::block_on(quantization_report(
        &fixture("tiny"),
        &rounded_f32,
        &inputs(),
        4,
    ))
    .unwrap()
    .routing_agreement;
    let dense = pollster::block_on(quantization_report(&fixture("tiny"), &exact, &inputs(), 4))
        .unwrap()
        .routing_agreement;
    assert_eq!(dense, rounding);
    let experts = pollster::block_on(quantization_report(
        &fixture("tiny"),
        &f32_dense,
        &inputs(),
        4,
    ))
    .unwrap()
    .routing_agreement;
    let r = pollster::block_on(quantization_report(&fixture("tiny"), &out, &inputs(), 4)).unwrap();
    eprintln!(
        "int8 rounding of the dense matrices: routing {rounding:.4}; int8 experts: {experts:.4}; \
         int8 dense + int8 experts, f16 scales: routing {:.4}, next token {:.4}",
        r.routing_agreement, r.next_token_agreement
    );
    assert!(
        r.routing_agreement >= rounding - (1.0 - experts),
        "{} < {rounding} - (1 - {experts})",
        r.routing_agreement
    );
    for dir in [f32_dense, out, rounded, rounded_f32, exact] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Found by `cargo xtask fuzz` (target `shard`): a header whose shape's byte size overflows
/// `u64` (`F64` × 2^62, or 2^32 × 2^32 × 16 elements) made the header parser panic on the
/// multiplication. It is a typed error now, from the in-memory reader (expert shards) and from
/// the streaming one (dense weights) alike.
#[test]
fn shapes_whose_size_overflows_are_typed_errors() {
    use switchscope_core::formats::safetensors::SafetensorsFile;
    use switchscope_core::formats::shard::decode_matrix;

    let manifest_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../public/models/switchscope-mini/manifest.json");
    let manifest = Manifest::from_json(&std::fs::read_to_string(manifest_path).unwrap()).unwrap();
    let file = |header: &str| {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes
    };
    let dir = scratch("overflow");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, header) in [
        // The fuzzer's input (fuzz/artifacts/shard/crash-933c3a73…), as found.
        r#"{"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}}"#,
        r#"{"wi.qweight":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#,
    ]
    .into_iter()
    .enumerate()
    {
        let bytes = file(header);
        let err = decode_matrix(&manifest, "experts/x.safetensors", &bytes, "wi").unwrap_err();
        match &err {
            CoreError::Shard { file, reason } => {
                assert_eq!(file, "experts/x.safetensors");
                assert!(reason.contains("too large"), "{err}");
            }
            other => panic!("expected a shard error, got {other:?}"),
        }
        let path = dir.join(format!("{i}.safetensors"));
        std::fs::write(&path, &bytes).unwrap();
        let err = SafetensorsFile::open(&path).unwrap_err();
        assert!(
            matches!(err, CoreError::Weights(_)) && err.to_string().contains("too large"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
