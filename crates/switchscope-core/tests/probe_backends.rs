//! The probe on every native backend: Flex on the CPU and wgpu (Vulkan; lavapipe on machines
//! without a GPU). A machine without any Vulkan driver fails this test on purpose: the GPU path
//! is part of what the test suite proves. `cargo xtask test` installs Mesa's lavapipe.

use switchscope_core::BackendKind;
use switchscope_core::backend::{cpu_device, gpu_device};
use switchscope_core::probe::{self, TOLERANCE};

#[test]
fn wgpu_matches_cpu_and_reference() {
    let device = pollster::block_on(gpu_device(BackendKind::Wgpu))
        .expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
    let gpu = pollster::block_on(probe::run(&device)).unwrap();
    let cpu = pollster::block_on(probe::run(&cpu_device())).unwrap();
    let reference = probe::reference();
    assert!(
        probe::max_abs_diff(&gpu, &cpu) <= TOLERANCE,
        "wgpu {gpu:?} vs cpu {cpu:?}"
    );
    assert!(probe::max_abs_diff(&gpu, &reference) <= TOLERANCE);

    // The device is initialised once and reused: asking again must not re-initialise.
    let again = pollster::block_on(gpu_device(BackendKind::Wgpu)).unwrap();
    let second = pollster::block_on(probe::run(&again)).unwrap();
    assert_eq!(gpu, second);
}

#[test]
fn webgpu_is_not_in_native_builds() {
    let err = pollster::block_on(gpu_device(BackendKind::Webgpu)).unwrap_err();
    assert!(err.to_string().contains("webgpu"), "{err}");
}
