//! `cargo xtask fuzz`: the cargo-fuzz targets in `fuzz/`, one after another, each for a fixed
//! time, with one summary line per target (see `docs/RELIABILITY.md`).
//!
//! Installs what it needs, as [`crate::tools`] does: a nightly toolchain (cargo-fuzz needs
//! `-Z` flags) and cargo-fuzz at [`CARGO_FUZZ_VERSION`]. Each target's corpus,
//! `fuzz/corpus/<target>/` (git-ignored, kept between runs), is seeded from real files (the
//! shipped manifests, expert shards, prompts) and the hand-written seeds in
//! `fuzz/seeds/<target>/`. Fuzz builds go to their own target directory
//! (`$CARGO_TARGET_DIR/fuzz`, else `fuzz/target`), so that they never invalidate stable builds.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::root;
use crate::tools::run as run_cmd;

/// The cargo-fuzz release installed and used.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The fuzz targets, in the order they run.
pub const TARGETS: &[&str] = &["manifest", "shard", "tokenizer"];

const DEFAULT_SECONDS: u64 = 600;

/// libFuzzer's memory limit per process; a single allocation above it is also a failure.
const RSS_LIMIT_MB: u32 = 2048;

/// One input taking longer than this (seconds) is reported as a hang (a `timeout-` artifact).
const INPUT_TIMEOUT_S: u32 = 30;

/// How many expert shards of each shipped model seed the `shard` corpus.
const SHARDS_PER_MODEL: usize = 3;

/// Prompts that seed the `tokenizer` corpus: the web app's default and a few ordinary ones (the
/// unusual ones are in `fuzz/seeds/tokenizer/`).
const PROMPTS: &[&str] = &[
    "The <extra_id_0> walks in the park, and the children <extra_id_1> with the dog.",
    "translate English to German: The house is wonderful.",
    "summarize: Switch Transformers route each token to one expert of many.",
    "Paris is the <extra_id_0> of France.",
    "A quick brown fox jumps over the lazy dog; 12 × 7 = 84, isn't it?",
];

const USAGE: &str = "\
usage: cargo xtask fuzz [--seconds N] [TARGET...]

Runs each fuzz target (default: all of manifest, shard, tokenizer) for N seconds (default 600),
one after another, then prints one summary line per target. Exits non-zero when any target has
a crash, hang or out-of-memory input in fuzz/artifacts/<target>/.
";

/// What one target's run printed.
#[derive(Debug, Default, Clone, PartialEq)]
struct Summary {
    target: String,
    seconds: Option<u64>,
    executions: Option<u64>,
    exec_per_s: Option<u64>,
    coverage: Option<u64>,
    features: Option<u64>,
    corpus: Option<u64>,
    crashes: usize,
}

impl Summary {
    fn line(&self) -> String {
        let n = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        format!(
            "fuzz: {:<9} seconds {:>4}  executions {:>10}  exec/s {:>7}  cov {:>6}  ft {:>6}  \
             corpus {:>5}  crashes {}",
            self.target,
            n(self.seconds),
            n(self.executions),
            n(self.exec_per_s),
            n(self.coverage),
            n(self.features),
            n(self.corpus),
            self.crashes
        )
    }

    /// Takes what a libFuzzer output line says: `#N DONE cov: C ft: F corp: K/S ... exec/s: E`
    /// (the final status; the last `#N` status line stands in when the run stopped early),
    /// `Done N runs in S second(s)`, and the `stat::` lines of `-print_final_stats=1` (printed
    /// last, also after a crash).
    fn read_line(&mut self, line: &str) {
        let line = line.trim();
        let stat = |key: &str| {
            line.strip_prefix(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(n) = stat("stat::number_of_executed_units:") {
            self.executions = Some(n);
            return;
        }
        if let Some(n) = stat("stat::average_exec_per_sec:") {
            self.exec_per_s = Some(n);
            return;
        }
        if let Some(rest) = line.strip_prefix("Done ") {
            let mut words = rest.split_whitespace();
            if let Some(runs) = words.next().and_then(|w| w.parse().ok()) {
                self.executions = Some(runs);
            }
            self.seconds = words.nth(2).and_then(|w| w.parse().ok()).or(self.seconds);
            return;
        }
        let Some(rest) = line.strip_prefix('#') else {
            return;
        };
        if !rest.contains("cov:") || !rest.contains("exec/s:") {
            return;
        }
        let mut words = rest.split_whitespace();
        if let Some(runs) = words.next().and_then(|w| w.parse().ok()) {
            self.executions = Some(runs);
        }
        let value = |key: &str| {
            let mut it = rest.split_whitespace();
            it.find(|w| *w == key)?;
            it.next()
        };
        let number = |key: &str| value(key).and_then(|v| v.parse().ok());
        self.coverage = number("cov:").or(self.coverage);
        self.features = number("ft:").or(self.features);
        self.exec_per_s = number("exec/s:").or(self.exec_per_s);
        self.corpus = value("corp:")
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse().ok())
            .or(self.corpus);
    }
}

struct Options {
    seconds: u64,
    targets: Vec<String>,
}

fn parse(args: &[String]) -> Result<Option<Options>> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().context("--seconds needs a number")?;
                seconds =
                    value.parse().ok().filter(|&s| s > 0).with_context(|| {
                        format!("--seconds {value:?}: expected a positive integer")
                    })?;
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            t if TARGETS.contains(&t) => targets.push(t.to_owned()),
            other => bail!(
                "unknown fuzz target or option {other:?} (targets: {})\n\n{USAGE}",
                TARGETS.join(", ")
            ),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    Ok(Some(Options { seconds, targets }))
}

/// stdout of a command, or `None` when it cannot run or fails.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The nightly toolchain (minimal profile) and cargo-fuzz at [`CARGO_FUZZ_VERSION`].
pub fn ensure_fuzz_tools() -> Result<()> {
    if output("rustup", &["run", "nightly", "rustc", "--version"]).is_none() {
        eprintln!("xtask: installing the nightly toolchain (cargo-fuzz needs it)");
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let want = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    if output("cargo", &["fuzz", "--version"]).as_deref() != Some(want.as_str()) {
        eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (a few CPU-minutes, once)");
        run_cmd(Command::new("cargo").args([
            "install",
            "--locked",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    Ok(())
}

/// The fuzz builds' own target directory.
fn fuzz_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(
            || root.join("fuzz/target"),
            |d| PathBuf::from(d).join("fuzz"),
        )
}

/// Copies `from` to `dir/name` unless it is there already.
fn seed(dir: &Path, name: &str, from: &Path) -> Result<()> {
    let to = dir.join(name);
    if !to.exists() {
        std::fs::copy(from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// The files of `dir`, sorted (none when it does not exist).
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The shipped models' directories (`public/models/*`), sorted.
fn models(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root.join("public/models")).context("reading public/models")? {
        let path = entry?.path();
        if path.join("manifest.json").is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Fills `fuzz/corpus/<target>/` with the seeds that are missing from it.
fn seed_corpus(root: &Path, target: &str) -> Result<PathBuf> {
    let corpus = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    for path in files(&root.join("fuzz/seeds").join(target))? {
        seed(&corpus, &format!("seed-{}", file_name(&path)), &path)?;
    }
    match target {
        "manifest" => {
            for model in models(root)? {
                let name = format!("{}-manifest.json", file_name(&model));
                seed(&corpus, &name, &model.join("manifest.json"))?;
            }
        }
        "shard" => {
            for model in models(root)? {
                let shards = files(&model.join("experts"))?;
                for path in shards.iter().take(SHARDS_PER_MODEL) {
                    let name = format!("{}-{}", file_name(&model), file_name(path));
                    seed(&corpus, &name, path)?;
                }
            }
        }
        "tokenizer" => {
            for (i, prompt) in PROMPTS.iter().enumerate() {
                let to = corpus.join(format!("prompt-{i}"));
                if !to.exists() {
                    std::fs::write(&to, prompt)
                        .with_context(|| format!("writing {}", to.display()))?;
                }
            }
        }
        _ => {}
    }
    Ok(corpus)
}

/// Inputs libFuzzer saved as failures in `fuzz/artifacts/<target>/` (crashes, hangs,
/// out-of-memory, leaks; not `slow-unit-` reports).
fn crashes(root: &Path, target: &str) -> Result<Vec<PathBuf>> {
    Ok(files(&root.join("fuzz/artifacts").join(target))?
        .into_iter()
        .filter(|p| !file_name(p).starts_with("slow-unit-"))
        .collect())
}

/// Builds and runs one target for `seconds`, echoing its output and reading its statistics.
fn fuzz_one(root: &Path, target: &str, seconds: u64, target_dir: &Path) -> Result<Summary> {
    let corpus = seed_corpus(root, target)?;
    // The shard target writes a scratch file: keep it inside the fuzz target directory.
    let scratch = target_dir.join("scratch");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let before = crashes(root, target)?.len();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["+nightly", "fuzz", "run", target, "--fuzz-dir", "fuzz"])
        .arg("--target-dir")
        .arg(target_dir)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg("-print_final_stats=1")
        // A stable `cargo run` environment must not leak into the nightly build.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("CARGO")
        .env("TMPDIR", &scratch)
        .stderr(Stdio::piped());
    eprintln!(
        "xtask: fuzzing {target} for {seconds} s (the first run builds it; that takes a while)"
    );
    let mut child = cmd
        .spawn()
        .context("could not start cargo +nightly fuzz run")?;
    let mut summary = Summary {
        target: target.to_owned(),
        ..Summary::default()
    };
    let stderr = child.stderr.take().expect("piped");
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading cargo fuzz's output")?;
        eprintln!("{line}");
        summary.read_line(&line);
    }
    let status = child.wait()?;
    let _ = std::fs::remove_dir_all(&scratch);
    let found = crashes(root, target)?;
    summary.crashes = found.len();
    if !status.success() && found.len() <= before {
        bail!("cargo +nightly fuzz run {target} failed ({status}) without saving an input");
    }
    for path in &found {
        eprintln!(
            "xtask: {target}: failing input {} (reproduce: cargo +nightly fuzz run {target} \
             --fuzz-dir fuzz {0}; fix it, add a regression test, then delete the file)",
            path.display()
        );
    }
    Ok(summary)
}

pub fn run(args: &[String]) -> Result<()> {
    let Some(options) = parse(args)? else {
        return Ok(());
    };
    ensure_fuzz_tools()?;
    let root = root();
    let target_dir = fuzz_target_dir(&root);
    let mut summaries = Vec::new();
    for target in &options.targets {
        summaries.push(fuzz_one(&root, target, options.seconds, &target_dir)?);
    }
    let nightly = output("rustup", &["run", "nightly", "rustc", "--version"]).unwrap_or_default();
    eprintln!("\nxtask: fuzz summary ({nightly}, cargo-fuzz {CARGO_FUZZ_VERSION})");
    for s in &summaries {
        println!("{}", s.line());
    }
    let failing: Vec<&str> = summaries
        .iter()
        .filter(|s| s.crashes > 0)
        .map(|s| s.target.as_str())
        .collect();
    if !failing.is_empty() {
        bail!(
            "failing inputs in fuzz/artifacts/ for: {}",
            failing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_lines() {
        let mut s = Summary::default();
        for line in [
            "#2\tINITED cov: 10 ft: 11 corp: 3/40b exec/s: 0 rss: 30Mb",
            "#524288\tpulse  cov: 812 ft: 2040 corp: 140/9Kb lim: 4096 exec/s: 8738 rss: 95Mb",
            "#1234567\tDONE   cov: 845 ft: 2101 corp: 151/10Kb lim: 4096 exec/s: 2053 rss: 97Mb",
            "Done 1234567 runs in 601 second(s)",
            "stat::number_of_executed_units: 1234567",
            "stat::average_exec_per_sec:     2053",
        ] {
            s.read_line(line);
        }
        assert_eq!(s.executions, Some(1_234_567));
        assert_eq!(s.seconds, Some(601));
        assert_eq!(s.coverage, Some(845));
        assert_eq!(s.features, Some(2101));
        assert_eq!(s.corpus, Some(151));
        assert_eq!(s.exec_per_s, Some(2053));

        // A crash while the seeds load: only the final statistics are printed.
        let mut s = Summary::default();
        s.read_line("stat::number_of_executed_units: 7");
        s.read_line("stat::average_exec_per_sec:     1");
        assert_eq!(
            (s.executions, s.exec_per_s, s.coverage),
            (Some(7), Some(1), None)
        );
    }

    #[test]
    fn options_name_known_targets() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let o = parse(&args(&["--seconds", "5", "shard"])).unwrap().unwrap();
        assert_eq!((o.seconds, o.targets), (5, vec!["shard".to_owned()]));
        let o = parse(&[]).unwrap().unwrap();
        assert_eq!(
            (o.seconds, o.targets.len()),
            (DEFAULT_SECONDS, TARGETS.len())
        );
        assert!(parse(&args(&["nope"])).is_err());
        assert!(parse(&args(&["--seconds", "0"])).is_err());
    }
}
