//! The `switchscope` binary as users run it, on the committed fixtures.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{fixture, switchscope};

fn reference(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap())
        .unwrap()
}

/// `forward --json` on the fixed input the reference fixtures use.
fn forward_json(model: &Path) -> Value {
    let (ok, stdout, stderr) = switchscope(&[
        "forward",
        "--model",
        model.to_str().unwrap(),
        "--input-ids",
        "5,25,59,107,1",
        "--decoder-input-ids",
        "0,17,42",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn forward_json_matches_the_reference() {
    let out = forward_json(&fixture("tiny"));
    let single = &reference("tiny")["single"];
    let logits = out["logits"].as_array().unwrap();
    assert_eq!(logits.len(), 3, "one row of logits per decoder position");
    let mut max = 0f64;
    // The reference keeps a batch dimension of one.
    for (got, want) in logits.iter().zip(single["logits"][0].as_array().unwrap()) {
        for (a, b) in got.as_array().unwrap().iter().zip(want.as_array().unwrap()) {
            max = max.max((a.as_f64().unwrap() - b.as_f64().unwrap()).abs());
        }
    }
    assert!(max <= 1e-4, "logits differ by {max}");
    let routing = out["routing"].as_array().unwrap();
    let want = single["routing"].as_array().unwrap();
    assert_eq!(routing.len(), want.len());
    for (got, want) in routing.iter().zip(want) {
        assert_eq!(got["stack"], want["stack"]);
        assert_eq!(got["block"], want["block"]);
        assert_eq!(got["expert"], want["expert"][0]);
        assert_eq!(
            got["probs"].as_array().unwrap().len(),
            want["expert"][0].as_array().unwrap().len()
        );
    }
}

#[test]
fn generate_json_matches_greedy_reference() {
    let reference = reference("tiny");
    let case = &reference["greedy"][0];
    let ids: Vec<String> = case["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let model = fixture("tiny");
    let (ok, stdout, stderr) = switchscope(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--input-ids",
        &ids.join(","),
        "--max-new-tokens",
        &case["max_new_tokens"].to_string(),
        "--greedy",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["output_ids"], case["output_ids_cache"]);
    assert!(!out["routing"].as_array().unwrap().is_empty());
}

#[test]
fn errors_are_one_clear_line() {
    let missing = fixture("no-such-model");
    let (ok, _, stderr) = switchscope(&[
        "forward",
        "--model",
        missing.to_str().unwrap(),
        "--input-ids",
        "1",
        "--decoder-input-ids",
        "0",
    ]);
    assert!(!ok);
    assert!(stderr.contains("config.json"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let model = fixture("tiny");
    let (ok, _, stderr) = switchscope(&[
        "forward",
        "--model",
        model.to_str().unwrap(),
        "--input-ids",
        "5,999",
        "--decoder-input-ids",
        "0",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("999") && stderr.contains("vocabulary"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

/// An input over the limit is cut to it with a warning, and the run goes on.
#[test]
fn an_over_long_input_is_cut_with_a_warning() {
    let model = fixture("tiny");
    let ids = (0..600)
        .map(|i| (5 + i % 90).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let (ok, stdout, stderr) = switchscope(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--input-ids",
        &ids,
        "--max-new-tokens",
        "2",
        "--greedy",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("the input has 600 tokens; only the first 512 are used"),
        "{stderr}"
    );
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["input_ids"].as_array().unwrap().len(), 512);
}

/// A converted model with a future format version or a file name leaving the directory is
/// refused with the reason, before any other file is read.
#[test]
fn bad_manifests_are_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("switchscope-cli-manifest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, _, stderr) = switchscope(&[
        "convert",
        "--from",
        fixture("tiny").to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--quant",
        "int8",
    ]);
    assert!(ok, "{stderr}");
    let path = dir.join("manifest.json");
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    type Change = fn(&mut Value);
    let cases: [(&str, Change); 3] = [
        ("format version 7", |m| m["version"] = 7.into()),
        ("has an empty, `.` or `..` segment", |m| {
            m["files"][0]["name"] = "../../etc/passwd".into();
        }),
        ("is not valid JSON", |m| *m = Value::Null),
    ];
    for (expected, change) in cases {
        let mut m = original.clone();
        change(&mut m);
        let text = if m.is_null() {
            "{\"format\": ".to_owned()
        } else {
            m.to_string()
        };
        std::fs::write(&path, text).unwrap();
        let (ok, _, stderr) = switchscope(&["inspect", dir.to_str().unwrap()]);
        assert!(!ok);
        assert!(stderr.contains(expected), "{expected}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A checkpoint whose tensor has the wrong shape is refused, naming the tensor.
#[test]
fn shape_mismatch_names_the_tensor() {
    let dir = std::env::temp_dir().join(format!("switchscope-cli-shape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = std::fs::read_to_string(fixture("tiny").join("config.json")).unwrap();
    let mut config: Value = serde_json::from_str(&config).unwrap();
    config["d_ff"] = Value::from(48);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        fixture("tiny").join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let (ok, _, stderr) = switchscope(&[
        "forward",
        "--model",
        dir.to_str().unwrap(),
        "--input-ids",
        "5",
        "--decoder-input-ids",
        "0",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!ok);
    assert!(
        stderr.contains("wi.weight") && stderr.contains("shape"),
        "{stderr}"
    );
}

#[test]
fn prompt_uses_the_tokenizer_and_matches_the_reference() {
    let model = fixture("tiny");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(model.join("prompt_reference.json")).unwrap(),
    )
    .unwrap();
    for case in reference["prompts"].as_array().unwrap() {
        let (ok, stdout, stderr) = switchscope(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            case["prompt"].as_str().unwrap(),
            "--max-new-tokens",
            "8",
            "--json",
        ]);
        assert!(ok, "{stderr}");
        let out: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(out["input_ids"], case["input_ids"]);
        assert_eq!(out["output_ids"], case["output_ids"]);
        assert_eq!(out["output_text"], case["output_text"]);
    }
    let (ok, _, stderr) = switchscope(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "  ",
    ]);
    assert!(!ok);
    assert!(stderr.contains("prompt is empty"), "{stderr}");
    let other = fixture("tiny-drop");
    let (ok, _, stderr) = switchscope(&[
        "generate",
        "--model",
        other.to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    assert!(!ok);
    assert!(stderr.contains("tokenizer.json"), "{stderr}");
}

#[test]
fn stop_at_spans_ends_the_answer_after_the_prompts_spans_and_fills_them_in() {
    // The shipped default model: it has T5's sentinels (<extra_id_0> = 5999, <extra_id_1> = 5998,
    // <extra_id_2> = 5997) and tends to answer spans the prompt does not have.
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/models/switchscope-mini");
    let model = model.to_str().unwrap();
    let prompt = "In the beginning God created the <extra_id_0> and the <extra_id_1>.";
    let run = |extra: &[&str]| -> Value {
        let mut args = vec![
            "generate",
            "--model",
            model,
            "--prompt",
            prompt,
            "--max-new-tokens",
            "24",
            "--json",
        ];
        args.extend_from_slice(extra);
        let (ok, stdout, stderr) = switchscope(&args);
        assert!(ok, "{stderr}");
        serde_json::from_str(&stdout).unwrap()
    };
    let ids = |v: &Value| -> Vec<u64> {
        v["output_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    let full = run(&[]);
    let stopped = run(&["--stop-at-spans"]);
    let (full_ids, stopped_ids) = (ids(&full), ids(&stopped));
    // Greedy either way: the stopped answer is the start of the full one, cut right after
    // <extra_id_2>, the sentinel after the prompt's last (or at </s>, or at the token limit).
    assert!(
        full_ids.starts_with(&stopped_ids),
        "{stopped_ids:?} vs {full_ids:?}"
    );
    let cut = full_ids
        .iter()
        .skip(1)
        .position(|&id| id == 1 || id == 5997)
        .map_or(full_ids.len(), |i| i + 2);
    assert_eq!(stopped_ids.len(), cut, "{full_ids:?}");
    // Both runs fill the prompt in, spans in brackets (an unanswered one as […]).
    for out in [&full, &stopped] {
        let filled = out["filled_in"].as_str().unwrap();
        assert!(
            filled.starts_with("In the beginning God created the ["),
            "{filled}"
        );
        assert!(
            filled.contains("] and the [") && filled.ends_with("]."),
            "{filled}"
        );
        assert!(!filled.contains("<extra_id_"), "{filled}");
    }
    assert_eq!(full["filled_in"], stopped["filled_in"]);
    // No masked span: nothing to fill in.
    let (ok, stdout, stderr) = switchscope(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "No mask here.",
        "--max-new-tokens",
        "2",
        "--json",
        "--stop-at-spans",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        serde_json::from_str::<Value>(&stdout)
            .unwrap()
            .get("filled_in")
            .is_none()
    );
}

#[test]
fn convert_inspect_and_run_a_converted_model() {
    let out = std::env::temp_dir().join(format!("switchscope-cli-convert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let from = fixture("tiny");
    let (ok, stdout, stderr) = switchscope(&[
        "convert",
        "--from",
        from.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quant",
        "int4",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    // 16 experts (2 + 2 sparse blocks × 4), dense, tokenizer, manifest not counted.
    assert_eq!(summary["files"], 18);
    assert!(summary["compression"].as_f64().unwrap() > 1.5, "{summary}");

    let (ok, stdout, stderr) = switchscope(&["inspect", out.to_str().unwrap(), "--json"]);
    assert!(ok, "{stderr}");
    let info: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(info["quantization"]["experts"], "int4");
    assert_eq!(info["sparse_layers"].as_array().unwrap().len(), 4);
    let (ok, stdout, _) = switchscope(&["inspect", out.to_str().unwrap()]);
    assert!(ok && stdout.contains("experts int4"), "{stdout}");

    let (ok, stdout, stderr) = switchscope(&[
        "generate",
        "--model",
        out.to_str().unwrap(),
        "--input-ids",
        "5,25,59,107,1",
        "--max-new-tokens",
        "4",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let gen_: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(gen_["output_ids"].as_array().unwrap().len(), 5);
    // Experts were read on demand: exactly the files of the experts the routers chose (the
    // encoder's layers, then each step's decoder layers), each once.
    let mut routed: Vec<String> = gen_["routing"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|layer| {
            let (stack, block) = (layer["stack"].as_str().unwrap(), &layer["block"]);
            layer["expert"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_i64().unwrap())
                .filter(|&e| e >= 0)
                .map(move |e| format!("experts/{stack}.b{block}.e{e}.safetensors"))
        })
        .collect();
    routed.sort();
    routed.dedup();
    let mut loaded: Vec<String> = gen_["shards_loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    loaded.sort();
    assert!(!routed.is_empty());
    assert_eq!(loaded, routed, "the shards read are the routed experts'");
    std::fs::remove_dir_all(&out).unwrap();
}

/// `bench export-hf` writes the converted weights (experts dequantized) as a checkpoint that
/// runs exactly like the converted model; `bench speed` measures both alike.
#[test]
fn export_hf_runs_like_the_converted_model() {
    let base = std::env::temp_dir().join(format!("switchscope-cli-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (converted, exported) = (base.join("int8"), base.join("hf"));
    let from = fixture("tiny");
    let (ok, _, stderr) = switchscope(&[
        "convert",
        "--from",
        from.to_str().unwrap(),
        "--out",
        converted.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = switchscope(&[
        "bench",
        "export-hf",
        "--model",
        converted.to_str().unwrap(),
        "--out",
        exported.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("parameters"), "{stdout}");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(exported.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["model_type"], "switch_transformers");
    assert!(exported.join("model.safetensors").is_file());
    // A second export to the same place is refused rather than mixed with the first.
    let (ok, _, stderr) = switchscope(&[
        "bench",
        "export-hf",
        "--model",
        converted.to_str().unwrap(),
        "--out",
        exported.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("already exists"), "{stderr}");

    let (a, b) = (forward_json(&converted), forward_json(&exported));
    assert_eq!(a["routing"], b["routing"]);
    let flat = |v: &Value| -> Vec<f64> {
        v["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect()
    };
    let max = flat(&a)
        .iter()
        .zip(flat(&b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(max <= 1e-5, "logits differ by {max}");

    let speed = |model: &Path| {
        let (ok, stdout, stderr) = switchscope(&[
            "bench",
            "speed",
            "--model",
            model.to_str().unwrap(),
            "--input-tokens",
            "12",
            "--new-tokens",
            "3",
            "--runs",
            "2",
            "--json",
        ]);
        assert!(ok, "{stderr}");
        serde_json::from_str::<Value>(&stdout).unwrap()
    };
    let (a, b) = (speed(&converted), speed(&exported));
    assert_eq!(a["input_ids"].as_array().unwrap().len(), 12);
    assert_eq!(a["input_ids"], b["input_ids"], "the same random input");
    assert_eq!(
        a["output_ids"].as_array().unwrap().len(),
        4,
        "start token + 3"
    );
    assert_eq!(a["output_ids"], b["output_ids"]);
    assert_eq!(a["encode_ms"].as_array().unwrap().len(), 2);
    // The decode loop is generate's: on the CPU no kernel is dispatched, and the host waits
    // once per sparse decoder layer (its routing) and once for the logits, every token.
    let config = switchscope_core::config::SwitchConfig::from_json(
        &std::fs::read_to_string(exported.join("config.json")).unwrap(),
    )
    .unwrap();
    let waits = config
        .sparse_blocks(switchscope_core::wire::Stack::Decoder)
        .len() as f64
        + 1.0;
    for v in [&a, &b] {
        assert!(v["encoder_tokens_per_s"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0, "{v}");
        assert_eq!(v["dispatches_per_token"].as_f64(), Some(0.0), "{v}");
        assert_eq!(v["host_waits_per_token"].as_f64(), Some(waits), "{v}");
        assert_eq!(v["readbacks_per_token"].as_f64(), Some(waits), "{v}");
        assert!(v["uploads_per_token"].as_f64().unwrap() >= 3.0, "{v}");
        assert_eq!(
            v["decode_counts"]["host_waits"].as_f64(),
            Some(3.0 * waits),
            "{v}"
        );
    }
    assert!(
        a["expert_bytes_fetched"].as_u64().unwrap() > 0,
        "experts were read for the input"
    );
    std::fs::remove_dir_all(&base).unwrap();
}

/// `--expert-budget-mb` and `--cache-policy` on the shipped model: experts are given up as the
/// policy says, the output stays the same, and the counts come back.
#[test]
fn an_expert_budget_evicts_by_the_chosen_policy_and_changes_no_output() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/models/switchscope-mini");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "Translate English to Spanish: In the beginning God created the heaven and the earth.",
            "--max-new-tokens",
            "12",
            "--json",
        ];
        args.extend_from_slice(extra);
        let (ok, stdout, stderr) = switchscope(&args);
        assert!(ok, "{stderr}");
        serde_json::from_str::<Value>(&stdout).unwrap()
    };
    let whole = run(&[]);
    assert_eq!(whole["expert_cache"]["policy"], "next-use+pins");
    assert_eq!(whole["expert_cache"]["budget_bytes"], Value::Null);
    assert_eq!(whole["expert_cache"]["evictions"], 0);
    for policy in ["next-use+pins", "lru"] {
        let budgeted = run(&["--expert-budget-mb", "3", "--cache-policy", policy]);
        let cache = &budgeted["expert_cache"];
        assert_eq!(cache["policy"], policy);
        assert_eq!(
            cache["budget_bytes"],
            3 << 20,
            "MiB, as the page counts them"
        );
        assert_eq!(cache["requests"], whole["expert_cache"]["requests"]);
        assert!(cache["evictions"].as_u64().unwrap() > 0, "{cache}");
        assert!(
            cache["hits"].as_u64().unwrap() < whole["expert_cache"]["hits"].as_u64().unwrap(),
            "{cache}"
        );
        assert_eq!(budgeted["output_ids"], whole["output_ids"]);
    }
    let (ok, _, stderr) = switchscope(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "x",
        "--cache-policy",
        "mru",
    ]);
    assert!(!ok);
    assert!(stderr.contains("unknown cache policy"), "{stderr}");
}
