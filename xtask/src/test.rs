//! `cargo xtask test`: every test, in order, stopping at the first failure.
//!
//! 1. `cargo fmt --check`
//! 2. clippy, warnings denied: native crates, then the web crate for wasm32
//! 3. native tests (`cargo test`; burn's Flex CPU backend and wgpu on Vulkan/lavapipe)
//! 4. wasm tests in headless Chromium (`wasm-bindgen-test-runner` + ChromeDriver), WebGPU on
//! 5. the release web build (Trunk)
//! 6. Playwright end-to-end tests against that build, with and without WebGPU
//!
//! A persistent `CARGO_TARGET_DIR` is honoured (and recommended: burn's compile is long).

use std::time::Instant;

use anyhow::{Result, bail};

use crate::http::{self, Site};
use crate::tools::{self, Tools, WASM_TARGET};
use crate::{root, serve, target_dir};

/// One step of the test run.
type Step = fn(&Tools) -> Result<()>;

/// Crates tested natively (the web crate is tested in the browser instead).
const NATIVE: &[&str] = &[
    "switchscope-text",
    "switchscope-core",
    "switchscope-cli",
    "xtask",
];

pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("unknown option {arg:?} for test");
    }
    let started = Instant::now();
    let tools = tools::ensure_all()?;
    let steps: [(&str, Step); 7] = [
        ("rustfmt", fmt),
        ("clippy (native)", clippy_native),
        ("clippy (wasm32)", clippy_wasm),
        ("native tests", native_tests),
        ("wasm tests in Chromium", wasm_tests),
        ("release web build", serve::build_web),
        ("end-to-end tests", e2e),
    ];
    let total = steps.len();
    for (done, (name, step)) in steps.into_iter().enumerate() {
        let t = Instant::now();
        eprintln!("\nxtask: ── {name} ──");
        if let Err(e) = step(&tools) {
            eprintln!(
                "\nxtask test: {done} passed, 1 failed ({name}), {} not run, {:.0} s",
                total - done - 1,
                started.elapsed().as_secs_f64()
            );
            return Err(e);
        }
        eprintln!("xtask: {name} passed in {:.0} s", t.elapsed().as_secs_f64());
    }
    println!(
        "\nxtask test: {total} passed, 0 failed ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn package_args(crates: &[&str]) -> Vec<String> {
    crates
        .iter()
        .flat_map(|c| ["-p".to_owned(), (*c).to_owned()])
        .collect()
}

fn fmt(tools: &Tools) -> Result<()> {
    tools::run(tools.command("cargo").args(["fmt", "--all", "--check"]))
}

fn clippy_native(tools: &Tools) -> Result<()> {
    tools::run(
        tools
            .command("cargo")
            .arg("clippy")
            .args(package_args(NATIVE))
            .args(["--all-targets", "--locked", "--", "-D", "warnings"]),
    )
}

/// The web crate twice, as Trunk builds it: the worker (`compute`) and the page (`text`).
fn clippy_wasm(tools: &Tools) -> Result<()> {
    for features in ["compute", "text"] {
        tools::run(tools.command("cargo").args([
            "clippy",
            "-p",
            "switchscope-web",
            "--target",
            WASM_TARGET,
            "--all-targets",
            "--features",
            features,
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    Ok(())
}

fn native_tests(tools: &Tools) -> Result<()> {
    tools::run(
        tools
            .command("cargo")
            .arg("test")
            .args(package_args(NATIVE))
            .arg("--locked")
            // Mesa's lavapipe complains on every device creation without it.
            .env("XDG_RUNTIME_DIR", std::env::temp_dir()),
    )
}

/// The web crate's tests run in a dedicated worker of headless Chromium (as the app's compute
/// does), through ChromeDriver with the flags in `web/webdriver.json`. They are built with the
/// web app's release profile so that burn's compiled crates are shared with the Trunk build.
fn wasm_tests(tools: &Tools) -> Result<()> {
    tools::run(
        tools
            .command("cargo")
            .args(["test", "-p", "switchscope-web", "--target", WASM_TARGET])
            .args([
                "--features",
                "compute",
                "--profile",
                "wasm-release",
                "--locked",
            ])
            .env("CHROMEDRIVER", "/usr/bin/chromedriver")
            .env("WASM_BINDGEN_TEST_TIMEOUT", "300")
            .current_dir(root().join("web")),
    )
}

fn e2e(tools: &Tools) -> Result<()> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("tests/e2e"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".test.mjs"))
        .map(|name| format!("tests/e2e/{name}"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no end-to-end tests found in tests/e2e");
    }
    // The checkpoint tests write Hugging Face checkpoints with the CLI into a directory the
    // server mounts at `/checkpoints/`.
    tools::run(
        tools
            .command("cargo")
            .args(["build", "-p", "switchscope-cli", "--locked"]),
    )?;
    let checkpoints = target_dir().join("e2e-checkpoints");
    if checkpoints.exists() {
        std::fs::remove_dir_all(&checkpoints)?;
    }
    std::fs::create_dir_all(&checkpoints)?;
    let mut site = Site::new(root().join("dist"));
    site.mounts
        .push(("checkpoints".to_owned(), checkpoints.clone()));
    let addr = http::spawn(site)?;
    tools::run(
        tools
            .command("node")
            .args(["--test", "--test-concurrency=1"])
            .args(&files)
            .env("SWITCHSCOPE_URL", format!("http://{addr}/"))
            .env("SWITCHSCOPE_CLI", target_dir().join("debug/switchscope"))
            .env("SWITCHSCOPE_CHECKPOINTS", &checkpoints),
    )
}
