//! The web crate's tests, run by `wasm-bindgen-test-runner` in a dedicated worker of headless
//! Chromium with WebGPU enabled (flags in `web/webdriver.json`), where the app computes too.

use switchscope_core::BackendKind;
use switchscope_core::backend::{cpu_device, gpu_device};
use switchscope_core::probe::{self, TOLERANCE};
use switchscope_web::gpu;
use switchscope_web::protocol::{BackendPreference, Request, Response};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

/// The page's own logic (`switchscope_web::page`).
#[path = "browser/page.rs"]
mod page;

#[wasm_bindgen_test]
fn requests_round_trip_as_json() {
    let req = Request::Probe {
        backend: BackendPreference::Cpu,
    };
    let json = serde_json::to_string(&req).unwrap();
    assert_eq!(json, r#"{"type":"probe","backend":"cpu"}"#);
    assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
    let ready = serde_json::to_string(&Response::Ready).unwrap();
    assert_eq!(ready, r#"{"type":"ready"}"#);
}

#[wasm_bindgen_test]
fn preference_rejects_unknown_names() {
    assert_eq!(
        BackendPreference::parse("webgpu"),
        Ok(BackendPreference::Webgpu)
    );
    assert_eq!(BackendPreference::parse(""), Ok(BackendPreference::Auto));
    assert!(
        BackendPreference::parse("cuda")
            .unwrap_err()
            .contains("cuda")
    );
}

#[wasm_bindgen_test]
async fn cpu_backend_in_wasm_matches_reference() {
    let got = probe::run(&cpu_device()).await.unwrap();
    let diff = probe::max_abs_diff(&got, &probe::reference());
    assert!(
        diff <= TOLERANCE,
        "Flex in wasm differs from the reference by {diff}"
    );
}

/// WebGPU on SwiftShader: an adapter exists in the worker, burn computes on it, and the result
/// agrees with the CPU backend and the plain reference.
#[wasm_bindgen_test]
async fn webgpu_in_a_worker_matches_cpu() {
    let adapter = gpu::find_adapter()
        .await
        .expect("Chromium runs with --enable-unsafe-webgpu, so an adapter must exist");
    assert!(
        !adapter.features.is_empty()
            || !adapter.vendor.is_empty()
            || !adapter.architecture.is_empty()
    );
    let device = gpu_device(BackendKind::Webgpu).await.unwrap();
    let gpu = probe::run(&device).await.unwrap();
    let cpu = probe::run(&cpu_device()).await.unwrap();
    assert!(
        probe::max_abs_diff(&gpu, &cpu) <= TOLERANCE,
        "webgpu {gpu:?} vs cpu {cpu:?}"
    );
    assert!(probe::max_abs_diff(&gpu, &probe::reference()) <= TOLERANCE);
    // The second request reuses the initialised device.
    let again = gpu_device(BackendKind::Webgpu).await.unwrap();
    assert_eq!(probe::run(&again).await.unwrap(), gpu);
}

/// The page reads the worker's messages with its own mirror types: they must decode what the
/// core's types encode.
#[wasm_bindgen_test]
fn protocol_mirrors_decode_the_core_types() {
    use switchscope_core::model::StackKind;
    use switchscope_core::model::generate::Sampling as CoreSampling;
    use switchscope_core::model::routing::LayerRouting;
    use switchscope_core::shards::store::{
        ExpertId, Origin, ShardEvent, ShardEventKind, StoreStats,
    };
    use switchscope_web::protocol as p;

    let routing = LayerRouting {
        stack: StackKind::Decoder,
        block: 3,
        expert: vec![2, -1],
        chosen: vec![2, 0],
        weight: vec![0.75, 0.5],
        probs: vec![vec![0.1, 0.15, 0.75], vec![0.5, 0.25, 0.25]],
        capacity: 1,
    };
    let route: p::Route = serde_json::from_value(serde_json::to_value(&routing).unwrap()).unwrap();
    assert_eq!(route.stack, p::StackName::Decoder);
    assert_eq!(
        (route.block, route.expert.clone(), route.capacity),
        (3, vec![2, -1], 1)
    );

    let event = ShardEvent {
        expert: ExpertId {
            stack: StackKind::Encoder,
            block: 1,
            expert: 7,
        },
        file: "experts/encoder.b1.e7.safetensors".into(),
        kind: ShardEventKind::Fetched {
            bytes: 1234,
            origin: Origin::Cache,
            prefetched: true,
            ms: 2.5,
        },
    };
    let mirrored: p::ShardEvent =
        serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
    assert_eq!(
        (mirrored.stack, mirrored.block, mirrored.expert),
        (p::StackName::Encoder, 1, 7)
    );
    assert_eq!(
        mirrored.kind,
        p::ShardEventKind::Fetched {
            bytes: 1234,
            origin: p::Origin::Cache,
            prefetched: true,
            ms: 2.5
        }
    );
    let stats: p::StoreStats =
        serde_json::from_value(serde_json::to_value(StoreStats::default()).unwrap()).unwrap();
    assert_eq!(stats, p::StoreStats::default());

    let sampling = p::Sampling::Sample {
        temperature: 0.7,
        top_k: Some(5),
        top_p: None,
        seed: 9,
    };
    let core: CoreSampling =
        serde_json::from_value(serde_json::to_value(sampling).unwrap()).unwrap();
    assert_eq!(
        core,
        CoreSampling::Sample {
            temperature: 0.7,
            top_k: Some(5),
            top_p: None,
            seed: 9
        }
    );
}

/// A shard the server does not have is a typed error naming it (no retry for a 404); bytes
/// that do not match the manifest's SHA-256, or its size, are refused with the reason and never
/// cached (a cached copy that no longer matches is dropped); the same bytes with their real
/// digest are accepted. The test runner also serves this crate's directory, so
/// `web/webdriver.json` stands in for a shard there.
#[wasm_bindgen_test]
async fn http_source_refuses_missing_and_corrupt_shards() {
    use switchscope_core::CoreError;
    use switchscope_core::shards::manifest::FileEntry;
    use switchscope_core::shards::source::sha256_hex;
    use switchscope_web::worker::http::{HttpSource, open_cache};
    use wasm_bindgen_futures::JsFuture;

    let refused = |got: Result<Vec<u8>, CoreError>, entry: &FileEntry, why: &str| match got {
        Err(CoreError::Shard { file, reason }) => {
            assert_eq!(file, entry.name);
            assert!(reason.contains(why), "{reason}");
        }
        other => panic!("expected a shard error ({why}), got {other:?}"),
    };
    let missing = FileEntry {
        name: "experts/encoder.b1.e0.safetensors".into(),
        bytes: 10,
        sha256: "0".repeat(64),
    };
    let source = HttpSource {
        base: "/no-such-model/".into(),
    };
    refused(source.get_verified(&missing).await, &missing, "404");

    let served: &[u8] = include_bytes!("../webdriver.json");
    let source = HttpSource { base: "/".into() };
    let intact = FileEntry {
        name: "webdriver.json".into(),
        bytes: served.len() as u64,
        sha256: sha256_hex(served),
    };
    // The digest with its last hex digit changed: the bytes are the server's, the check fails.
    let mut digest = intact.sha256.clone();
    let last = if digest.ends_with('0') { "1" } else { "0" };
    digest.replace_range(63.., last);
    let corrupt = FileEntry {
        sha256: digest,
        ..intact.clone()
    };
    let cached = || async {
        let cache = open_cache().await.expect("the Cache API in the worker");
        let found = JsFuture::from(cache.match_with_str("/webdriver.json"))
            .await
            .unwrap();
        !found.is_undefined()
    };
    refused(
        source.get_verified(&corrupt).await,
        &corrupt,
        "does not match its sha256",
    );
    assert!(!cached().await, "refused bytes are not cached");
    let longer = FileEntry {
        bytes: intact.bytes + 1,
        ..intact.clone()
    };
    refused(source.get_verified(&longer).await, &longer, "truncated");
    assert!(!cached().await);

    assert_eq!(source.get_verified(&intact).await.unwrap(), served);
    assert!(cached().await, "verified bytes are cached");
    // The cached copy does not match the corrupt entry: it is dropped, and the network's
    // bytes are refused too.
    refused(
        source.get_verified(&corrupt).await,
        &corrupt,
        "does not match its sha256",
    );
    assert!(!cached().await, "the mismatching cached copy is gone");
}

/// Our kernels (`switchscope_core::kernels`) on WebGPU (SwiftShader) against their plain-Rust
/// references: the quantized product (int8, int4; one token and 13; sizes that are not
/// multiples of the cube or the group), the sparse layer's gather/run/scatter and the router.
/// The same tolerance as natively: 1e-5 relative to the largest output.
#[wasm_bindgen_test]
async fn our_kernels_on_webgpu_match_their_references() {
    use switchscope_core::kernels::{self, Assignment, Gpu, QuantExpert, QuantMatrix, reference};
    use switchscope_core::model::routing::read_f32;
    use switchscope_core::shards::quant::{Scheme, quantize};
    use switchscope_core::tensor::{Tensor, TensorData};

    let device = gpu_device(BackendKind::Webgpu).await.unwrap();
    let gpu = Gpu::of(&device).expect("WebGPU is a CubeCL device");
    let mut state = 0x5EED_0005u64;
    let mut random = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    };
    let close = |got: &[f32], want: &[f32], what: &str| {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-5 * scale, "{what}: {worst} (scale {scale})");
    };
    let t2 =
        |v: Vec<f32>, shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(v, shape), &device);

    for scheme in [Scheme::Int8, Scheme::Int4] {
        for (rows, cols, n) in [(37, 45, 1), (130, 200, 13)] {
            let q = quantize(&random(rows * cols), rows, cols, scheme, 8).unwrap();
            let w = QuantMatrix::upload(&gpu, &q).unwrap();
            let x = random(n * cols);
            let got =
                read_f32(kernels::quant_matmul(&gpu, t2(x.clone(), [n, cols]), &w, true).unwrap())
                    .await
                    .unwrap();
            let want = reference::matmul(&x, n, &q, true);
            close(&got, &want, &format!("{scheme:?} {rows}x{cols} n{n}"));
        }

        let (tokens, d_model, d_ff) = (11, 40, 72);
        let wi = quantize(&random(d_ff * d_model), d_ff, d_model, scheme, 8).unwrap();
        let wo = quantize(&random(d_model * d_ff), d_model, d_ff, scheme, 8).unwrap();
        let expert = QuantExpert {
            wi: QuantMatrix::upload(&gpu, &wi).unwrap(),
            wo: QuantMatrix::upload(&gpu, &wo).unwrap(),
        };
        let rows = [7u32, 2, 9, 0];
        let weights = [0.5f32, 0.25, 1.0, 0.75];
        let x = random(tokens * d_model);
        let got = read_f32(
            kernels::sparse_ffn(
                &gpu,
                t2(x.clone(), [tokens, d_model]),
                &[Assignment {
                    expert: &expert,
                    rows: &rows,
                    weights: &weights,
                }],
            )
            .unwrap(),
        )
        .await
        .unwrap();
        let mut want = vec![0.0; tokens * d_model];
        reference::expert(&x, &rows, &weights, &wi, &wo, &mut want);
        close(&got, &want, &format!("{scheme:?} sparse ffn"));
    }

    let (seq, experts) = (70, 8);
    let logits: Vec<f32> = random(2 * seq * experts).iter().map(|v| v * 4.0).collect();
    let got = read_f32(kernels::route(&gpu, t2(logits.clone(), [2 * seq, experts]), seq).unwrap())
        .await
        .unwrap();
    let want = reference::route(&logits, seq, experts);
    for (g, r) in got
        .chunks_exact(experts + 2)
        .zip(want.chunks_exact(experts + 2))
    {
        close(&g[..experts], &r[..experts], "router probabilities");
        assert_eq!(g[experts..], r[experts..], "router choice and position");
    }
}
