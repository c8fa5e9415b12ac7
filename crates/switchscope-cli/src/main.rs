//! `switchscope`: run Switch Transformers from the command line.
//!
//! `--model DIR` is a Hugging Face checkpoint directory (`config.json` with `model.safetensors`,
//! sharded safetensors or `pytorch_model.bin`). With `--json`, each command prints one JSON
//! object on stdout. Errors print one line on stderr and exit with status 1.

mod bench;
mod commands;
mod display;
mod http;
mod open;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
