//! `bench kernels`: one expert's feed-forward `wo · relu(wi · x)` computed five ways on one GPU
//! adapter, at batch 1 (a decode step) and 64 tokens (prefill), at the default model's size and
//! at switch-base's (768 × 3072):
//!
//! - ours, int8 and int4: the shard's weights on the device as stored, dequantized in
//!   registers by our kernel (`switchscope_core::kernels`), gather/scatter folded in;
//! - burn's quantized tensors (`QuantScheme` Q8S / Q4S, block 32, f32 scales; `matmul` on them);
//! - dequantize then matmul: burn's quantized tensors dequantized on each call, then burn's f32
//!   matmul;
//! - f32: burn's matmul on f32 weights.
//!
//! Each method runs 3 times untimed (kernel compilation), then `--runs` times, each ending with
//! the output read back (so the device has finished); the figure is the median. Effective GB/s
//! is the weights' stored bytes (what the method keeps on the device) over that time.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use switchscope_core::BackendKind;
use switchscope_core::backend::gpu_device;
use switchscope_core::backend::read_f32;
use switchscope_core::formats::quant::{Scheme, quantize};
use switchscope_core::kernels::{Assignment, Gpu, QuantExpert, QuantMatrix, sparse_ffn};
use switchscope_core::runtime::generate::SplitMix64;
use switchscope_core::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use switchscope_core::tensor::{Device, Tensor, TensorData, activation};

use super::stats::median;

#[derive(Debug, Args)]
pub struct KernelsArgs {
    /// Measured runs per point (after 3 untimed ones).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Sizes as d_model×d_ff, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "192x512,768x3072")]
    sizes: Vec<String>,
    /// Token counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    tokens: Vec<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// One method at one size and token count.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub method: String,
    pub d_model: usize,
    pub d_ff: usize,
    pub tokens: usize,
    /// Median milliseconds per feed-forward (output read back), or `None` when it failed.
    pub ms: Option<f64>,
    /// Bytes of weights on the device for this method.
    pub weight_bytes: u64,
    pub gb_per_s: Option<f64>,
    /// Why a method could not run.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    adapter: String,
    runs: usize,
    points: Vec<Point>,
}

fn parse_size(s: &str) -> Result<(usize, usize)> {
    let (a, b) = s
        .split_once(['x', '×'])
        .with_context(|| format!("size {s:?} is not d_model×d_ff"))?;
    Ok((a.trim().parse()?, b.trim().parse()?))
}

fn random(rng: &mut SplitMix64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
        .collect()
}

/// Times `f` (which must end with a read-back): 3 untimed calls, then `runs`.
fn time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&ms))
}

fn read(t: Tensor<2>) -> Result<Vec<f32>> {
    Ok(pollster::block_on(read_f32(t))?)
}

fn burn_scheme(value: QuantValue) -> QuantScheme {
    QuantScheme::default()
        .with_value(value)
        .with_store(QuantStore::PackedU32(0))
        .per_block([32], ScaleDtype::F32)
}

/// The five methods at one point.
fn measure_point(
    device: &Device,
    gpu: &Gpu,
    (d_model, d_ff): (usize, usize),
    tokens: usize,
    runs: usize,
) -> Result<Vec<Point>> {
    let mut rng = SplitMix64::new((d_model * 31 + d_ff * 7 + tokens) as u64);
    let wi = random(&mut rng, d_ff * d_model, 0.05);
    let wo = random(&mut rng, d_model * d_ff, 0.05);
    let x = random(&mut rng, tokens * d_model, 1.0);
    let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [tokens, d_model]), device);
    let mut points = Vec::new();
    let mut push = |method: &str, bytes: u64, result: Result<f64>| {
        let (ms, error) = match result {
            Ok(ms) => (Some(ms), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        points.push(Point {
            method: method.to_owned(),
            d_model,
            d_ff,
            tokens,
            ms,
            weight_bytes: bytes,
            gb_per_s: ms.map(|ms| bytes as f64 / (ms * 1e-3) / 1e9),
            error,
        });
    };

    // ours
    for (name, scheme) in [("ours int8", Scheme::Int8), ("ours int4", Scheme::Int4)] {
        let expert = QuantExpert {
            wi: QuantMatrix::upload(gpu, &quantize(&wi, d_ff, d_model, scheme, 32)?)?,
            wo: QuantMatrix::upload(gpu, &quantize(&wo, d_model, d_ff, scheme, 32)?)?,
        };
        let rows: Vec<u32> = (0..tokens as u32).collect();
        let weights = vec![1.0f32; tokens];
        let result = time(runs, || {
            let a = [Assignment {
                expert: &expert,
                rows: &rows,
                weights: &weights,
            }];
            read(sparse_ffn(gpu, xt.clone(), &a)?)?;
            Ok(())
        });
        push(name, expert.device_bytes(), result);
    }

    // burn: the weights transposed to [in, out] so that x · W is a plain matmul
    let wi_t =
        Tensor::<2>::from_data(TensorData::new(wi.clone(), [d_ff, d_model]), device).transpose();
    let wo_t =
        Tensor::<2>::from_data(TensorData::new(wo.clone(), [d_model, d_ff]), device).transpose();
    let f32_bytes = (2 * d_model * d_ff * 4) as u64;
    for (value, bits) in [(QuantValue::Q8S, 8u64), (QuantValue::Q4S, 4)] {
        let q_bytes = 2 * (d_model * d_ff) as u64 * bits / 8 + 2 * (d_model * d_ff / 32) as u64 * 4;
        let scheme = burn_scheme(value);
        let label = if bits == 8 { "Q8S" } else { "Q4S" };
        let quantized = catch_unwind(AssertUnwindSafe(|| {
            (
                wi_t.clone().quantize_dynamic(&scheme),
                wo_t.clone().quantize_dynamic(&scheme),
            )
        }));
        let Ok((wi_q, wo_q)) = quantized else {
            let e = || Err(anyhow::anyhow!("burn could not quantize with {label}"));
            push(&format!("burn {label} matmul"), q_bytes, e());
            push(&format!("burn {label} dequantize + matmul"), q_bytes, e());
            continue;
        };
        let direct = time(runs, || {
            catch_unwind(AssertUnwindSafe(|| {
                let h = activation::relu(xt.clone().matmul(wi_q.clone()));
                read(h.matmul(wo_q.clone()))
            }))
            .map_err(|_| anyhow::anyhow!("burn's matmul panicked on {label} weights"))??;
            Ok(())
        });
        push(&format!("burn {label} matmul"), q_bytes, direct);
        let dequantized = time(runs, || {
            catch_unwind(AssertUnwindSafe(|| {
                let h = activation::relu(xt.clone().matmul(wi_q.clone().dequantize()));
                read(h.matmul(wo_q.clone().dequantize()))
            }))
            .map_err(|_| anyhow::anyhow!("burn's dequantize panicked on {label} weights"))??;
            Ok(())
        });
        push(
            &format!("burn {label} dequantize + matmul"),
            q_bytes,
            dequantized,
        );
    }
    let dense = time(runs, || {
        let h = activation::relu(xt.clone().matmul(wi_t.clone()));
        read(h.matmul(wo_t.clone()))?;
        Ok(())
    });
    push("burn f32 matmul", f32_bytes, dense);
    Ok(points)
}

pub fn run(args: &KernelsArgs) -> Result<()> {
    let device = pollster::block_on(gpu_device(BackendKind::Wgpu))?;
    let Some(gpu) = Gpu::of(&device) else {
        bail!("the wgpu device is not a CubeCL device");
    };
    let mut points = Vec::new();
    for size in &args.sizes {
        let (d_model, d_ff) = parse_size(size)?;
        for &tokens in &args.tokens {
            anyhow::ensure!(tokens >= 1, "token counts start at 1");
            points.extend(measure_point(
                &device,
                &gpu,
                (d_model, d_ff),
                tokens,
                args.runs,
            )?);
        }
    }
    let report = Report {
        adapter: format!("{gpu:?}"),
        runs: args.runs,
        points,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "adapter: {}; median of {} runs",
        report.adapter, report.runs
    );
    println!();
    println!("| size | tokens | method | ms | weights on device | effective GB/s |");
    println!("|---|---|---|---|---|---|");
    for p in &report.points {
        let ms = p.ms.map_or_else(
            || format!("failed: {}", p.error.as_deref().unwrap_or("")),
            |ms| format!("{ms:.3}"),
        );
        println!(
            "| {}×{} | {} | {} | {} | {:.2} MB | {} |",
            p.d_model,
            p.d_ff,
            p.tokens,
            p.method,
            ms,
            p.weight_bytes as f64 / 1e6,
            p.gb_per_s.map_or("—".into(), |g| format!("{g:.2}"))
        );
    }
    Ok(())
}
