//! Installing the tools the build and the tests need, when they are missing.
//!
//! Versions are pinned: Trunk 0.21.14 (the last release that builds on Rust 1.95),
//! wasm-bindgen-cli at exactly the `wasm-bindgen` version in `Cargo.lock` (the CLI and the
//! library must agree), wasm-opt from npm `binaryen` 132 through `package-lock.json`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::root;

pub const TRUNK_VERSION: &str = "0.21.14";
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Debian packages for the browser and native GPU tests and the benchmark plots, with a file
/// that proves each present.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
    (
        "mesa-vulkan-drivers",
        "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json",
    ),
    // The text of the benchmark plots.
    (
        "fonts-dejavu-core",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ),
];

/// Paths and environment for commands that need the installed tools.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `PATH` with `node_modules/.bin` (wasm-opt) and cargo's bin directory in front.
    pub path: OsString,
}

impl Tools {
    /// A command with this environment, run in the workspace root.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("PATH", &self.path).current_dir(root());
        cmd
    }
}

/// Runs `cmd`, echoing it, and fails with its name if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(cmd));
    }
    Ok(())
}

/// The command line, as a shell would show it (program and arguments).
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// stdout of a command, or `None` when it cannot run or fails.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// The `wasm-bindgen` version locked in `Cargo.lock`.
pub fn locked_wasm_bindgen() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == r#"name = "wasm-bindgen""#
            && let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
        {
            return Ok(v.trim_matches('"').to_owned());
        }
    }
    bail!("Cargo.lock has no wasm-bindgen entry")
}

fn ensure_wasm_target() -> Result<()> {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == WASM_TARGET) {
        run(Command::new("rustup").args(["target", "add", WASM_TARGET]))?;
    }
    Ok(())
}

fn ensure_trunk() -> Result<()> {
    let want = format!("trunk {TRUNK_VERSION}");
    if output("trunk", &["--version"]).as_deref() != Some(want.as_str()) {
        eprintln!("xtask: installing trunk {TRUNK_VERSION} (about 15 CPU-minutes, once)");
        run(Command::new("cargo").args([
            "install",
            "--locked",
            &format!("trunk@{TRUNK_VERSION}"),
        ]))?;
    }
    Ok(())
}

fn ensure_wasm_bindgen() -> Result<()> {
    let version = locked_wasm_bindgen()?;
    let want = format!("wasm-bindgen {version}");
    let have = output("wasm-bindgen", &["--version"]);
    let runner = output("wasm-bindgen-test-runner", &["--version"]);
    if have.as_deref() != Some(want.as_str()) || runner.is_none() {
        eprintln!("xtask: installing wasm-bindgen-cli {version} (matches Cargo.lock)");
        // Not `--locked`: the CLI's own lock file names a crate version the registry lacks.
        run(Command::new("cargo").args(["install", "wasm-bindgen-cli", "--version", &version]))?;
    }
    Ok(())
}

fn ensure_npm() -> Result<()> {
    let root = root();
    let stamp = root.join("node_modules/.package-lock.json");
    let fresh = match (
        std::fs::metadata(&stamp),
        std::fs::metadata(root.join("package-lock.json")),
    ) {
        (Ok(s), Ok(l)) => s.modified()? >= l.modified()?,
        _ => false,
    };
    if !fresh || !root.join("node_modules/.bin/wasm-opt").exists() {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&root))?;
    }
    Ok(())
}

fn is_root() -> bool {
    output("id", &["-u"]).as_deref() == Some("0")
}

/// Installs the Debian packages the browser and GPU tests need, when missing.
pub fn ensure_apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, probe)| !Path::new(probe).exists())
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "these Debian packages are needed and missing: {}; install them with \
             `sudo apt-get install {}` and run again",
            missing.join(", "),
            missing.join(" ")
        );
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

fn tools() -> Result<Tools> {
    let mut paths = vec![root().join("node_modules/.bin"), cargo_bin()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    Ok(Tools {
        path: std::env::join_paths(paths)?,
    })
}

/// Everything `serve` needs: the wasm target, Trunk, wasm-bindgen, wasm-opt, and the crates.
pub fn ensure_web_tools() -> Result<Tools> {
    ensure_wasm_target()?;
    ensure_npm()?;
    ensure_wasm_bindgen()?;
    ensure_trunk()?;
    // Trunk builds offline; every crate must be here first.
    run(Command::new("cargo")
        .args(["fetch", "--locked"])
        .current_dir(root()))?;
    tools()
}

/// Everything `test` needs: the web tools plus Chromium, ChromeDriver and lavapipe.
pub fn ensure_all() -> Result<Tools> {
    ensure_apt()?;
    ensure_web_tools()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trunk refuses (offline) a wasm-bindgen other than the one Trunk.toml names, and that must
    /// be the library version locked in Cargo.lock.
    #[test]
    fn trunk_toml_names_the_locked_wasm_bindgen() {
        let trunk = std::fs::read_to_string(root().join("Trunk.toml")).unwrap();
        let locked = locked_wasm_bindgen().unwrap();
        assert!(
            trunk.contains(&format!("wasm_bindgen = \"{locked}\"")),
            "Trunk.toml must pin wasm_bindgen = \"{locked}\" (Cargo.lock's version)"
        );
    }
}
