//! The GPU decode loop, counted: what one decode step asks of the device (kernels launched,
//! uploads, read-backs the host waits for) on native wgpu (lavapipe on machines without a
//! GPU), with every expert resident (the steady state of a session).

use std::path::Path;

use switchscope_core::BackendKind;
use switchscope_core::backend::gpu_device;
use switchscope_core::counters::Tally;
use switchscope_core::runtime::generate::GenerateOptions;
use switchscope_core::runtime::store::StoreOptions;
use switchscope_core::wire::Stack;

#[path = "../../../tests/golden/open.rs"]
mod open;
use open::open_lazy;

/// The default model on wgpu with every expert made resident first; greedy decoding of 6
/// tokens past `</s>`.
#[test]
fn decode_counts_follow_the_call_graph() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("public/models/switchscope-mini");
    let device = pollster::block_on(gpu_device(BackendKind::Wgpu))
        .expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
    let (config, model, store) = open_lazy(&dir, &device, StoreOptions::default()).unwrap();
    pollster::block_on(async {
        for id in store.manifest().expert_ids() {
            store.expert(id.stack, id.block, id.expert).await.unwrap();
        }
    });
    let options = GenerateOptions {
        max_new_tokens: 6,
        ignore_eos: true,
        ..GenerateOptions::default()
    };
    let input = [100, 200, 300, 400, 1];
    let fetched = store.stats().fetches;
    let outer = Tally::start();
    let g =
        pollster::block_on(model.generate(&input, &options, |_| std::future::ready(true))).unwrap();
    let whole = outer.finish();
    assert_eq!(g.steps.len(), 6, "ignore_eos decodes every token");
    let per = g.decode_counts.per(g.steps.len());
    let sparse = config.sparse_blocks(Stack::Decoder).len() as f64;
    // Each sparse decoder layer's routing, then the logits: the host waits for each.
    assert_eq!(per.host_waits, sparse + 1.0, "{per:?}");
    assert_eq!(per.readbacks, per.host_waits, "{per:?}");
    // The token's id; the position biases and masks are made once per prompt.
    assert_eq!(per.uploads, 1.0, "{per:?}");
    assert!(per.dispatches >= 20.0, "every op is a kernel: {per:?}");
    // The decode counts are part of the whole generation's (the encoder's come on top).
    assert!(whole.dispatches > g.decode_counts.dispatches, "{whole:?}");
    assert!(whole.host_waits > g.decode_counts.host_waits, "{whole:?}");
    assert_eq!(store.stats().fetches, fetched, "every expert was resident");
}
