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
//! 7. `checkpoint`: bytes over the network for a Hugging Face checkpoint read in place from its
//!    URL (random checkpoints with switch-base's widths, 64 and 128 experts per layer).
//!
//! Results: `target/bench/*.json` and the Markdown tables in `target/bench/report.md`.

mod browser;
mod checkpoint;
mod native;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::tools::{self, Tools};
use crate::{plot, root, serve, target_dir};

const USAGE: &str =
    "cargo xtask bench [--runs N] [--skip-build] [--python PATH] [PART...] | --plot-only
parts: native browser shards growth coldstart kernels checkpoint (default: all)";

const PARTS: [&str; 7] = [
    "native",
    "browser",
    "shards",
    "growth",
    "coldstart",
    "kernels",
    "checkpoint",
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
                // Redraw the plots from the last growth and shards measurements there are.
                let dir = root().join("target/bench");
                type Draw = fn(&Value, &Path) -> Result<()>;
                let plots: [(&str, Draw); 2] =
                    [("growth.json", plot::growth), ("shards.json", plot::cache)];
                let mut drawn = 0;
                for (name, draw) in plots {
                    let json = dir.join(name);
                    if json.is_file() {
                        draw(&read_json(&json)?, &plots_dir()?)?;
                        drawn += 1;
                    }
                }
                if drawn == 0 {
                    bail!(
                        "no measurements in {} to plot (growth.json, shards.json)",
                        dir.display()
                    );
                }
                return Ok(());
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
            "checkpoint" => bench.checkpoint()?,
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

    fn shards(&mut self) -> Result<()> {
        let json = self.out.join("shards.json");
        let tables = stdout_of(
            self.cli()
                .args(["bench", "shards", "--model", MODEL])
                .arg("--json-out")
                .arg(&json),
        )?;
        plot::cache(&read_json(&json)?, &plots_dir()?)?;
        self.report.push(format!(
            "## 3. Bytes and caching\n\n{tables}\n![Hit rate against budget](bench/cache-policies.png)\n"
        ));
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
        plot::growth(&read_json(&json)?, &plots_dir()?)?;
        self.report.push(format!(
            "## 4. Cost growth\n\n{tables}Plots: docs/bench/growth-length.png, docs/bench/growth-experts.png\n"
        ));
        Ok(())
    }
}

fn read_json(path: &Path) -> Result<Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

/// `docs/bench/`, where the plots go (created).
fn plots_dir() -> Result<PathBuf> {
    let dir = root().join("docs/bench");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
