//! The GPU decode loop, counted: what one decode step asks of the device (kernels launched,
//! uploads, read-backs the host waits for) on native wgpu (lavapipe on machines without a
//! GPU), with every expert resident (the steady state of a session).

use std::path::Path;
use std::sync::Arc;

use switchscope_core::BackendKind;
use switchscope_core::Switch;
use switchscope_core::backend::gpu_device;
use switchscope_core::config::SwitchConfig;
use switchscope_core::counters::Tally;
use switchscope_core::runtime::generate::{GenerateOptions, Progress};
use switchscope_core::runtime::store::{ExpertStore, StoreOptions};
use switchscope_core::tensor::Device;
use switchscope_core::wire::Stack;

#[path = "../../../tests/golden/open.rs"]
mod open;
use open::open_lazy;

/// The default model on wgpu, opened as the app opens it, with every expert made resident.
fn warm(options: StoreOptions) -> (SwitchConfig, Switch, Arc<ExpertStore>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("public/models/switchscope-mini");
    // initialised once for the tests' threads (the runtime refuses overlapping starts)
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    let device = DEVICE.get_or_init(|| {
        pollster::block_on(gpu_device(BackendKind::Wgpu))
            .expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)")
    });
    let (config, model, store) = open_lazy(&dir, device, options).unwrap();
    pollster::block_on(async {
        for id in store.manifest().expert_ids() {
            store.expert(id.stack, id.block, id.expert).await.unwrap();
        }
    });
    (config, model, store)
}

/// The default model on wgpu with every expert made resident first; greedy decoding of 6
/// tokens past `</s>`.
#[test]
fn decode_counts_follow_the_call_graph() {
    let (config, model, store) = warm(StoreOptions::default());
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
    // Every expert resident: the device chooses them and picks the token, and each step is
    // queued before the previous one is read; the host waits only after the last step.
    assert!(sparse > 0.0);
    assert_eq!(g.decode_counts.host_waits, 1, "{per:?}");
    assert_eq!(g.decode_counts.readbacks, 6, "one read per step: {per:?}");
    // The first step's token id; the later ones never leave the device, and the position
    // biases and masks are made once per prompt.
    assert_eq!(g.decode_counts.uploads, 1, "{per:?}");
    assert!(per.dispatches >= 20.0, "every op is a kernel: {per:?}");
    // The decode counts are part of the whole generation's (the encoder's come on top).
    assert!(whole.dispatches > g.decode_counts.dispatches, "{whole:?}");
    assert!(whole.host_waits > g.decode_counts.host_waits, "{whole:?}");
    assert_eq!(store.stats().fetches, fetched, "every expert was resident");
}

/// Choosing experts on the device changes nothing anyone can see: the same tokens, the same
/// routing (probabilities included), the same store counters and events as reading each
/// layer's routing first; also when the capacity drops every token.
#[test]
fn device_routing_changes_no_token_routing_or_store_counter() {
    use switchscope_core::model::RunOptions;

    for capacity_factor in [None, Some(0.0)] {
        let options = GenerateOptions {
            max_new_tokens: 8,
            ignore_eos: true,
            run: RunOptions {
                capacity_factor,
                ..RunOptions::default()
            },
            ..GenerateOptions::default()
        };
        let run = |host_routing: bool| {
            let (_, model, store) = warm(StoreOptions {
                host_routing,
                record_events: true,
                ..StoreOptions::default()
            });
            let g = pollster::block_on(model.generate(&[100, 200, 300, 400, 1], &options, |_| {
                std::future::ready(true)
            }))
            .unwrap();
            let mut stats = store.stats();
            let tables = std::mem::take(&mut stats.table_bytes);
            (g, stats, store.events(), tables)
        };
        let (device, device_stats, device_events, tables) = run(false);
        let (host, host_stats, host_events, no_tables) = run(true);
        assert!(tables > 0 && no_tables == 0, "{tables} {no_tables}");
        assert_eq!(device.output_ids, host.output_ids, "{capacity_factor:?}");
        assert_eq!(device.steps, host.steps, "{capacity_factor:?}");
        assert_eq!(device_stats, host_stats, "{capacity_factor:?}");
        assert_eq!(device_events, host_events, "{capacity_factor:?}");
        assert!(device.decode_counts.host_waits < host.decode_counts.host_waits);
        if capacity_factor == Some(0.0) {
            assert!(
                device
                    .steps
                    .iter()
                    .flat_map(|s| &s.routing)
                    .all(|l| l.expert == [-1])
            );
        }
    }
}

/// A step queued ahead that is not needed (the generation ended at a stop token, or the caller
/// stopped it) leaves nothing behind: the same tokens, steps, store counters and events as the
/// host's loop, which queues nothing ahead (sampling at temperature 0, routing read first).
#[test]
fn steps_queued_ahead_and_discarded_leave_no_trace() {
    use switchscope_core::wire::Sampling;

    let input = [100, 200, 300, 400, 1];
    let host_loop = GenerateOptions {
        max_new_tokens: 10,
        ignore_eos: true,
        sampling: Sampling::Sample {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        },
        ..GenerateOptions::default()
    };
    let (_, model, _) = warm(StoreOptions::default());
    let reference =
        pollster::block_on(model.generate(&input, &host_loop, |_| std::future::ready(true)))
            .unwrap();
    let k = 3;
    let kth = reference.output_ids[k];
    let run = |host: bool, stop_at: Option<u32>, stop_after: usize| {
        let (_, model, store) = warm(StoreOptions {
            host_routing: host,
            record_events: true,
            ..StoreOptions::default()
        });
        let mut options = if host {
            host_loop
        } else {
            GenerateOptions {
                sampling: Sampling::Greedy,
                ..host_loop
            }
        };
        options.stop_at = stop_at;
        options.ignore_eos = stop_at.is_none();
        let mut seen = 0;
        let g = pollster::block_on(model.generate(&input, &options, |p| {
            if let Progress::Step(_) = p {
                seen += 1;
            }
            std::future::ready(seen < stop_after)
        }))
        .unwrap();
        let mut stats = store.stats();
        stats.table_bytes = 0;
        (g, stats, store.events())
    };
    for (stop_at, stop_after) in [(Some(kth), usize::MAX), (None, k)] {
        let (device, device_stats, device_events) = run(false, stop_at, stop_after);
        let (host, host_stats, host_events) = run(true, stop_at, stop_after);
        assert!(
            device.steps.len() <= k,
            "{stop_at:?} {stop_after}: {}",
            device.steps.len()
        );
        assert_eq!(device.output_ids, host.output_ids);
        assert_eq!(
            device.output_ids,
            reference.output_ids[..device.output_ids.len()]
        );
        assert_eq!(device.steps, host.steps);
        assert_eq!(device_stats, host_stats);
        assert_eq!(device_events, host_events);
        assert_eq!(
            device.decode_counts.host_waits, 0,
            "the last step read had one queued behind it"
        );
    }
}
