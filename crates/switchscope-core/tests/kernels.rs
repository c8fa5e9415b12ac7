//! Parity of our GPU kernels (`src/kernels/`) with their plain-Rust references, on native
//! wgpu (lavapipe on machines without a GPU). Random inputs from a fixed seed; odd sizes
//! (not multiples of the cube's 64 units, of the 8 rows per cube or of the quantization group).
//!
//! Tolerance: the kernels and the references both accumulate in f32, in different orders;
//! results agree to 1e-5 relative to the largest magnitude of each output (measured: about
//! 1e-6). Routing decisions (expert, position) must be identical.

use std::sync::OnceLock;

use switchscope_core::BackendKind;
use switchscope_core::backend::gpu_device;
use switchscope_core::backend::read_f32;
use switchscope_core::formats::quant::{Quantized, Scheme, quantize};
use switchscope_core::kernels::{self, Assignment, Gpu, QuantExpert, QuantMatrix, reference};
use switchscope_core::tensor::{Device, Tensor, TensorData};

#[path = "../../../tests/golden/open.rs"]
mod open;
use open::open_lazy;

const TOLERANCE: f32 = 1e-5;

/// A small deterministic generator (xorshift64*), so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// The wgpu device, initialised once for all tests of this binary (they run on threads, and
/// the runtime refuses a second initialisation that overlaps the first).
fn gpu() -> (Device, Gpu) {
    static GPU: OnceLock<(Device, Gpu)> = OnceLock::new();
    GPU.get_or_init(|| {
        let device = pollster::block_on(gpu_device(BackendKind::Wgpu))
            .expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
        let gpu = Gpu::of(&device).expect("wgpu is a CubeCL device");
        (device, gpu)
    })
    .clone()
}

fn tensor(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn read(t: Tensor<2>) -> Vec<f32> {
    pollster::block_on(read_f32(t)).unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= TOLERANCE * scale,
        "{what}: max difference {worst} (scale {scale})"
    );
}

fn random_matrix(
    rng: &mut Rng,
    rows: usize,
    cols: usize,
    scheme: Scheme,
    group: usize,
) -> Quantized {
    quantize(&rng.values(rows * cols), rows, cols, scheme, group).unwrap()
}

#[test]
fn quantized_matmul_matches_reference() {
    let (device, gpu) = gpu();
    let mut rng = Rng(0x5EED_0001);
    // (rows, cols, group, tokens): decode (1 token) and prefill (many), odd sizes, the default
    // model's expert and a switch-base-sized one
    let cases = [
        (37, 45, 8, 1),
        (37, 45, 8, 13),
        (130, 200, 32, 1),
        (512, 192, 32, 9),
        (192, 512, 32, 64),
        (3072, 768, 32, 1),
        (100, 1000, 64, 3),
    ];
    for scheme in [Scheme::Int8, Scheme::Int4] {
        for &(rows, cols, group, n) in &cases {
            let q = random_matrix(&mut rng, rows, cols, scheme, group);
            let w = QuantMatrix::upload(&gpu, &q).unwrap();
            assert_eq!(w.parts(), 1);
            let x = rng.values(n * cols);
            for relu in [false, true] {
                let got = read(
                    kernels::quant_matmul(&gpu, tensor(x.clone(), [n, cols], &device), &w, relu)
                        .unwrap(),
                );
                let want = reference::matmul(&x, n, &q, relu);
                assert_close(
                    &got,
                    &want,
                    &format!("{scheme:?} {rows}x{cols} g{group} n{n} relu {relu}"),
                );
            }
        }
    }
}

#[test]
fn matrices_split_by_rows_give_the_same_product() {
    let (device, gpu) = gpu();
    let mut rng = Rng(0x5EED_0002);
    for scheme in [Scheme::Int8, Scheme::Int4] {
        let q = random_matrix(&mut rng, 101, 96, scheme, 32);
        let whole = QuantMatrix::upload(&gpu, &q).unwrap();
        // a binding limit of 7 rows' worth of bytes: 15 buffers, the last one partial
        let row_bytes = if scheme == Scheme::Int8 { 96 } else { 48 };
        let split = QuantMatrix::upload_split(&gpu, &q, 7 * row_bytes).unwrap();
        assert_eq!(split.parts(), 15, "{scheme:?}");
        assert_eq!(split.device_bytes(), whole.device_bytes());
        let x = tensor(rng.values(5 * 96), [5, 96], &device);
        let a = read(kernels::quant_matmul(&gpu, x.clone(), &whole, false).unwrap());
        let b = read(kernels::quant_matmul(&gpu, x, &split, false).unwrap());
        assert_eq!(a, b, "{scheme:?}");
        // the transient f32 copy used for prefill: exactly the reference's dequantization
        assert_eq!(
            read(split.dequantize(&gpu)),
            q.dequantize(),
            "{scheme:?} dequantize"
        );
        assert_eq!(
            read(whole.dequantize(&gpu)),
            q.dequantize(),
            "{scheme:?} dequantize"
        );
        let err = QuantMatrix::upload_split(&gpu, &q, 16).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}

/// Where the adapter has `shader-f16` (lavapipe does; SwiftShader, behind the browser tests,
/// does not), scales that are exactly f16 values, as the shards store them, stay f16 on the
/// device: less memory, and bit for bit the same results as f32 scales.
#[test]
fn f16_scales_where_exact_give_identical_results() {
    let (device, gpu) = gpu();
    assert!(gpu.has_f16(), "lavapipe offers shader-f16: {gpu:?}");
    let gpu32 = gpu.clone().with_f16(false);
    assert!(!gpu32.has_f16());
    let mut rng = Rng(0x5EED_0006);
    for scheme in [Scheme::Int8, Scheme::Int4] {
        let mut q = random_matrix(&mut rng, 70, 100, scheme, 32);
        for s in &mut q.scales {
            *s = half::f16::from_f32(*s).to_f32();
        }
        let a = QuantMatrix::upload(&gpu, &q).unwrap();
        let b = QuantMatrix::upload(&gpu32, &q).unwrap();
        assert!(a.half_scales() && !b.half_scales(), "{scheme:?}");
        assert!(a.device_bytes() < b.device_bytes());
        for n in [1, 5, 13] {
            let x = tensor(rng.values(n * 100), [n, 100], &device);
            let with_f16 = read(kernels::quant_matmul(&gpu, x.clone(), &a, true).unwrap());
            let with_f32 = read(kernels::quant_matmul(&gpu32, x, &b, true).unwrap());
            assert_eq!(with_f16, with_f32, "{scheme:?} n{n}");
        }
        assert_eq!(read(a.dequantize(&gpu)), q.dequantize());
        // scales that are not f16 values stay f32
        let other = random_matrix(&mut rng, 70, 100, scheme, 32);
        assert!(!QuantMatrix::upload(&gpu, &other).unwrap().half_scales());
    }
}

#[test]
fn sparse_ffn_gathers_runs_and_scatters_each_expert() {
    let (device, gpu) = gpu();
    let mut rng = Rng(0x5EED_0003);
    let (tokens, d_model, d_ff) = (23, 72, 136);
    for scheme in [Scheme::Int8, Scheme::Int4] {
        let qs: Vec<(Quantized, Quantized)> = (0..3)
            .map(|_| {
                (
                    random_matrix(&mut rng, d_ff, d_model, scheme, 32),
                    random_matrix(&mut rng, d_model, d_ff, scheme, 32),
                )
            })
            .collect();
        let experts: Vec<QuantExpert> = qs
            .iter()
            .map(|(wi, wo)| QuantExpert {
                wi: QuantMatrix::upload(&gpu, wi).unwrap(),
                wo: QuantMatrix::upload(&gpu, wo).unwrap(),
            })
            .collect();
        // rows 0..23 over three experts, in no particular order, some dropped: the expert with
        // 5 rows and the one with 1 (a scale without upload) run fused, the one with 11 on a
        // dequantized copy
        assert!((5..11).contains(&kernels::FUSED_MAX_TOKENS));
        let rows: [Vec<u32>; 3] = [
            vec![3, 0, 9, 22, 14],
            vec![1, 2, 4, 6, 7, 8, 10, 11, 12, 13, 15],
            vec![19],
        ];
        let weights: Vec<Vec<f32>> = rows
            .iter()
            .map(|r| r.iter().map(|_| rng.next().abs()).collect())
            .collect();
        let x = rng.values(tokens * d_model);
        let assignments: Vec<Assignment<'_>> = (0..3)
            .map(|e| Assignment {
                expert: &experts[e],
                rows: &rows[e],
                weights: &weights[e],
            })
            .collect();
        let got = read(
            kernels::sparse_ffn(
                &gpu,
                tensor(x.clone(), [tokens, d_model], &device),
                &assignments,
            )
            .unwrap(),
        );

        let mut want = vec![0.0; tokens * d_model];
        for e in 0..3 {
            reference::expert(&x, &rows[e], &weights[e], &qs[e].0, &qs[e].1, &mut want);
        }
        assert_close(&got, &want, &format!("{scheme:?} sparse ffn"));
        for dropped in [5, 16, 17, 18, 20, 21] {
            assert!(
                got[dropped * d_model..(dropped + 1) * d_model]
                    .iter()
                    .all(|&v| v == 0.0)
            );
        }

        // an index outside the input is refused before anything runs
        let bad = [Assignment {
            expert: &experts[0],
            rows: &[23],
            weights: &[1.0],
        }];
        let err = kernels::sparse_ffn(&gpu, tensor(x.clone(), [tokens, d_model], &device), &bad)
            .unwrap_err();
        assert!(err.to_string().contains("row 23"), "{err}");
    }
}

#[test]
fn router_kernel_matches_reference() {
    let (device, gpu) = gpu();
    let mut rng = Rng(0x5EED_0004);
    // (batch, seq, experts): a decode step, sequences longer than the cube's 64 units
    for &(batch, seq, experts) in &[
        (1, 1, 8),
        (2, 37, 8),
        (3, 130, 16),
        (1, 700, 256),
        (1, 5, 3),
    ] {
        let logits: Vec<f32> = rng
            .values(batch * seq * experts)
            .iter()
            .map(|v| v * 4.0)
            .collect();
        let got = read(
            kernels::route(
                &gpu,
                tensor(logits.clone(), [batch * seq, experts], &device),
                seq,
            )
            .unwrap(),
        );
        let want = reference::route(&logits, seq, experts);
        let w = experts + 2;
        for (row, (g, r)) in got.chunks_exact(w).zip(want.chunks_exact(w)).enumerate() {
            assert_close(&g[..experts], &r[..experts], &format!("probs of row {row}"));
            assert_eq!(
                g[experts..],
                r[experts..],
                "choice/position of row {row} ({batch}x{seq}x{experts})"
            );
        }
    }
    // ties go to the lowest expert, and positions count per sequence
    let logits = vec![
        1.0, 1.0, 0.0, // tie → 0
        0.0, 2.0, 2.0, // tie → 1
        5.0, 0.0, 0.0, // 0, second in expert 0
        1.0, 1.0, 0.0, // next sequence: 0, first there
        0.0, 0.0, 3.0, // 2
        0.0, 0.0, 1.0, // 2, second
    ];
    let got = read(kernels::route(&gpu, tensor(logits, [6, 3], &device), 3).unwrap());
    let decisions: Vec<(f32, f32)> = got.chunks_exact(5).map(|r| (r[3], r[4])).collect();
    assert_eq!(
        decisions,
        vec![
            (0.0, 1.0),
            (1.0, 1.0),
            (0.0, 2.0),
            (0.0, 1.0),
            (2.0, 1.0),
            (2.0, 2.0)
        ]
    );
    let err = kernels::route(&gpu, tensor(vec![0.0; 8], [4, 2], &device), 3).unwrap_err();
    assert!(err.to_string().contains("sequences"), "{err}");
}

/// A converted model loaded lazily on `device` as the app loads it, with our kernels or with
/// burn's generic path (`generic_experts`).
fn open_shipped(
    dir: &std::path::Path,
    device: &Device,
    generic_experts: bool,
) -> (
    switchscope_core::model::SwitchConfig,
    switchscope_core::Switch,
    std::sync::Arc<switchscope_core::runtime::store::ExpertStore>,
) {
    let options = switchscope_core::runtime::store::StoreOptions {
        generic_experts,
        ..Default::default()
    };
    let (config, model, store) = open_lazy(dir, device, options).unwrap();
    assert_eq!(store.kernels().is_some(), !generic_experts);
    (config, model, store)
}

/// The shipped model (int8 experts) and its int4 variant, loaded lazily on wgpu as the app
/// loads them: with our kernels (the default) and with burn's generic path (experts
/// dequantized to f32), the routing of every token in every sparse layer and the greedy
/// tokens are the same, and equal to PyTorch's on the shipped weights (int8).
#[test]
fn the_model_on_our_kernels_routes_and_generates_like_the_generic_path() {
    use std::path::Path;
    use switchscope_core::runtime::generate::GenerateOptions;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/switchscope-mini/reference.json"))
            .unwrap(),
    )
    .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let (device, _) = gpu();
    let options = GenerateOptions {
        max_new_tokens: 8,
        ..GenerateOptions::default()
    };
    for variant in ["switchscope-mini", "switchscope-mini-int4"] {
        let dir = root.join("public/models").join(variant);
        let run = |generic_experts: bool, input: &[u32]| {
            let (_, model, store) = open_shipped(&dir, &device, generic_experts);
            let g =
                pollster::block_on(model.generate(input, &options, |_| std::future::ready(true)))
                    .unwrap();
            let routing: Vec<Vec<i32>> = g
                .encoder_routing
                .iter()
                .chain(g.steps.iter().flat_map(|s| &s.routing))
                .map(|l| l.expert.clone())
                .collect();
            (g.output_ids, routing, store.stats().peak_resident_bytes)
        };
        for ex in reference["examples"].as_array().unwrap().iter().take(3) {
            let input = ids(&ex["input_ids"]);
            let (ids_k, routing_k, bytes_k) = run(false, &input);
            let (ids_g, routing_g, bytes_g) = run(true, &input);
            let source = ex["source"].as_str().unwrap();
            assert_eq!(routing_k, routing_g, "{variant} {source}: routing");
            assert_eq!(ids_k, ids_g, "{variant} {source}: greedy tokens");
            if variant == "switchscope-mini" {
                let pytorch = ids(&ex["shipped"]["output_ids"]);
                let n = ids_k.len().min(pytorch.len());
                assert_eq!(ids_k[..n], pytorch[..n], "{source}: PyTorch's tokens");
            }
            // quantized experts take a quarter (int8) or an eighth (int4) of the device memory
            assert!(
                bytes_k * 3 < bytes_g,
                "{variant}: {bytes_k} vs {bytes_g} device bytes"
            );
        }
    }
}

/// A sequence longer than the router kernel takes (1024 tokens) is routed on the host and its
/// experts still run on the kernels: the same routing as burn's generic path.
#[test]
fn sequences_longer_than_the_router_kernel_still_run() {
    use std::path::Path;
    use switchscope_core::kernels::router::MAX_SEQ;
    use switchscope_core::model::{RunOptions, TokenBatch};

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/models/switchscope-mini");
    let (device, _) = gpu();
    let len = MAX_SEQ as usize + 40;
    let mut ids: Vec<u32> = (0..len as u32 - 1).map(|i| 3 + (i * 7919) % 5000).collect();
    ids.push(1);
    let encode = |generic_experts: bool| {
        let (config, model, _) = open_shipped(&dir, &device, generic_experts);
        let input = TokenBatch::new(std::slice::from_ref(&ids), 0).unwrap();
        let encoded =
            pollster::block_on(model.model().encode(&config, &input, RunOptions::default()))
                .unwrap();
        encoded.routing[0]
            .iter()
            .map(|l| l.expert.clone())
            .collect::<Vec<_>>()
    };
    let ours = encode(false);
    assert_eq!(ours[0].len(), len);
    assert_eq!(ours, encode(true));
}

/// Greedy decoding's pick on the device is the reference's, ties, NaN and −∞ included, over
/// lengths around the cube's 256 units; the embedding kernel copies the row the pick names.
#[test]
fn argmax_and_embed_kernels_match_their_references() {
    let (device, gpu) = gpu();
    let mut rng = Rng(0x05ee_da11);
    let pick = |values: &[f32]| {
        let t = tensor(values.to_vec(), [1, values.len()], &device);
        let token = kernels::argmax(&gpu, t).unwrap();
        (
            pollster::block_on(kernels::read_token(&gpu, &token)).unwrap(),
            token,
        )
    };
    for len in [1, 7, 255, 256, 257, 6000, 32128] {
        let mut values = rng.values(len);
        assert_eq!(
            pick(&values).0 as usize,
            reference::argmax(&values),
            "len {len}"
        );
        // a tie between two places: the lower wins
        let (a, b) = (len / 3, len - 1);
        values[a] = 5.0;
        values[b] = 5.0;
        assert_eq!(pick(&values).0 as usize, a, "tie, len {len}");
        // NaN is never the largest, unless it comes first (nothing beats it then)
        values[a] = f32::NAN;
        assert_eq!(
            pick(&values).0 as usize,
            reference::argmax(&values),
            "NaN, len {len}"
        );
        values[0] = f32::NAN;
        assert_eq!(pick(&values).0, 0, "NaN first, len {len}");
        let lows = vec![f32::NEG_INFINITY; len];
        assert_eq!(pick(&lows).0, 0, "all −∞, len {len}");
    }
    let err = kernels::argmax(&gpu, tensor(vec![1.0; 4], [2, 2], &device)).unwrap_err();
    assert!(err.to_string().contains("one non-empty row"), "{err}");

    let (vocab, width) = (300, 37);
    let table = rng.values(vocab * width);
    let mut logits = vec![0.0; vocab];
    logits[211] = 1.0;
    let (id, token) = pick(&logits);
    assert_eq!(id, 211);
    let row = kernels::embed(&gpu, tensor(table.clone(), [vocab, width], &device), &token).unwrap();
    assert_eq!(read(row), table[211 * width..212 * width].to_vec());
}

#[test]
fn layer_norm_kernel_matches_reference() {
    let (device, gpu) = gpu();
    let mut rng = Rng(0x0e75_4a11);
    for (rows, width) in [
        (1, 1),
        (1, 7),
        (3, 255),
        (2, 256),
        (5, 257),
        (1, 512),
        (4, 1000),
    ] {
        // rows of very different magnitudes: the scale must be each row's own
        let x: Vec<f32> = rng
            .values(rows * width)
            .iter()
            .enumerate()
            .map(|(i, v)| v * 10f32.powi((i / width) as i32 - 1))
            .collect();
        let weight = rng.values(width);
        let want = reference::rms_norm(&x, &weight, 1e-6);
        let w = Tensor::<1>::from_data(TensorData::new(weight, [width]), &device);
        let got =
            kernels::layer_norm(&gpu, tensor(x.clone(), [rows, width], &device), w, 1e-6).unwrap();
        // each row against its own largest output (rows differ in scale)
        let got = read(got);
        for r in 0..rows {
            let span = r * width..(r + 1) * width;
            assert_close(
                &got[span.clone()],
                &want[span],
                &format!("{rows}×{width}, row {r}"),
            );
        }
    }
    let w = Tensor::<1>::from_data(TensorData::new(vec![1.0f32; 3], [3]), &device);
    let err =
        kernels::layer_norm(&gpu, tensor(vec![1.0; 4], [1, 4], &device), w, 1e-6).unwrap_err();
    assert!(
        err.to_string().contains("width 3 for rows of width 4"),
        "{err}"
    );
}

/// A decode step's projection in one launch equals its reference with every combination of
/// what surrounds it (layer norm, scale, ReLU, residual), at sizes that are not multiples of
/// the cube's 8 features or 8 lanes; into a cache, it writes one position and nothing else.
#[test]
fn projection_kernel_matches_reference() {
    use kernels::Around;
    let (device, gpu) = gpu();
    let mut rng = Rng(0x9e0f_ec75);
    // (rows, d_in, n, norm, scale, relu, residual)
    for (rows, d_in, n, norm, scale, relu, residual) in [
        (1, 1, 1, false, None, false, false),
        (1, 192, 192, true, None, false, false),
        (2, 192, 512, true, None, true, false),
        (1, 512, 192, false, None, false, true),
        (3, 77, 6000, true, Some(0.072_168_78), false, false),
        (1, 300, 13, true, None, true, true),
    ] {
        // inputs far from unit scale: the norm must use the row's own
        let x: Vec<f32> = rng.values(rows * d_in).iter().map(|v| v * 30.0).collect();
        let w = rng.values(n * d_in);
        let gamma = rng.values(d_in);
        let res = rng.values(rows * n);
        let want = reference::project(
            &x,
            &w,
            n,
            norm.then_some((&gamma[..], 1e-6)),
            scale.unwrap_or(1.0),
            relu,
            residual.then_some(&res[..]),
        );
        let around = Around {
            norm: norm.then(|| {
                let g = Tensor::<1>::from_data(TensorData::new(gamma.clone(), [d_in]), &device);
                (g, 1e-6)
            }),
            scale,
            relu,
            residual: residual.then(|| tensor(res.clone(), [rows, n], &device)),
        };
        let got = kernels::project(
            &gpu,
            tensor(x, [rows, d_in], &device),
            tensor(w, [n, d_in], &device),
            &around,
        )
        .unwrap();
        assert_eq!(got.dims(), [rows, n]);
        let got = read(got);
        for r in 0..rows {
            let span = r * n..(r + 1) * n;
            let what = format!("{rows}×{d_in} → {n} (norm {norm}, relu {relu}), row {r}");
            assert_close(&got[span.clone()], &want[span], &what);
        }
    }

    // keys of one new position into a cache [batch, heads, slots, d_kv] at `slot`
    let (batch, heads, slots, d_kv, d_in, slot) = (2, 6, 9, 32, 192, 4);
    let x = rng.values(batch * d_in);
    let w = rng.values(heads * d_kv * d_in);
    let gamma = rng.values(d_in);
    let before = rng.values(batch * heads * slots * d_kv);
    let cache = Tensor::<4>::from_data(
        TensorData::new(before.clone(), [batch, heads, slots, d_kv]),
        &device,
    );
    let g = Tensor::<1>::from_data(TensorData::new(gamma.clone(), [d_in]), &device);
    kernels::project_into_cache(
        &gpu,
        tensor(x.clone(), [batch, d_in], &device),
        tensor(w.clone(), [heads * d_kv, d_in], &device),
        (g.clone(), 1e-6),
        &cache,
        slot,
    )
    .unwrap();
    let want = reference::project(&x, &w, heads * d_kv, Some((&gamma, 1e-6)), 1.0, false, None);
    let got = read(cache.reshape([batch * heads * slots, d_kv]));
    for b in 0..batch {
        for h in 0..heads {
            for s in 0..slots {
                let at = ((b * heads + h) * slots + s) * d_kv;
                let what = format!("cache sequence {b}, head {h}, position {s}");
                if s == slot {
                    let from = b * heads * d_kv + h * d_kv;
                    assert_close(&got[at..at + d_kv], &want[from..from + d_kv], &what);
                } else {
                    assert_eq!(&got[at..at + d_kv], &before[at..at + d_kv], "{what}");
                }
            }
        }
    }
    let full = Tensor::<4>::zeros([batch, heads, slots, d_kv], &device);
    let err = kernels::project_into_cache(
        &gpu,
        tensor(x, [batch, d_in], &device),
        tensor(w, [heads * d_kv, d_in], &device),
        (g, 1e-6),
        &full,
        slots,
    )
    .unwrap_err();
    assert!(err.to_string().contains("into position 9"), "{err}");
}

/// One query per sequence against cached keys, every head in one launch, equals the
/// reference for each sequence and head: caches longer than the keys attended to, biases
/// shared by every head or per head, at an offset, a row masked to the f32 minimum.
#[test]
fn attention_kernel_matches_reference() {
    use kernels::BiasLayout;
    let (device, gpu) = gpu();
    let mut rng = Rng(0xa77e_0d01);
    // (batch, heads, d_kv, keys, rows of the cache, bias layout per head or shared)
    for (batch, heads, d_kv, keys, rows, per_head) in [
        (1, 1, 1, 1, 1, true),
        (1, 6, 64, 1, 4, true),
        (2, 6, 64, 37, 37, false),
        (1, 4, 48, 300, 512, true),
        (3, 2, 256, 257, 260, false),
        (1, 8, 32, 2048, 2048, true),
    ] {
        let q = rng.values(batch * heads * d_kv);
        let k = rng.values(batch * heads * rows * d_kv);
        let v = rng.values(batch * heads * rows * d_kv);
        let offset = 5;
        let layout = BiasLayout {
            batch: if per_head { heads * keys } else { keys },
            head: if per_head { keys } else { 0 },
            offset,
        };
        let bias_len = offset + (batch - 1) * layout.batch + (heads - 1) * layout.head + keys;
        let mut bias: Vec<f32> = rng.values(bias_len).iter().map(|v| v * 4.0).collect();
        bias[offset] = f32::MIN; // a masked key
        let t4 = |values: Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(values, [batch, heads, rows, d_kv]), &device)
        };
        let got = kernels::attend_one(
            &gpu,
            tensor(q.clone(), [batch, heads * d_kv], &device),
            (t4(k.clone()), t4(v.clone())),
            keys,
            Tensor::<1>::from_data(TensorData::new(bias.clone(), [bias_len]), &device),
            layout,
        )
        .unwrap()
        .expect("sizes the kernel takes");
        let got = read(got);
        for b in 0..batch {
            for h in 0..heads {
                let at = (b * heads + h) * d_kv;
                let kv_at = (b * heads + h) * rows * d_kv;
                let bias_at = b * layout.batch + h * layout.head + offset;
                let want = reference::attend(
                    &q[at..at + d_kv],
                    &k[kv_at..kv_at + keys * d_kv],
                    &v[kv_at..kv_at + keys * d_kv],
                    &bias[bias_at..bias_at + keys],
                );
                let what = format!("{batch}×{heads}×{d_kv}, {keys} keys: sequence {b}, head {h}");
                assert_close(&got[at..at + d_kv], &want, &what);
            }
        }
    }
    // more keys than the kernel holds: burn's path
    let big = |rows| Tensor::<4>::zeros([1, 1, rows, 8], &device);
    let none = kernels::attend_one(
        &gpu,
        tensor(vec![0.0; 8], [1, 8], &device),
        (big(2049), big(2049)),
        2049,
        Tensor::<1>::zeros([2049], &device),
        BiasLayout::default(),
    )
    .unwrap();
    assert!(none.is_none());
    let short = kernels::attend_one(
        &gpu,
        tensor(vec![0.0; 8], [1, 8], &device),
        (big(4), big(4)),
        4,
        Tensor::<1>::zeros([3], &device),
        BiasLayout::default(),
    );
    assert!(short.unwrap_err().to_string().contains("with 3 biases"));
}

/// One token through a table of a layer's experts, the expert chosen by the router kernel on
/// the device (its slot and routing weight never visit the host), gives what `sparse_ffn` gives
/// with the same routing decided on the host; a token dropped by the capacity gives exactly 0.
#[test]
fn routed_table_matches_sparse_ffn() {
    let (device, gpu) = gpu();
    let mut rng = Rng(0x5EED_0007);
    let (experts_n, d_model, d_ff) = (5, 72, 136);
    for scheme in [Scheme::Int8, Scheme::Int4] {
        let experts: Vec<QuantExpert> = (0..experts_n)
            .map(|_| QuantExpert {
                wi: QuantMatrix::upload(&gpu, &random_matrix(&mut rng, d_ff, d_model, scheme, 32))
                    .unwrap(),
                wo: QuantMatrix::upload(&gpu, &random_matrix(&mut rng, d_model, d_ff, scheme, 32))
                    .unwrap(),
            })
            .collect();
        let refs: Vec<&QuantExpert> = experts.iter().collect();
        let table = kernels::ExpertTable::build(&gpu, &refs).expect("one shape, one buffer each");
        assert_eq!(table.experts(), experts_n);
        for trial in 0..6 {
            let x = rng.values(d_model);
            let logits = rng.values(experts_n);
            let probs = {
                let max = logits.iter().copied().fold(f32::MIN, f32::max);
                let e: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                e.iter().map(|v| v / sum).collect::<Vec<_>>()
            };
            let chosen = reference::argmax(&probs);
            let capacity = if trial == 5 { 0 } else { 1 };
            let route = kernels::route_on_device(
                &gpu,
                tensor(logits.clone(), [1, experts_n], &device),
                1,
                capacity,
            )
            .unwrap();
            let got = read(
                table
                    .run(
                        &gpu,
                        tensor(x.clone(), [1, d_model], &device),
                        &route.slot,
                        &route.scale,
                    )
                    .unwrap(),
            );
            let decided = read(route.decision);
            assert_eq!(
                decided[experts_n] as usize, chosen,
                "{scheme:?} trial {trial}"
            );
            if capacity == 0 {
                assert!(
                    got.iter().all(|&v| v == 0.0),
                    "a dropped token gives 0: {got:?}"
                );
                continue;
            }
            let weight = decided[chosen];
            let want = read(
                kernels::sparse_ffn(
                    &gpu,
                    tensor(x.clone(), [1, d_model], &device),
                    &[Assignment {
                        expert: &experts[chosen],
                        rows: &[0],
                        weights: &[weight],
                    }],
                )
                .unwrap(),
            );
            assert_eq!(got, want, "{scheme:?} trial {trial}: expert {chosen}");
        }
    }
}
