//! The page's own logic (`switchscope_web::page`): how streamed messages fold into the trace,
//! expert load and the balance loss, the CSV and JSON exports, the URL's parameters and the
//! permalink that writes them back, the lost-device banner.

use switchscope_web::page::{
    self, CSV_HEADER, MAX_NEW_TOKENS, PANELS, Trace, TraceExport, all_resident_from, balance_loss,
    budget_from, csv, device_lost_message, load, origins_from, panels_from, permalink_parameters,
    prefetch_from, settings_from, theme_from,
};
use switchscope_web::protocol::{LayerRouting, Response, Sampling, Settings, Stack};
use wasm_bindgen_test::wasm_bindgen_test;

fn route(stack: Stack, block: usize, expert: &[i32], probs: &[&[f32]]) -> LayerRouting {
    let chosen: Vec<u32> = probs
        .iter()
        .map(|p| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap() as u32)
        .collect();
    LayerRouting {
        stack,
        block,
        expert: expert.to_vec(),
        weight: probs
            .iter()
            .zip(&chosen)
            .map(|(p, &c)| p[c as usize])
            .collect(),
        chosen,
        probs: probs.iter().map(|p| p.to_vec()).collect(),
        capacity: 2,
    }
}

fn token(index: usize, id: u32, routing: Vec<LayerRouting>, block_ms: Vec<f64>) -> Response {
    Response::Token {
        index,
        id,
        routing,
        ms: 1.5 + index as f64,
        block_ms,
    }
}

/// A run of three prompt tokens and two generated ones, folded as the worker streams it.
fn folded() -> Trace {
    let mut t = Trace {
        prompt: "a \"quoted\" <extra_id_0>".into(),
        input_ids: vec![10, 11, 12],
        input_pieces: vec!["▁a".into(), "▁\"quoted\"".into(), "<extra_id_0>".into()],
        ..Trace::default()
    };
    let encoder = vec![
        route(
            Stack::Encoder,
            1,
            &[0, -1, 1],
            &[&[0.75, 0.25], &[0.5625, 0.4375], &[0.125, 0.875]],
        ),
        route(
            Stack::Encoder,
            3,
            &[1, 1, 0],
            &[&[0.25, 0.75], &[0.375, 0.625], &[1.0, 0.0]],
        ),
    ];
    let piece = |id: u32| format!("p{id}");
    t.fold(
        Response::Encoded {
            routing: encoder,
            ms: 4.0,
            block_ms: vec![1.0, 2.0],
        },
        piece,
    );
    for (i, id) in [7u32, 8].into_iter().enumerate() {
        let probs: &[f32] = if i == 0 {
            &[0.625, 0.375]
        } else {
            &[0.25, 0.75]
        };
        let e = if i == 0 { 0 } else { 1 };
        t.fold(
            token(
                i,
                id,
                vec![
                    route(Stack::Decoder, 1, &[e], &[probs]),
                    route(Stack::Decoder, 3, &[1 - e], &[&[probs[1], probs[0]]]),
                ],
                vec![0.5, 0.25],
            ),
            piece,
        );
    }
    t
}

#[wasm_bindgen_test]
fn streamed_messages_fold_into_the_trace() {
    let t = folded();
    assert_eq!(t.output_ids, [7, 8]);
    assert_eq!(t.output_pieces, ["p7", "p8"]);
    assert_eq!(t.step_ms, [1.5, 2.5]);
    assert_eq!(t.encoder_block_ms, [1.0, 2.0]);
    assert_eq!(t.decoder_block_ms, [vec![0.5, 0.25], vec![0.5, 0.25]]);
    // One decoder row per sparse layer, one column per generated token, in order.
    assert_eq!(t.decoder.len(), 2);
    assert_eq!(t.decoder[0].expert, [0, 1]);
    assert_eq!(t.decoder[1].expert, [1, 0]);
    assert_eq!(t.decoder[0].chosen, [0, 1]);
    assert_eq!(t.decoder[0].weight, [0.625, 0.75]);
    assert_eq!(t.decoder[1].probs, [vec![0.375, 0.625], vec![0.75, 0.25]]);
    let order: Vec<(Stack, usize)> = t.layers().map(|r| (r.stack, r.block)).collect();
    assert_eq!(
        order,
        [
            (Stack::Encoder, 1),
            (Stack::Encoder, 3),
            (Stack::Decoder, 1),
            (Stack::Decoder, 3)
        ]
    );
    assert_eq!(t.pieces(Stack::Decoder), ["p7", "p8"]);
    assert_eq!(t.pieces(Stack::Encoder)[2], "<extra_id_0>");

    // Other messages are not the trace's.
    let mut same = t.clone();
    for other in [
        Response::Ready,
        Response::Routed { routing: vec![] },
        Response::Error {
            message: "x".into(),
        },
    ] {
        assert!(!Trace::takes(&other));
        same.fold(other, |_| unreachable!());
    }
    assert_eq!(same, t);
    assert!(Trace::takes(&token(0, 1, vec![], vec![])));
    // A token without timings adds no per-block row.
    same.fold(token(2, 9, vec![], vec![]), |_| "p9".into());
    assert_eq!(same.decoder_block_ms.len(), 2);
    assert_eq!(same.output_ids, [7, 8, 9]);
}

#[wasm_bindgen_test]
fn expert_load_and_the_balance_loss() {
    // Two experts, four tokens: load counts the router's choices, dropped ones included.
    let r = route(
        Stack::Encoder,
        1,
        &[0, -1, 1, 1],
        &[&[0.75, 0.25], &[0.75, 0.25], &[0.25, 0.75], &[0.5, 0.5]],
    );
    assert_eq!(load(&r, 2), [2, 2]);
    // E · Σ f·P = 2 · (0.5 · 0.5625 + 0.5 · 0.4375) = 1: the tokens are split evenly.
    assert!((balance_loss(&r, 2) - 1.0).abs() < 1e-12);
    // Every token to expert 0 with certainty: the worst case, E.
    let sure: &[f32] = &[1.0, 0.0, 0.0];
    let all = route(Stack::Encoder, 1, &[0, 0, 0], &[sure, sure, sure]);
    assert_eq!(load(&all, 3), [3, 0, 0]);
    assert!((balance_loss(&all, 3) - 3.0).abs() < 1e-12);
    // Uneven: f = (2/3, 1/3), P = (0.7, 0.3): 2 · (2/3 · 0.7 + 1/3 · 0.3) = 34/30.
    let uneven = route(
        Stack::Encoder,
        1,
        &[0, 0, 1],
        &[&[0.9, 0.1], &[0.8, 0.2], &[0.4, 0.6]],
    );
    assert!((balance_loss(&uneven, 2) - 34.0 / 30.0).abs() < 1e-6);
    assert_eq!(balance_loss(&route(Stack::Encoder, 1, &[], &[]), 2), 0.0);
    // A choice outside the experts shown is not counted (and does not panic).
    assert_eq!(load(&all, 0), Vec::<usize>::new());
}

#[wasm_bindgen_test]
fn csv_has_one_line_per_layer_and_token_of_the_routing_shown() {
    let t = folded();
    let layers: Vec<LayerRouting> = t.layers().cloned().collect();
    let text = csv(&layers, &t);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], CSV_HEADER);
    assert_eq!(lines.len(), 1 + 3 * 2 + 2 * 2);
    assert_eq!(lines[1], "encoder,1,0,\"▁a\",0,0,0.75,false");
    // A dropped token: expert -1, the router's choice kept; quotes doubled inside the piece.
    assert_eq!(lines[2], "encoder,1,1,\"▁\"\"quoted\"\"\",-1,0,0.5625,true");
    assert_eq!(lines[7], "decoder,1,0,\"p7\",0,0,0.625,false");
    assert_eq!(lines[10], "decoder,3,1,\"p8\",0,0,0.75,false");
    // The what-if's layers are what it writes, not the run's.
    let mut what_if = layers.clone();
    what_if[1].expert = vec![-1, -1, 0];
    let lines: Vec<String> = csv(&what_if, &t).lines().map(str::to_owned).collect();
    assert_eq!(lines[4], "encoder,3,0,\"▁a\",-1,1,0.75,true");
    assert_eq!(lines[6], "encoder,3,2,\"<extra_id_0>\",0,0,1,false");
}

#[wasm_bindgen_test]
fn json_export_carries_the_routing_shown_and_the_what_if_factor() {
    let t = folded();
    let mut layers: Vec<LayerRouting> = t.layers().cloned().collect();
    layers[0].expert[0] = -1;
    let settings = Settings {
        capacity_factor: Some(1.25),
        ..Settings::default()
    };
    let json = TraceExport::new("models/m/", settings, &t, &layers, Some(0.5)).to_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["model"], "models/m/");
    assert_eq!(v["prompt"], t.prompt.as_str());
    assert_eq!(v["what_if_capacity_factor"], 0.5);
    assert_eq!(v["settings"]["capacity_factor"], 1.25);
    assert_eq!(v["input_ids"], serde_json::json!([10, 11, 12]));
    assert_eq!(v["output_ids"], serde_json::json!([7, 8]));
    assert_eq!(v["output_pieces"], serde_json::json!(["p7", "p8"]));
    let routing: Vec<LayerRouting> = serde_json::from_value(v["routing"].clone()).unwrap();
    assert_eq!(routing, layers);
    let own = TraceExport::new("m", Settings::default(), &t, &layers, None).to_json();
    let v: serde_json::Value = serde_json::from_str(&own).unwrap();
    assert!(v["what_if_capacity_factor"].is_null());
}

/// A URL's query as `get` for the parsers.
fn query(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

#[wasm_bindgen_test]
fn url_parameters_parse_into_settings() {
    assert_eq!(settings_from(query(&[])).unwrap(), Settings::default());
    let s = settings_from(query(&[
        ("max_new_tokens", "7"),
        ("sampling", "sample"),
        ("temperature", "0.5"),
        ("top_k", "4"),
        ("top_p", "0.9"),
        ("seed", "42"),
        ("capacity_factor", "0.75"),
        ("time_layers", "1"),
        ("spans", "all"),
    ]))
    .unwrap();
    assert_eq!(
        s,
        Settings {
            max_new_tokens: 7,
            sampling: Sampling::Sample {
                temperature: 0.5,
                top_k: Some(4),
                top_p: Some(0.9),
                seed: 42
            },
            capacity_factor: Some(0.75),
            time_layers: true,
            stop_at_spans: false,
        }
    );
    // Sampling defaults; empty numbers are absent; the token limit is clamped.
    let s = settings_from(query(&[
        ("sampling", "sample"),
        ("top_k", ""),
        ("max_new_tokens", "100000"),
        ("spans", "some"),
    ]))
    .unwrap();
    assert_eq!(
        s.sampling,
        Sampling::Sample {
            temperature: 0.8,
            top_k: None,
            top_p: None,
            seed: 0
        }
    );
    assert_eq!(s.max_new_tokens, MAX_NEW_TOKENS);
    assert!(s.stop_at_spans);
    assert_eq!(
        settings_from(query(&[("max_new_tokens", "0")]))
            .unwrap()
            .max_new_tokens,
        1
    );
    // Temperature etc. are read only when sampling.
    assert_eq!(
        settings_from(query(&[("temperature", "x")])).unwrap(),
        Settings::default()
    );
    // Errors name the parameter and the value.
    let e = settings_from(query(&[("sampling", "sample"), ("seed", "-1")])).unwrap_err();
    assert_eq!(e, "seed=-1 in the URL is not a valid number");
    let e = settings_from(query(&[("capacity_factor", "lots")])).unwrap_err();
    assert!(e.starts_with("capacity_factor=lots"), "{e}");
    let e = settings_from(query(&[("sampling", "beam")])).unwrap_err();
    assert!(
        e.contains("\"beam\"") && e.contains("greedy or sample"),
        "{e}"
    );

    assert_eq!(budget_from(query(&[("budget_mb", "1.5")])), Ok(Some(1.5)));
    assert_eq!(budget_from(query(&[("budget_mb", "0")])), Ok(None));
    assert_eq!(budget_from(query(&[])), Ok(None));
    assert!(budget_from(query(&[("budget_mb", "1MB")])).is_err());
    assert!(prefetch_from(query(&[])));
    assert!(prefetch_from(query(&[("prefetch", "1")])));
    assert!(!prefetch_from(query(&[("prefetch", "0")])));
    assert_eq!(all_resident_from(query(&[])), Ok(false));
    assert_eq!(all_resident_from(query(&[("resident", "all")])), Ok(true));
    let e = all_resident_from(query(&[("resident", "some")])).unwrap_err();
    assert!(e.contains("\"some\"") && e.contains("resident=all"), "{e}");
}

#[wasm_bindgen_test]
fn panels_theme_and_origins() {
    assert_eq!(panels_from(None, false), PANELS);
    assert_eq!(panels_from(Some(" "), false), PANELS);
    assert_eq!(panels_from(None, true), page::EMBED_PANELS);
    assert_eq!(
        panels_from(Some("grid, shards,nonsense,perf"), true),
        ["grid", "shards", "perf"]
    );
    assert_eq!(theme_from(Some("dark")), Some("dark"));
    assert_eq!(theme_from(Some("light")), Some("light"));
    assert_eq!(theme_from(Some("blue")), None);
    assert_eq!(theme_from(None), None);
    assert_eq!(
        origins_from(Some("https://a.example/, *, ,http://b.example:8080")),
        ["https://a.example", "http://b.example:8080"]
    );
    assert!(origins_from(None).is_empty());
    assert!(origins_from(Some("*")).is_empty());
}

#[wasm_bindgen_test]
fn the_permalink_reads_back_every_setting() {
    let cases = [
        (Settings::default(), None, true),
        (
            Settings {
                max_new_tokens: 5,
                sampling: Sampling::Sample {
                    temperature: 0.7,
                    top_k: Some(3),
                    top_p: Some(0.85),
                    seed: 1234,
                },
                capacity_factor: Some(0.25),
                time_layers: true,
                stop_at_spans: false,
            },
            Some(2.5),
            false,
        ),
        (
            Settings {
                max_new_tokens: MAX_NEW_TOKENS,
                sampling: Sampling::Sample {
                    temperature: 1.3,
                    top_k: None,
                    top_p: None,
                    seed: u64::MAX,
                },
                capacity_factor: Some(1.0 / 3.0),
                ..Settings::default()
            },
            Some(0.1),
            true,
        ),
    ];
    let current = query(&[
        ("model", "models/other/"),
        ("cache", "lru+pins"),
        ("theme", "dark"),
        ("panels", "prompt,grid"),
        ("autorun", "1"),
        ("prompt", "old"),
        ("seed", "9"),
    ]);
    for (settings, budget, prefetch) in cases {
        let prompt = "Un <extra_id_0> & \"b\" = 1+1?";
        let params = permalink_parameters(&current, prompt, &settings, budget, prefetch);
        let back = query(
            &params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        );
        assert_eq!(settings_from(&back).unwrap(), settings, "{params:?}");
        assert_eq!(budget_from(&back).unwrap(), budget, "{params:?}");
        assert_eq!(prefetch_from(&back), prefetch, "{params:?}");
        assert_eq!(back("prompt").as_deref(), Some(prompt));
        // What the page was loaded with is kept; a run is not started by opening the link.
        assert_eq!(back("model").as_deref(), Some("models/other/"));
        assert_eq!(back("cache").as_deref(), Some("lru+pins"));
        assert_eq!(back("theme").as_deref(), Some("dark"));
        assert_eq!(back("panels").as_deref(), Some("prompt,grid"));
        assert_eq!(back("autorun"), None);
        assert_eq!(back("backend"), None);
        // Each parameter once.
        let mut names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "{params:?}");
    }
}

#[wasm_bindgen_test]
fn the_lost_device_banner_reads_as_one_sentence() {
    let m = device_lost_message("destroyed", "Device was destroyed.", true);
    assert_eq!(
        m,
        "The GPU device was lost (destroyed: Device was destroyed.). Switchscope switched to \
         the CPU and loaded the model again; the run in progress was interrupted, run it again."
    );
    let m = device_lost_message("unknown", "", false);
    assert_eq!(
        m,
        "The GPU device was lost (unknown). Switchscope switched to the CPU and loaded the model \
         again."
    );
    assert!(!m.contains("  ") && !m.contains('\n'), "{m:?}");
}

#[wasm_bindgen_test]
fn the_cache_hit_rate_counts_demand_requests_only() {
    use switchscope_web::protocol::{Origin, ShardEventKind};
    let mut count = page::CacheCount::default();
    assert_eq!(count.sentence("lru"), "Expert cache (lru): no requests yet");
    for kind in [
        ShardEventKind::Requested,
        ShardEventKind::Prefetching,
        ShardEventKind::Fetched {
            bytes: 10,
            origin: Origin::Network,
            prefetched: false,
            ms: 1.0,
        },
        ShardEventKind::Hit,
        ShardEventKind::Hit,
        ShardEventKind::Evicted { resident_bytes: 0 },
        ShardEventKind::Requested,
    ] {
        count.count(&kind);
    }
    assert_eq!((count.hits, count.requests), (2, 4));
    assert_eq!(
        count.sentence("least-stale+pins"),
        "Expert cache (least-stale+pins): 2 of 4 requests found their expert resident (50 % hit rate)"
    );
}
