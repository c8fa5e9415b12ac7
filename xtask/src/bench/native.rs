//! The native parts of the benchmarks: our runtime against PyTorch on the same checkpoints, and
//! our kernels against burn's generic paths.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Bench {
    pub(super) fn native(&mut self) -> Result<()> {
        let work = self.out.join("native");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        // The default model, and its weights as a Hugging Face checkpoint.
        let mini_hf = work.join("switchscope-mini-hf");
        tools::run(
            self.cli()
                .args(["bench", "export-hf", "--model", MODEL, "--out"])
                .arg(&mini_hf),
        )?;
        // switch-base-8's layer sizes with 4 + 4 blocks (2 + 2 sparse).
        let mut config: Value = serde_json::from_str(&std::fs::read_to_string(
            root().join("tests/fixtures/switch-base-8.config.json"),
        )?)?;
        for (key, value) in [
            ("num_layers", 4),
            ("num_decoder_layers", 4),
            ("num_sparse_encoder_layers", 2),
            ("num_sparse_decoder_layers", 2),
        ] {
            config[key] = value.into();
        }
        let config_path = work.join("switch-base-8-4x4.config.json");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
        let sb8_hf = work.join("switch-base-8-4x4-hf");
        let sb8 = work.join("switch-base-8-4x4-int8");
        tools::run(
            self.cli()
                .args(["bench", "random-checkpoint", "--config"])
                .arg(&config_path)
                .arg("--out")
                .arg(&sb8_hf),
        )?;
        tools::run(
            self.cli()
                .args(["convert", "--quant", "int8", "--from"])
                .arg(&sb8_hf)
                .arg("--out")
                .arg(&sb8),
        )?;

        let mut section = vec![
            "## 1. Native: our runtime vs transformers on PyTorch\n".to_owned(),
            "64 input tokens (random ids, fixed seed), 32 tokens decoded greedily with the KV cache (not stopping at EOS), after one warm-up run.\n".to_owned(),
            "| model | engine | weights | backend | encoder tokens/s | decode tokens/s | vs PyTorch: encoder | vs PyTorch: decode | same tokens as PyTorch |".to_owned(),
            "|---|---|---|---|---|---|---|---|---|".to_owned(),
        ];
        let mut goals = Vec::new();
        let mut all = serde_json::Map::new();
        let models = [
            ("switchscope-mini", PathBuf::from(MODEL), mini_hf),
            ("switch-base-8 sizes, 4 + 4 blocks", sb8, sb8_hf),
        ];
        for (name, converted, hf) in &models {
            let args = ["--input-tokens", "64", "--new-tokens", "32"];
            let ours_f32 = self.speed(hf, "cpu", None, &args)?;
            let ids = ours_f32["input_ids"]
                .as_array()
                .context("input_ids")?
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let ours_int8 = self.speed(converted, "cpu", None, &args)?;
            let ours_gpu = self.speed(converted, "wgpu", Some(LAVAPIPE_ICD), &args)?;
            let torch = self.torch(hf, &ids, "32")?;
            let rows = [
                ("Switchscope", "f32 checkpoint", "CPU (Flex)", &ours_f32),
                (
                    "Switchscope",
                    "int8 experts (shards)",
                    "CPU (Flex)",
                    &ours_int8,
                ),
                (
                    "Switchscope",
                    "int8 experts (shards)",
                    "wgpu, lavapipe",
                    &ours_gpu,
                ),
            ];
            for (engine, weights, backend, v) in rows {
                let (enc, dec) = match &torch {
                    Some(t) => (
                        format!(
                            "{:.2}×",
                            num(v, "encoder_tokens_per_s") / num(t, "encoder_tokens_per_s")
                        ),
                        format!(
                            "{:.2}×",
                            num(v, "decode_tokens_per_s") / num(t, "decode_tokens_per_s")
                        ),
                    ),
                    None => ("–".into(), "–".into()),
                };
                let same = torch.as_ref().map_or("–", |t| {
                    if t["output_ids"] == v["output_ids"] {
                        "yes"
                    } else {
                        "no"
                    }
                });
                section.push(format!(
                    "| {name} | {engine} | {weights} | {backend} | {:.1} | {:.1} | {enc} | {dec} | {same} |",
                    num(v, "encoder_tokens_per_s"),
                    num(v, "decode_tokens_per_s")
                ));
            }
            match &torch {
                Some(t) => {
                    section.push(format!(
                        "| {name} | transformers {} on PyTorch {} ({} threads) | f32 checkpoint | CPU | {:.1} | {:.1} | 1× | 1× | |",
                        t["transformers"].as_str().unwrap_or("?"),
                        t["torch"].as_str().unwrap_or("?"),
                        t["threads"],
                        num(t, "encoder_tokens_per_s"),
                        num(t, "decode_tokens_per_s")
                    ));
                    for (what, key) in [("encoder", "encoder_tokens_per_s"), ("decode", "decode_tokens_per_s")] {
                        let ratio = num(&ours_f32, key).max(num(&ours_int8, key)) / num(t, key);
                        goals.push(format!(
                            "- {name}, {what}: our CPU path at {ratio:.2}× PyTorch's tokens/s (goal ≥ 1×): **{}**",
                            met(ratio, 1.0)
                        ));
                    }
                }
                None => section.push(format!(
                    "| {name} | transformers on PyTorch | skipped: no Python with torch and transformers (pip install -r tools/bench/requirements.txt, then --python or SWITCHSCOPE_PYTHON) | | | | | | |"
                )),
            }
            all.insert(
                (*name).to_owned(),
                serde_json::json!({ "ours_f32_cpu": ours_f32, "ours_int8_cpu": ours_int8,
                    "ours_int8_lavapipe": ours_gpu, "pytorch_cpu": torch }),
            );
        }
        section.push(String::new());
        section.extend(goals);
        section.push(String::new());
        std::fs::write(
            self.out.join("native.json"),
            serde_json::to_string_pretty(&all)?,
        )?;
        let _ = std::fs::remove_dir_all(&work);
        self.report.push(section.join("\n"));
        Ok(())
    }

    pub(super) fn kernels(&mut self) -> Result<()> {
        let runs = self.runs.max(15);
        let mut section = vec![format!(
            "## 6. Our GPU kernels\n\nMedian of {runs} runs per figure; ratios are burn's time over ours.\n"
        )];
        let mut all = Vec::new();
        for (adapter, icd) in [("lavapipe", LAVAPIPE_ICD), ("SwiftShader", SWIFTSHADER_ICD)] {
            let data = json_of(
                self.cli()
                    .args(["bench", "kernels", "--json", "--runs", &runs.to_string()])
                    .env("VK_ICD_FILENAMES", icd),
            )?;
            section.push(format!(
                "### One expert's feed-forward on {adapter} (`switchscope bench kernels`)\n\n\
                 | size | tokens | ours int8 ms | ours int4 ms | burn Q8S matmul | burn Q8S dequantize + matmul | burn Q4S matmul | burn Q4S dequantize + matmul | burn f32 | int8 vs better burn Q8S path | int4 vs better burn Q4S path |\n\
                 |---|---|---|---|---|---|---|---|---|---|---|"
            ));
            let points = data["points"].as_array().cloned().unwrap_or_default();
            let mut keys: Vec<(u64, u64, u64)> = points
                .iter()
                .map(|p| {
                    (
                        p["d_model"].as_u64().unwrap_or(0),
                        p["d_ff"].as_u64().unwrap_or(0),
                        p["tokens"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            keys.dedup();
            for (d_model, d_ff, tokens) in keys {
                let ms = |method: &str| {
                    points
                        .iter()
                        .find(|p| {
                            p["method"] == method
                                && p["d_model"] == d_model
                                && p["d_ff"] == d_ff
                                && p["tokens"] == tokens
                        })
                        .and_then(|p| p["ms"].as_f64())
                        .unwrap_or(f64::NAN)
                };
                let ratio = |ours: &str, a: &str, b: &str| ms(a).min(ms(b)) / ms(ours);
                section.push(format!(
                    "| {d_model} × {d_ff} | {tokens} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}× | {:.2}× |",
                    ms("ours int8"),
                    ms("ours int4"),
                    ms("burn Q8S matmul"),
                    ms("burn Q8S dequantize + matmul"),
                    ms("burn Q4S matmul"),
                    ms("burn Q4S dequantize + matmul"),
                    ms("burn f32 matmul"),
                    ratio("ours int8", "burn Q8S matmul", "burn Q8S dequantize + matmul"),
                    ratio("ours int4", "burn Q4S matmul", "burn Q4S dequantize + matmul"),
                ));
            }
            section.push(String::new());
            // the default model, with our kernels and with burn's generic path
            let ours = self.speed(Path::new(MODEL), "wgpu", Some(icd), &["--new-tokens", "16"])?;
            let generic = self.speed(
                Path::new(MODEL),
                "wgpu",
                Some(icd),
                &["--new-tokens", "16", "--generic-experts"],
            )?;
            section.push(format!(
                "### The default model on {adapter} (`switchscope bench speed --backend wgpu`)\n\n\
                 | experts | encoder ms | decode tokens/s | same tokens |\n|---|---|---|---|\n\
                 | int8 on our kernels | {:.1} | {:.2} | {} |\n\
                 | dequantized to f32, burn's ops (`--generic-experts`) | {:.1} | {:.2} | |\n",
                num(&ours, "encoder_ms"),
                num(&ours, "decode_tokens_per_s"),
                if ours["output_ids"] == generic["output_ids"] {
                    "yes"
                } else {
                    "no"
                },
                num(&generic, "encoder_ms"),
                num(&generic, "decode_tokens_per_s"),
            ));
            all.push(serde_json::json!({
                "adapter": adapter,
                "kernels": data,
                "model": { "ours": ours, "generic": generic },
            }));
        }
        std::fs::write(
            self.out.join("kernels.json"),
            serde_json::to_string_pretty(&all)?,
        )?;
        self.report.push(section.join("\n"));
        Ok(())
    }
}
