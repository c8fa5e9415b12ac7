//! How results are shown: routing as text or JSON, byte counts for people.

use std::sync::Arc;

use serde::Serialize;
use switchscope_core::runtime::store::ExpertStore;
use switchscope_core::wire::LayerRouting;

/// The shards read so far (converted models only), as JSON.
pub fn shards_json(store: Option<&Arc<ExpertStore>>) -> serde_json::Value {
    store.map_or(serde_json::Value::Null, |s| {
        serde_json::json!(s.loaded_files())
    })
}

/// The routing of one sequence as the JSON contract names it.
#[derive(Debug, Serialize)]
pub struct RoutingJson<'a> {
    stack: &'a str,
    block: usize,
    expert: &'a [i32],
    probs: &'a [Vec<f32>],
    weight: &'a [f32],
    capacity: usize,
}

pub fn routing_json(routing: &[LayerRouting]) -> Vec<RoutingJson<'_>> {
    routing
        .iter()
        .map(|r| RoutingJson {
            stack: r.stack.as_str(),
            block: r.block,
            expert: &r.expert,
            probs: &r.probs,
            weight: &r.weight,
            capacity: r.capacity,
        })
        .collect()
}

pub fn print_routing(routing: &[LayerRouting]) {
    for r in routing {
        let experts: Vec<String> = r
            .expert
            .iter()
            .zip(&r.weight)
            .map(|(e, w)| {
                if *e < 0 {
                    "drop".to_owned()
                } else {
                    format!("{e}({w:.2})")
                }
            })
            .collect();
        println!(
            "{:>7} block {:>2}: {}",
            r.stack.as_str(),
            r.block,
            experts.join(" ")
        );
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}
