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
