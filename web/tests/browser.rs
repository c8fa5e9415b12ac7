//! The web crate's tests, run by `wasm-bindgen-test-runner` in a dedicated worker of headless
//! Chromium with WebGPU enabled (flags in `web/webdriver.json`), where the app computes too.

use switchscope_core::BackendKind;
use switchscope_core::backend::{cpu_device, gpu_device};
use switchscope_core::probe::{self, TOLERANCE};
use switchscope_web::gpu;
use switchscope_web::protocol::{BackendPreference, Request, Response};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

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

/// A shard the server does not have is a typed error naming it (no retry for a 404), and a
/// body that fails its checksum is not accepted.
#[wasm_bindgen_test]
async fn http_source_names_missing_shards() {
    use switchscope_core::CoreError;
    use switchscope_core::shards::manifest::FileEntry;
    use switchscope_web::worker::http::HttpSource;

    let source = HttpSource {
        base: "/no-such-model/".into(),
    };
    let entry = FileEntry {
        name: "experts/encoder.b1.e0.safetensors".into(),
        bytes: 10,
        sha256: "0".repeat(64),
    };
    match source.get_verified(&entry).await {
        Err(CoreError::Shard { file, reason }) => {
            assert_eq!(file, entry.name);
            assert!(reason.contains("404"), "{reason}");
        }
        other => panic!("expected a shard error, got {other:?}"),
    }
}
