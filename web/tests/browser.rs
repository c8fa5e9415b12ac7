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
#[path = "browser/presets.rs"]
mod presets;

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
    let envelope = switchscope_web::protocol::Envelope {
        id: Some(7),
        body: Request::Stop,
    };
    let json = serde_json::to_string(&envelope).unwrap();
    assert_eq!(json, r#"{"id":7,"body":{"type":"stop"}}"#);
    assert_eq!(
        serde_json::from_str::<switchscope_web::protocol::Envelope<Request>>(&json).unwrap(),
        envelope
    );
}

/// Replies are matched to requests by id, not by order: a worker that answers the second
/// request first, and the first with an error, gives each caller its own answer.
#[wasm_bindgen_test]
async fn replies_reach_the_request_they_answer() {
    use switchscope_web::client::WorkerClient;
    use switchscope_web::protocol::BackendPreference as B;

    // Holds the first request, answers the second, then the first with an error.
    let script = r#"
        let held = null;
        self.onmessage = (e) => {
            const m = JSON.parse(e.data);
            if (held === null) { held = m; return; }
            self.postMessage(JSON.stringify({ id: m.id, body: { type: 'probe', backend: 'cpu',
                fallback_reason: null, adapter: null, result: [m.body.backend === 'webgpu' ? 2 : 1],
                cols: 1, tolerance: 0, cpu_result: [], max_abs_diff: 0, reference_diff: 0,
                matches: true, backend_ms: 0, cpu_ms: 0 } }));
            self.postMessage(JSON.stringify({ id: held.id, body: { type: 'error', message: 'first failed' } }));
        };
        self.postMessage(JSON.stringify({ body: { type: 'ready' } }));
    "#;
    let parts = js_sys::Array::of1(&script.into());
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("text/javascript");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options).unwrap();
    let url = web_sys::Url::create_object_url_with_blob(&blob).unwrap();
    let client = WorkerClient::spawn_at(&url).await.unwrap();
    let first = client.probe(B::Cpu);
    let second = client.probe(B::Webgpu);
    let (first, second) = futures_join(first, second).await;
    assert_eq!(
        first.unwrap_err().to_string(),
        switchscope_web::WebError::Remote("first failed".into()).to_string()
    );
    assert_eq!(second.unwrap().result, [2.0]);
}

/// Both futures to completion, polled together.
async fn futures_join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let std::task::Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let std::task::Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.expect("ready"), rb.expect("ready"))
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

/// Software renderers are recognised by the names their adapters give (or the browser's
/// fallback flag); this browser's adapter (SwiftShader) is one.
#[wasm_bindgen_test]
async fn software_adapters_are_recognised() {
    use switchscope_web::protocol::AdapterInfo;
    let named = |vendor: &str, architecture: &str, description: &str| AdapterInfo {
        vendor: vendor.into(),
        architecture: architecture.into(),
        description: description.into(),
        ..AdapterInfo::default()
    };
    assert_eq!(
        named("google", "swiftshader", "").software(),
        Some("SwiftShader")
    );
    assert_eq!(
        named("mesa", "", "llvmpipe (LLVM 19.1.7, 256 bits)").software(),
        Some("llvmpipe")
    );
    assert_eq!(
        named("microsoft", "", "Microsoft Basic Render Driver").software(),
        Some("Microsoft Basic Render Driver")
    );
    assert_eq!(named("nvidia", "hopper", "NVIDIA H200").software(), None);
    assert_eq!(named("apple", "metal-3", "").software(), None);
    let flagged = AdapterInfo {
        fallback: true,
        ..named("intel", "gen-12lp", "")
    };
    assert_eq!(flagged.software(), Some("a fallback adapter"));
    let here = gpu::find_adapter().await.expect("WebGPU on SwiftShader");
    assert_eq!(here.software(), Some("SwiftShader"), "{here:?}");
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

/// A shard the server does not have is a typed error naming it (no retry for a 404); bytes
/// that do not match the manifest's SHA-256, or its size, are refused with the reason and never
/// cached (a cached copy that no longer matches is dropped); the same bytes with their real
/// digest are accepted. The test runner also serves this crate's directory, so
/// `web/webdriver.json` stands in for a shard there.
#[wasm_bindgen_test]
async fn http_source_refuses_missing_and_corrupt_shards() {
    use switchscope_core::CoreError;
    use switchscope_core::formats::manifest::FileEntry;
    use switchscope_core::formats::manifest::sha256_hex;
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
    use switchscope_core::backend::read_f32;
    use switchscope_core::formats::quant::{Scheme, quantize};
    use switchscope_core::kernels::{self, Assignment, Gpu, QuantExpert, QuantMatrix, reference};
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
