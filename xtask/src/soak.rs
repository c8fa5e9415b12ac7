//! `cargo xtask soak`: one long page session in headless Chromium (`tests/soak/soak.mjs`).
//!
//! A measurement, not a test: it generates at least `--tokens` tokens run after run and checks
//! that the resident expert bytes stay within the budget, that memory stops growing after the
//! warm-up and that tokens/s does not decay; the measurements go to `target/soak-<backend>.json`.

use anyhow::{Context, Result, bail};

use crate::root;
use crate::serve;
use crate::tools::{self};

pub fn run(args: &[String]) -> Result<()> {
    let mut tokens = "6000".to_owned();
    let mut backend = "cpu".to_owned();
    let mut budget_mb = "6".to_owned();
    let mut build = true;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--tokens" => tokens = value("--tokens")?,
            "--backend" => backend = value("--backend")?,
            "--budget-mb" => budget_mb = value("--budget-mb")?,
            "--skip-build" => build = false,
            other => bail!("unknown option {other:?} for soak"),
        }
    }
    if !matches!(backend.as_str(), "cpu" | "webgpu") {
        bail!("--backend must be cpu or webgpu, not {backend:?}");
    }
    let tools = tools::ensure_all()?;
    if build {
        serve::build_web(&tools)?;
    }
    let out = root().join("target").join(format!("soak-{backend}.json"));
    std::fs::create_dir_all(root().join("target"))?;
    let addr = serve::spawn(root().join("dist"))?;
    tools::run(
        tools
            .command("node")
            .arg("tests/soak/soak.mjs")
            .args(["--tokens", &tokens, "--backend", &backend])
            .args(["--budget-mb", &budget_mb])
            .arg("--out")
            .arg(&out)
            .env("SWITCHSCOPE_URL", format!("http://{addr}/")),
    )
}
