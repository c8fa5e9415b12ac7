//! The subcommands.

mod convert;
mod inspect;
mod run;

use anyhow::Result;
use clap::{Parser, Subcommand};

use convert::ConvertArgs;
use inspect::InspectArgs;
use run::{ForwardArgs, GenerateArgs};

#[derive(Debug, Parser)]
#[command(
    name = "switchscope",
    version,
    about = "Run Switch Transformers and see their routing"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One teacher-forced pass: logits for every decoder position and the routing.
    Forward(ForwardArgs),
    /// Generate a continuation, greedy or sampled.
    Generate(GenerateArgs),
    /// Convert a Hugging Face checkpoint into a Switchscope model directory.
    Convert(ConvertArgs),
    /// Describe a converted model directory: config, sizes per part, experts per layer.
    Inspect(InspectArgs),
    /// Measurements (not tests): shard traffic and hit rates, random checkpoints.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Forward(args) => run::forward(args),
        Command::Generate(args) => run::generate(args),
        Command::Convert(args) => convert::convert(args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Bench(command) => crate::bench::run(command),
    }
}
