//! Project commands: `cargo xtask serve`, `cargo xtask test` (see the README) and
//! `cargo xtask fuzz` and `cargo xtask soak` (see docs/RELIABILITY.md), `cargo xtask bench`
//! (see docs/BENCHMARKS.md).
//!
//! Each command installs what it needs first (see [`tools`]), so each works on a fresh machine.

mod bench;
mod compress;
mod fuzz;
mod http;
#[cfg(test)]
mod layers;
mod plot;
mod serve;
mod soak;
mod test;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  serve [--port N] [--skip-build] [--dir NAME=PATH]
                                    build the web app in release and serve it on 127.0.0.1:N (8080),
                                    with PATH at /NAME/ (byte ranges, ETags)
  test                              install what tests need, then run every test (fmt, clippy,
                                    native, wasm in Chromium, end-to-end); stops at the first failure
  build-web                         build the web app in release into dist/
  setup                             only install the tools the other commands need
  fuzz [--seconds N] [TARGET...]    install nightly and cargo-fuzz, then run the fuzz targets
                                    (manifest, shard, tokenizer; default all) N seconds each
                                    (600), one after another; fails if any input crashes
  soak [--tokens N] [--backend cpu|webgpu] [--budget-mb MB] [--skip-build]
                                    one page session generating N tokens (6000): checks the
                                    expert budget, memory growth and tokens/s over time
  bench [--runs N] [--skip-build] [--python PATH] [PART...]
                                    the benchmarks of docs/BENCHMARKS.md (native, browser,
                                    shards, growth, coldstart; default all): tables in
                                    target/bench/report.md, plots in docs/bench/
                                    (--plot-only redraws them from the last measurements)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve::run(&args[1..]),
        Some("test") => test::run(&args[1..]),
        Some("build-web") => tools::ensure_web_tools().and_then(|t| serve::build_web(&t)),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("setup") => tools::ensure_all().map(|_| ()),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}\n\n{USAGE}")),
        None => Err(anyhow::anyhow!("a command is required\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's directory).
///
/// Read at run time (`cargo run` sets `CARGO_MANIFEST_DIR`), not compile time: with a
/// `CARGO_TARGET_DIR` shared between clones, the `xtask` binary may have been built in another.
pub fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` where set, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root().join("target"), PathBuf::from)
}
