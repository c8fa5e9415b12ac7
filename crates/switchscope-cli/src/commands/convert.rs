//! `convert`: a checkpoint into a converted model directory, optionally with what quantization
//! cost.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use switchscope_core::config::SwitchConfig;
use switchscope_core::eval::report::{QuantizationReport, quantization_report};
use switchscope_core::formats::convert::{ConvertOptions, Phase};
use switchscope_core::formats::quant::Scheme;

use crate::display::human_bytes;
use crate::open::load_tokenizer;

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The Hugging Face checkpoint directory.
    #[arg(long)]
    pub from: PathBuf,
    /// The directory to create (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// How expert weights are stored.
    #[arg(long, default_value = "int8", value_parser = ["int8", "int4", "f16", "f32"])]
    pub quant: String,
    /// Values per scale along the input dimension (int8, int4).
    #[arg(long, default_value_t = 32)]
    pub group_size: usize,
    /// Keep scales in f32 instead of f16.
    #[arg(long)]
    pub f32_scales: bool,
    /// How the dense weights are stored (int8: every matrix but the routers and the position
    /// biases, block-wise like the experts).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "int8"])]
    pub dense: String,
    /// Same as `--dense f16`.
    #[arg(long, conflicts_with = "dense")]
    pub f16_dense: bool,
    /// Then measure what quantization cost on a fixed input set: per-tensor relative error,
    /// routing agreement and greedy next-token agreement with the checkpoint.
    #[arg(long)]
    pub report: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn convert(args: ConvertArgs) -> Result<()> {
    let options = ConvertOptions {
        experts: Scheme::parse(&args.quant)?,
        group_size: args.group_size,
        f16_scales: !args.f32_scales,
        dense: if args.f16_dense {
            Scheme::F16
        } else {
            Scheme::parse(&args.dense)?
        },
    };
    let started = std::time::Instant::now();
    let mut bar = Progress::new(!args.json);
    let summary = switchscope_core::formats::convert::convert(
        &args.from,
        &args.out,
        &options,
        &mut |phase, done, total| {
            bar.update(phase, done, total);
        },
    )
    .with_context(|| format!("converting {}", args.from.display()))?;
    bar.finish();
    let m = &summary.manifest;
    let total = m.total_bytes();
    let seconds = started.elapsed().as_secs_f64();
    let report = if args.report {
        let inputs = report_inputs(&args.from, &summary.manifest.config)?;
        Some(pollster::block_on(quantization_report(
            &args.from, &args.out, &inputs, 8,
        ))?)
    } else {
        None
    };
    if args.json {
        let out = serde_json::json!({
            "out": args.out,
            "files": m.files.len(),
            "bytes": total,
            "source_f32_bytes": summary.source_f32_bytes,
            "compression": summary.source_f32_bytes as f64 / total as f64,
            "seconds": seconds,
            "report": report,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "wrote {} files, {} ({} as f32: {:.2}× smaller) to {} in {seconds:.1} s",
        m.files.len(),
        human_bytes(total),
        human_bytes(summary.source_f32_bytes),
        summary.source_f32_bytes as f64 / total as f64,
        args.out.display()
    );
    if let Some(r) = report {
        print_report(&r, options.experts);
    }
    Ok(())
}

/// The fixed input set of `--report`: the benchmark texts when the checkpoint has a
/// tokenizer, else 16 fixed pseudo-random id sequences.
fn report_inputs(from: &std::path::Path, config: &SwitchConfig) -> Result<Vec<Vec<u32>>> {
    if from.join("tokenizer.json").is_file() {
        let tokenizer = load_tokenizer(from)?;
        return crate::bench::TEXTS
            .iter()
            .map(|t| Ok(tokenizer.encode(t)?))
            .collect();
    }
    let mut rng = switchscope_core::runtime::generate::SplitMix64::new(11);
    let vocab = config.vocab_size as u64;
    Ok((0..16)
        .map(|_| {
            (0..24)
                .map(|_| 3 + (rng.next_u64() % (vocab - 3)) as u32)
                .chain([config.eos_token_id])
                .collect()
        })
        .collect())
}

fn print_report(r: &QuantizationReport, scheme: Scheme) {
    println!(
        "\nquantization report ({} tensors differ from the checkpoint):",
        r.tensors.len()
    );
    println!(
        "  relative error: mean {:.4}, largest {:.4}",
        r.mean_error(),
        r.tensors.first().map_or(0.0, |t| t.relative_error)
    );
    for t in r.tensors.iter().take(5) {
        println!("    {:.4}  {}", t.relative_error, t.name);
    }
    let goal = match scheme {
        Scheme::Int8 => Some(0.99),
        Scheme::Int4 => Some(0.97),
        _ => None,
    };
    let verdict = goal.map_or(String::new(), |g| {
        let met = if r.routing_agreement >= g {
            "met"
        } else {
            "NOT met"
        };
        format!(" (goal ≥ {:.0} %: {met})", g * 100.0)
    });
    println!(
        "  routing agreement: {:.2} % of {} decisions{verdict}",
        100.0 * r.routing_agreement,
        r.routing_decisions
    );
    println!(
        "  greedy next-token agreement: {:.2} % of {} positions",
        100.0 * r.next_token_agreement,
        r.next_token_positions
    );
}

/// A progress bar per conversion phase on stderr (redrawn in place on a terminal, one line per
/// phase otherwise).
struct Progress {
    visible: bool,
    tty: bool,
    phase: Option<Phase>,
    started: std::time::Instant,
    drawn: usize,
}

impl Progress {
    fn new(visible: bool) -> Self {
        use std::io::IsTerminal;
        Self {
            visible,
            tty: std::io::stderr().is_terminal(),
            phase: None,
            started: std::time::Instant::now(),
            drawn: usize::MAX,
        }
    }

    fn update(&mut self, phase: Phase, done: usize, total: usize) {
        if !self.visible {
            return;
        }
        if self.phase != Some(phase) {
            self.finish();
            self.phase = Some(phase);
            self.started = std::time::Instant::now();
            self.drawn = usize::MAX;
        }
        // Redraw on a terminal; elsewhere only the phase's end.
        if !self.tty && done < total {
            return;
        }
        let width = 30;
        let filled = (done * width).checked_div(total).unwrap_or(width);
        if filled == self.drawn && done < total {
            return;
        }
        self.drawn = filled;
        eprint!(
            "\r{:>9} [{}{}] {done}/{total} {:.1} s",
            format!("{phase:?}").to_lowercase(),
            "=".repeat(filled),
            " ".repeat(width - filled),
            self.started.elapsed().as_secs_f64()
        );
    }

    fn finish(&mut self) {
        if self.visible && self.phase.is_some() {
            eprintln!();
        }
        self.phase = None;
    }
}
