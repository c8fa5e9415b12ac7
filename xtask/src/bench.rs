//! `cargo xtask bench`: every benchmark in docs/BENCHMARKS.md, in one command (a measurement,
//! never part of the test suite).
//!
//! 1. `native`: our runtime (CPU, and wgpu on lavapipe) against transformers on PyTorch (CPU)
//!    on the same checkpoints: the default model (exported back to a Hugging Face checkpoint)
//!    and a random model with switch-base-8's layer sizes and 4 + 4 blocks.
//! 2. `browser`: the app in headless Chromium (WebGPU on SwiftShader, and the CPU fallback)
//!    against the native runtime on the same driver (Chromium's SwiftShader Vulkan ICD) and on
//!    the CPU, on the same prompt.
//! 3. `shards`: bytes fetched per prompt and hit rates under expert budgets.
//! 4. `growth`: time and bytes as the input and the experts per layer grow, with PNG plots in
//!    docs/bench/.
//! 5. `coldstart`: navigation to the first generated token, cache empty and warm.
//! 6. `kernels`: our GPU kernels against burn's quantized tensors, dequantize-then-matmul and
//!    f32 on one expert's feed-forward, and the default model with and without them, on
//!    lavapipe and on SwiftShader (native Vulkan drivers on the CPU).
//!
//! Results: `target/bench/*.json` and the Markdown tables in `target/bench/report.md`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::tools::{self, Tools};
use crate::{plot, root, serve};

const USAGE: &str =
    "cargo xtask bench [--runs N] [--skip-build] [--python PATH] [PART...] | --plot-only
parts: native browser shards growth coldstart kernels (default: all)";

const PARTS: [&str; 6] = [
    "native",
    "browser",
    "shards",
    "growth",
    "coldstart",
    "kernels",
];

/// The default model, as shipped.
const MODEL: &str = "public/models/switchscope-mini";

/// The browser-vs-native prompt: every fourth word masked, so the answer has several tokens.
const PROMPT: &str = "In the <extra_id_0> God created the <extra_id_1> and the earth. And the earth <extra_id_2> without form, and <extra_id_3>; and darkness was <extra_id_4> the face of <extra_id_5> deep. And the <extra_id_6> of God moved <extra_id_7> the face of <extra_id_8> waters. And God <extra_id_9>, Let there be <extra_id_10>: and there was <extra_id_11>.";

/// The Vulkan drivers a native wgpu run is pinned to.
const LAVAPIPE_ICD: &str = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json";
const SWIFTSHADER_ICD: &str = "/usr/lib/chromium/vk_swiftshader_icd.json";

struct Bench {
    tools: Tools,
    cli: PathBuf,
    out: PathBuf,
    runs: usize,
    python: Option<PathBuf>,
    report: Vec<String>,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut runs = 5usize;
    let mut build = true;
    let mut python = None;
    let mut parts = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => {
                runs = it
                    .next()
                    .context("--runs needs a value")?
                    .parse()
                    .context("--runs takes a number")?;
            }
            "--skip-build" => build = false,
            "--plot-only" => {
                // Redraw the plots from the last growth measurements.
                let json = root().join("target/bench/growth.json");
                let data: Value = serde_json::from_str(
                    &std::fs::read_to_string(&json)
                        .with_context(|| format!("reading {}", json.display()))?,
                )?;
                return plot::growth(&data, &root().join("docs/bench"));
            }
            "--python" => python = Some(PathBuf::from(it.next().context("--python needs a path")?)),
            part if PARTS.contains(&part) => parts.push(part.to_owned()),
            other => bail!("unknown option {other:?} for bench\nusage: {USAGE}"),
        }
    }
    if parts.is_empty() {
        parts = PARTS.iter().map(|p| (*p).to_owned()).collect();
    }
    let tools = tools::ensure_all()?;
    tools::run(tools.command("cargo").args([
        "build",
        "--release",
        "--locked",
        "-p",
        "switchscope-cli",
    ]))?;
    let in_browser = parts.iter().any(|p| p == "browser" || p == "coldstart");
    if build && in_browser {
        serve::build_web(&tools)?;
    }
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let mut bench = Bench {
        cli: target_dir().join("release/switchscope"),
        out,
        runs,
        python: find_python(python),
        report: vec![format!(
            "# Benchmark report\n\nMachine: {}; {} runs per figure (median).\n",
            machine(),
            runs
        )],
        tools,
    };
    for part in &parts {
        match part.as_str() {
            "native" => bench.native()?,
            "browser" => bench.browser()?,
            "shards" => bench.shards()?,
            "growth" => bench.growth()?,
            "coldstart" => bench.coldstart()?,
            "kernels" => bench.kernels()?,
            _ => unreachable!("parts are checked above"),
        }
        // Written after every part, so that a long run leaves what it measured.
        std::fs::write(bench.out.join("report.md"), bench.report.join("\n"))?;
    }
    println!("{}", bench.report.join("\n"));
    eprintln!(
        "xtask bench: report in {}",
        bench.out.join("report.md").display()
    );
    Ok(())
}

/// Where cargo puts its builds.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// The CPU, from /proc/cpuinfo, and the core count.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpu}, {cores} cores, no GPU")
}

/// A Python that has torch and transformers: `--python`, `SWITCHSCOPE_PYTHON`, or `python3`.
fn find_python(given: Option<PathBuf>) -> Option<PathBuf> {
    let candidate = given
        .or_else(|| std::env::var_os("SWITCHSCOPE_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let ok = Command::new(&candidate)
        .args(["-c", "import torch, transformers"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(candidate)
}

/// Runs `cmd` and parses its stdout (the last line) as JSON.
fn json_of(cmd: &mut Command) -> Result<Value> {
    let text = stdout_of(cmd)?;
    let last = text.lines().last().context("no output")?;
    serde_json::from_str(last).with_context(|| format!("output is not JSON: {last}"))
}

/// Runs `cmd`, passing its stderr through, and returns its stdout.
fn stdout_of(cmd: &mut Command) -> Result<String> {
    let shown = tools::describe(cmd);
    eprintln!("xtask: $ {shown}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn met(ratio: f64, goal: f64) -> &'static str {
    if ratio >= goal { "met" } else { "not met" }
}

impl Bench {
    fn cli(&self) -> Command {
        let mut cmd = self.tools.command(self.cli.to_str().expect("a UTF-8 path"));
        cmd.current_dir(root());
        cmd
    }

    /// `switchscope bench speed` on one model and backend.
    fn speed(
        &self,
        model: &Path,
        backend: &str,
        icd: Option<&str>,
        extra: &[&str],
    ) -> Result<Value> {
        let mut cmd = self.cli();
        cmd.args(["bench", "speed", "--json", "--backend", backend])
            .arg("--model")
            .arg(model)
            .args(["--runs", &self.runs.to_string()])
            .args(extra);
        if let Some(icd) = icd {
            cmd.env("VK_ICD_FILENAMES", icd);
        }
        json_of(&mut cmd)
    }

    fn torch(&self, model: &Path, ids: &str, new_tokens: &str) -> Result<Option<Value>> {
        let Some(python) = &self.python else {
            return Ok(None);
        };
        let mut cmd = self.tools.command(python.to_str().expect("a UTF-8 path"));
        cmd.arg("tools/bench/torch_speed.py")
            .arg("--model")
            .arg(model)
            .args(["--input-ids", ids, "--new-tokens", new_tokens])
            .args(["--runs", &self.runs.to_string()]);
        json_of(&mut cmd).map(Some)
    }

    fn native(&mut self) -> Result<()> {
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

    /// `node tests/bench/page.mjs MODE ...` against the served dist/.
    fn page(&self, mode: &str, backend: &str, runs: usize, name: &str) -> Result<Value> {
        let addr = serve::spawn(root().join("dist"))?;
        let out = self.out.join(name);
        tools::run(
            self.tools
                .command("node")
                .args(["tests/bench/page.mjs", mode, "--backend", backend])
                .args(["--runs", &runs.to_string(), "--prompt", PROMPT])
                .arg("--out")
                .arg(&out)
                .env("SWITCHSCOPE_URL", format!("http://{addr}/")),
        )?;
        Ok(serde_json::from_str(&std::fs::read_to_string(&out)?)?)
    }

    fn browser(&mut self) -> Result<()> {
        let mut section = vec![
            "## 2. Browser vs native on the same driver\n".to_owned(),
            format!("The default model, the same prompt ({} words, every fourth masked), greedy. In the browser: the app's own figures (Performance panel), {} runs after a warm-up run in one page. Native: `switchscope bench speed` with the prompt, decoding as many tokens as the page produced.\n", PROMPT.split(' ').count(), self.runs),
            "| backend | where | driver | encoder ms | decode tokens/s | browser / native (decode) | browser / native (encoder time) |".to_owned(),
            "|---|---|---|---|---|---|---|".to_owned(),
        ];
        let mut goals = Vec::new();
        let mut notes = Vec::new();
        let mut all = serde_json::Map::new();
        for (backend, native_backend, icd, driver) in [
            (
                "webgpu",
                "wgpu",
                Some(SWIFTSHADER_ICD),
                "SwiftShader (Vulkan, CPU)",
            ),
            ("cpu", "cpu", None, "burn Flex (wasm vs x86_64)"),
        ] {
            let page = self.page(
                "speed",
                backend,
                self.runs,
                &format!("page-speed-{backend}.json"),
            )?;
            let tokens = num(&page, "tokens").round().max(2.0) as usize;
            let native = self.speed(
                Path::new(MODEL),
                native_backend,
                icd,
                &["--prompt", PROMPT, "--new-tokens", &tokens.to_string()],
            )?;
            let native_encoder_ms = num(&native, "encoder_ms");
            let decode_ratio =
                num(&page, "decode_tokens_per_s") / num(&native, "decode_tokens_per_s");
            let encoder_ratio = native_encoder_ms / num(&page, "encoder_ms");
            section.push(format!(
                "| {backend} | Chromium (headless) | {driver} | {:.0} | {:.2} | {:.0} % | {:.0} % |",
                num(&page, "encoder_ms"),
                num(&page, "decode_tokens_per_s"),
                100.0 * decode_ratio,
                100.0 * encoder_ratio
            ));
            section.push(format!(
                "| {native_backend} | native (`switchscope`) | {driver} | {native_encoder_ms:.0} | {:.2} | | |",
                num(&native, "decode_tokens_per_s")
            ));
            if backend == "webgpu" {
                goals.push(format!(
                    "- WebGPU in Chromium at {:.0} % of native wgpu's decode tokens/s on SwiftShader (goal ≥ 80 %): **{}**",
                    100.0 * decode_ratio,
                    met(decode_ratio, 0.8)
                ));
                let overhead = self.page("overhead", "webgpu", 1, "page-overhead.json")?;
                notes.push(format!(
                    "Adapter in the page: {}. Its fixed costs (`node tests/bench/page.mjs overhead`): a one-kernel dispatch read back with mapAsync, median {:.1} ms; a dispatch submitted on its own, {:.2} ms on average.",
                    page["adapter"],
                    num(&overhead, "readback_ms_median"),
                    num(&overhead, "dispatch_submit_ms_mean")
                ));
            }
            all.insert(
                backend.to_owned(),
                serde_json::json!({ "page": page, "native": native }),
            );
        }
        section.push(String::new());
        section.extend(notes);
        section.push(String::new());
        section.extend(goals);
        section.push(String::new());
        std::fs::write(
            self.out.join("browser.json"),
            serde_json::to_string_pretty(&all)?,
        )?;
        self.report.push(section.join("\n"));
        Ok(())
    }

    fn kernels(&mut self) -> Result<()> {
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

    fn shards(&mut self) -> Result<()> {
        let tables = stdout_of(self.cli().args(["bench", "shards", "--model", MODEL]))?;
        self.report
            .push(format!("## 3. Bytes and caching\n\n{tables}"));
        Ok(())
    }

    fn growth(&mut self) -> Result<()> {
        let json = self.out.join("growth.json");
        let tables = stdout_of(
            self.cli()
                .args(["bench", "growth", "--model", MODEL])
                .args(["--runs", &self.runs.to_string()])
                .arg("--json-out")
                .arg(&json),
        )?;
        let data: Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
        let plots = root().join("docs/bench");
        std::fs::create_dir_all(&plots)?;
        plot::growth(&data, &plots)?;
        self.report.push(format!(
            "## 4. Cost growth\n\n{tables}Plots: docs/bench/growth-length.png, docs/bench/growth-experts.png\n"
        ));
        Ok(())
    }

    fn coldstart(&mut self) -> Result<()> {
        let runs = self.runs.min(3);
        let mut section = vec![
            "## 5. Cold start in the browser\n".to_owned(),
            format!(
                "Navigation to the first generated token with `?autorun=1` (the default model, served from localhost): a fresh profile (empty cache), then a reload in the same profile (service worker and shard cache warm). Median of {runs} fresh profiles.\n"
            ),
            "| backend | cache | navigation → first token, ms | model MB over the network | app MB | service worker precache MB |".to_owned(),
            "|---|---|---|---|---|---|".to_owned(),
        ];
        let mut all = serde_json::Map::new();
        for backend in ["cpu", "webgpu"] {
            let v = self.page(
                "coldstart",
                backend,
                runs,
                &format!("page-coldstart-{backend}.json"),
            )?;
            for cache in ["cold", "warm"] {
                let bytes = &v[format!("{cache}_bytes")];
                section.push(format!(
                    "| {backend} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
                    if cache == "cold" { "empty" } else { "warm" },
                    num(&v, &format!("{cache}_first_token_ms")),
                    num(bytes, "model") / 1e6,
                    num(bytes, "app") / 1e6,
                    num(bytes, "precache") / 1e6
                ));
            }
            all.insert(backend.to_owned(), v);
        }
        section.push(String::new());
        std::fs::write(
            self.out.join("coldstart.json"),
            serde_json::to_string_pretty(&all)?,
        )?;
        self.report.push(section.join("\n"));
        Ok(())
    }
}
