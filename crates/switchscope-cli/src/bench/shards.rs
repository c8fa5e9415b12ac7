//! `bench shards`: what lazy expert loading fetches, and how the expert cache's policies do
//! against the optimum under budgets (on recorded request traces, replayed by
//! `switchscope_core::eval::cache`), with and without pre-gating prefetch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use clap::Args;
use switchscope_core::backend::cpu_device;
use switchscope_core::eval::cache::{
    Budget, HitCount, optimal, per_layer_fits, prediction_accuracy, replay, replay_prefetch, told,
};
use switchscope_core::runtime::generate::GenerateOptions;
use switchscope_core::runtime::policy::{Access, Policy};
use switchscope_core::runtime::store::{ExpertStore, StoreOptions};
use switchscope_core::tokenizer::Tokenizer;
use switchscope_core::wire::StoreStats;
use switchscope_core::wire::spans::end_of_answer;
use switchscope_core::{OpenOptions, Switch};

use super::fixtures::{
    PRESETS, Preset, SESSION, TEXTS, random_model, random_prompts, upcycled_model,
};
use super::stats::mb;
use switchscope_core::wire::ExpertId;

#[derive(Debug, Args)]
pub struct ShardsArgs {
    /// Experts per sparse layer of the random models.
    #[arg(long, value_delimiter = ',', default_value = "8,32,128")]
    experts: Vec<usize>,
    /// Also measure this converted model (with its tokenizer.json) on a fixed text set.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Tokens generated per prompt.
    #[arg(long, default_value_t = 8)]
    new_tokens: usize,
    /// Where the random and upcycled models are written (a temporary directory by default).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Tokens generated per prompt of the session whose trace the cache policies replay.
    #[arg(long, default_value_t = 24)]
    session_tokens: usize,
    /// Also replay the session on `--model` upcycled to this many copies of each expert (a
    /// many-expert model whose routing keeps the original's structure; 0: none).
    #[arg(long, default_value_t = 4)]
    upcycle: usize,
    /// Write the hit rate against budget (the first session's model, one shared budget, every
    /// policy and the optimum, budgets 5 % to 100 %) here as JSON, for the plot.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Also write each session's request trace here (one JSON file per model: every demand
    /// request and pre-gating prediction in order, and the model's experts), to replay or
    /// study offline.
    #[arg(long)]
    trace_out: Option<PathBuf>,
}

/// What a prompt set cost one store.
struct Outcome {
    stats: StoreStats,
    experts_hit: usize,
    expert_bytes_total: u64,
    model_bytes: u64,
}

/// Opens the converted model at `dir` on the CPU with a store made with `options`, generates
/// up to `new_tokens` for each prompt in turn (one session), and returns the store. Each
/// generation stops at `</s>`, and with `sentinels` also once every masked span has its answer
/// (as the page does by default).
fn session(
    dir: &Path,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    sentinels: &[u32],
    options: StoreOptions,
) -> Result<Arc<ExpertStore>> {
    let device = cpu_device();
    let options = OpenOptions {
        store: options,
        ..OpenOptions::default()
    };
    let switch = pollster::block_on(Switch::open(dir, &device, options))?;
    for ids in prompts {
        let generate = GenerateOptions {
            max_new_tokens: new_tokens,
            stop_at: end_of_answer(ids, sentinels),
            ..GenerateOptions::default()
        };
        pollster::block_on(switch.generate(ids, &generate, |_| std::future::ready(true)))?;
    }
    Ok(switch.store().context("a converted model")?.clone())
}

fn measure(
    dir: &Path,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    sentinels: &[u32],
    options: StoreOptions,
) -> Result<Outcome> {
    let store = session(dir, prompts, new_tokens, sentinels, options)?;
    let manifest = store.manifest();
    let mut hit = store.loaded_files();
    hit.sort();
    hit.dedup();
    let expert_bytes_total = manifest
        .files
        .iter()
        .filter(|f| f.name.starts_with("experts/"))
        .map(|f| f.bytes)
        .sum();
    Ok(Outcome {
        stats: store.stats(),
        experts_hit: hit.len(),
        expert_bytes_total,
        model_bytes: manifest.total_bytes(),
    })
}

/// A session's request trace: every demand request and pre-gating prediction, in order.
struct Trace {
    accesses: Vec<Access>,
    experts: Vec<ExpertId>,
    /// One expert's shard bytes (every expert of a model has the same shape).
    shard_bytes: u64,
    /// One expert's bytes on the device (f32 on the CPU).
    device_bytes: u64,
}

fn record(dir: &Path, prompts: &[Vec<u32>], new_tokens: usize) -> Result<Trace> {
    let options = StoreOptions {
        record_trace: true,
        ..StoreOptions::default()
    };
    let store = session(dir, prompts, new_tokens, &[], options)?;
    let manifest = store.manifest();
    let shard_bytes = manifest
        .files
        .iter()
        .find(|f| f.name.starts_with("experts/"))
        .map_or(0, |f| f.bytes);
    let c = &manifest.config;
    Ok(Trace {
        accesses: store.trace(),
        experts: manifest.expert_ids(),
        shard_bytes,
        device_bytes: (2 * c.d_model * c.d_ff * 4) as u64,
    })
}

/// The live store's hits on `prompts` under `policy` and a budget of `slots` experts, to check
/// that the replay counts what the store does.
fn live_hits(
    dir: &Path,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    trace: &Trace,
    slots: usize,
    policy: Policy,
) -> Result<HitCount> {
    let o = measure(
        dir,
        prompts,
        new_tokens,
        &[],
        StoreOptions {
            budget_bytes: Some(trace.device_bytes * slots as u64),
            policy,
            ..StoreOptions::default()
        },
    )?;
    Ok(HitCount {
        requests: o.stats.requests,
        hits: o.stats.hits,
    })
}

/// Budgets as shares of all experts, and their slots.
fn slots(share: usize, experts: usize) -> usize {
    (experts * share / 100).max(1)
}

fn percent(count: HitCount) -> String {
    format!("{:.1} %", 100.0 * count.rate())
}

/// `got`'s hits as a share of the optimum's (`bound`).
fn share_of(got: HitCount, bound: HitCount) -> f64 {
    got.hits as f64 / bound.hits.max(1) as f64
}

/// A table cell: the hit rate, and in brackets its share of the optimum's hits.
fn against(got: HitCount, bound: HitCount) -> String {
    format!("{} ({:.0} %)", percent(got), 100.0 * share_of(got, bound))
}

pub fn run(args: &ShardsArgs) -> Result<()> {
    let work = args.work.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("switchscope-bench-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&work);
    let started = Instant::now();
    let mut models: Vec<(String, PathBuf, Vec<Vec<u32>>)> = Vec::new();
    // (name, dir, the session's prompts) for the cache policies
    let mut sessions: Vec<(String, PathBuf, Vec<Vec<u32>>)> = Vec::new();
    // (preset, its ids) for the shipped model, and its tokenizer's sentinels
    let mut presets: Vec<(&Preset, Vec<u32>)> = Vec::new();
    let mut sentinels: Vec<u32> = Vec::new();
    if let Some(dir) = &args.model {
        let tokenizer = Tokenizer::from_bytes(&std::fs::read(dir.join("tokenizer.json"))?)?;
        let encode = |texts: &[&str]| {
            texts
                .iter()
                .map(|t| tokenizer.encode(t))
                .collect::<Result<Vec<_>, _>>()
        };
        let name = dir.display().to_string();
        sentinels = tokenizer.sentinel_ids();
        for preset in &PRESETS {
            presets.push((preset, tokenizer.encode(preset.prompt)?));
        }
        models.push((name.clone(), dir.clone(), encode(&TEXTS)?));
        let session = encode(&SESSION)?;
        sessions.push((name.clone(), dir.clone(), session.clone()));
        if args.upcycle > 1 {
            std::fs::create_dir_all(&work)?;
            let up = upcycled_model(&work, dir, args.upcycle, 0.5)?;
            sessions.push((format!("{name} upcycled ×{}", args.upcycle), up, session));
        }
    }
    for &experts in &args.experts {
        let out = random_model(&work, experts, 64, 256, 512)?;
        let prompts = random_prompts(512, 8, 24, 7);
        models.push((
            format!("random, {experts} experts/layer"),
            out.clone(),
            prompts.clone(),
        ));
        if experts == 32 {
            sessions.push((
                format!("random, {experts} experts/layer"),
                out,
                random_prompts(512, 15, 24, 11),
            ));
        }
    }

    println!(
        "### Bytes fetched for a fixed prompt set ({} prompts, {} new tokens each, int8 experts, CPU)\n",
        TEXTS.len(),
        args.new_tokens
    );
    println!(
        "A page fetches the dense weights (and tokenizer, manifest) once, and an expert's \
         file only when a router picks it. *Model* divides what that fetched by every file \
         the manifest lists; *experts* divides the expert files fetched by all expert files. \
         Each prompt of the shipped model in a fresh store, then the set in one session.\n"
    );
    println!(
        "| model | prompt | experts hit / all | expert MB fetched / all expert MB | experts fetched | model MB fetched / whole model MB | model fetched |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, (name, dir, prompts)) in models.iter().enumerate() {
        let all = count_experts(dir)?;
        let shipped = i == 0 && args.model.is_some();
        let mut sets: Vec<(String, &[Vec<u32>])> = Vec::new();
        if shipped {
            for (p, prompt) in prompts.iter().enumerate() {
                sets.push((
                    format!("{}: {}", p + 1, opening(TEXTS[p])),
                    std::slice::from_ref(prompt),
                ));
            }
        }
        sets.push((format!("all {}", prompts.len()), prompts));
        for (label, set) in sets {
            let o = measure(dir, set, args.new_tokens, &[], StoreOptions::default())?;
            println!("| {name} | {label} | {} |", bytes_cells(&o, all));
        }
    }
    if let Some(dir) = &args.model {
        println!(
            "\n### Bytes fetched by each of the page's presets ({}, a fresh store each, CPU)\n",
            dir.display()
        );
        println!(
            "As the page runs them: up to the preset's max new tokens, stopping at `</s>` or once \
             every masked span has its answer.\n"
        );
        println!(
            "| preset | max new tokens | experts hit / all | expert MB fetched / all expert MB | experts fetched | model MB fetched / whole model MB | model fetched |"
        );
        println!("|---|---|---|---|---|---|---|");
        let all = count_experts(dir)?;
        for (preset, ids) in &presets {
            let o = measure(
                dir,
                std::slice::from_ref(ids),
                preset.max_new_tokens,
                &sentinels,
                StoreOptions::default(),
            )?;
            println!(
                "| {} | {} | {} |",
                preset.label,
                preset.max_new_tokens,
                bytes_cells(&o, all)
            );
        }
    }

    let traces = sessions
        .iter()
        .map(|(name, dir, prompts)| {
            Ok((
                name,
                dir,
                prompts,
                record(dir, prompts, args.session_tokens)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;

    if let Some(out) = &args.trace_out {
        std::fs::create_dir_all(out)?;
        for (i, (name, _, _, trace)) in traces.iter().enumerate() {
            let accesses: Vec<serde_json::Value> = trace
                .accesses
                .iter()
                .map(|a| match a {
                    Access::Demand(id) => serde_json::json!({ "demand": id }),
                    Access::Predicted(ids) => serde_json::json!({ "predicted": ids }),
                    Access::Layer(ids) => serde_json::json!({ "layer": ids }),
                })
                .collect();
            let json = serde_json::json!({
                "model": name,
                "experts": trace.experts,
                "accesses": accesses,
            });
            let path = out.join(format!("trace-{i}.json"));
            std::fs::write(&path, serde_json::to_string(&json)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }

    println!(
        "\n### Hit rate of each policy against the optimum ({} prompts in one session, {} new tokens each; demand requests, no prefetch)\n",
        SESSION.len(),
        args.session_tokens
    );
    println!(
        "Each cell: hit rate (its share of the optimum's hits with one shared budget). Per-layer \
         budgets are shown where every sparse layer gets a slot.\n"
    );
    let names: Vec<String> = Policy::ALL.iter().map(ToString::to_string).collect();
    println!(
        "| model | requests | budget | layout | optimum (Belady) | {} |",
        names.join(" | ")
    );
    println!("|---|---|---|---|---|{}", "---|".repeat(names.len()));
    // per policy, its share of the optimum's hits in each shared-budget cell, and its hits
    // against LRU's there
    let mut shares: Vec<Vec<(f64, i64)>> = vec![Vec::new(); Policy::ALL.len()];
    for (name, _, _, trace) in &traces {
        let n = trace.experts.len();
        for share in [10, 25, 50] {
            let slots = slots(share, n);
            let bound = optimal(&trace.accesses, &trace.experts, Budget::Shared(slots));
            let mut layouts = vec![("shared", Budget::Shared(slots))];
            if per_layer_fits(slots, &trace.experts) {
                layouts.push(("per layer", Budget::PerLayer(slots)));
            }
            for (layout, budget) in layouts {
                let best = optimal(&trace.accesses, &trace.experts, budget);
                let lru = replay(&trace.accesses, &trace.experts, Policy::LRU, budget);
                let cells: Vec<String> = Policy::ALL
                    .iter()
                    .enumerate()
                    .map(|(i, &policy)| {
                        let got = replay(&trace.accesses, &trace.experts, policy, budget);
                        if matches!(budget, Budget::Shared(_)) {
                            shares[i]
                                .push((share_of(got, bound), got.hits as i64 - lru.hits as i64));
                        }
                        against(got, bound)
                    })
                    .collect();
                println!(
                    "| {name} | {} | {share} % ({slots} of {n}) | {layout} | {} | {} |",
                    bound.requests,
                    percent(best),
                    cells.join(" | ")
                );
            }
        }
    }

    println!("\n### Each policy over every session and budget above (one shared budget)\n");
    println!(
        "| policy | mean share of the optimum's hits | lowest share | budgets where it hits at least LRU's |"
    );
    println!("|---|---|---|---|");
    let mean = |v: &[(f64, i64)]| v.iter().map(|c| c.0).sum::<f64>() / v.len().max(1) as f64;
    for (policy, cells) in Policy::ALL.iter().zip(&shares) {
        let lowest = cells.iter().map(|c| c.0).fold(f64::INFINITY, f64::min);
        let default = if *policy == Policy::default() {
            " (the store's default)"
        } else {
            ""
        };
        println!(
            "| {policy}{default} | {:.1} % | {:.0} % | {} of {} |",
            100.0 * mean(cells),
            100.0 * lowest,
            cells.iter().filter(|c| c.1 >= 0).count(),
            cells.len()
        );
    }
    let best = Policy::ALL
        .iter()
        .zip(&shares)
        .max_by(|a, b| mean(a.1).total_cmp(&mean(b.1)))
        .map(|(p, _)| *p)
        .unwrap_or_default();
    println!(
        "\nThe best mean share: `{best}`; the store's default: `{}`.",
        Policy::default()
    );

    println!(
        "\n### What knowing each decode's experts would be worth (a yardstick, not a policy; one shared budget)\n"
    );
    println!(
        "`next-use+pins` told, as each prompt begins, how often its decode will ask for each \
         decoder expert (not in which order), against the optimum and the shipped policy.\n"
    );
    println!(
        "| model | budget | optimum (Belady) | next-use+pins, told each decode's experts | {} |",
        Policy::default()
    );
    println!("|---|---|---|---|---|");
    for (name, _, _, trace) in &traces {
        for share in [10, 25, 50] {
            let budget = Budget::Shared(slots(share, trace.experts.len()));
            let bound = optimal(&trace.accesses, &trace.experts, budget);
            let of_bound = |c: HitCount| against(c, bound);
            println!(
                "| {name} | {share} % | {} | {} | {} |",
                percent(bound),
                of_bound(told(&trace.accesses, &trace.experts, budget)),
                of_bound(replay(
                    &trace.accesses,
                    &trace.experts,
                    Policy::default(),
                    budget
                ))
            );
        }
    }

    println!(
        "\n### The live store against the replay (default policy `{}`, 25 % budget)\n",
        Policy::default()
    );
    println!("| model | live store hits / requests | replayed hits / requests |");
    println!("|---|---|---|");
    for (name, dir, prompts, trace) in &traces {
        let slots = slots(25, trace.experts.len());
        let live = live_hits(
            dir,
            prompts,
            args.session_tokens,
            trace,
            slots,
            Policy::default(),
        )?;
        let replayed = replay(
            &trace.accesses,
            &trace.experts,
            Policy::default(),
            Budget::Shared(slots),
        );
        println!(
            "| {name} | {} / {} | {} / {} |",
            live.hits, live.requests, replayed.hits, replayed.requests
        );
        anyhow::ensure!(
            live == replayed,
            "the replay of {name} counts {replayed:?}, the live store {live:?}"
        );
    }

    println!(
        "\n### Pre-gating prefetch (default policy `{}`, one shared budget)\n",
        Policy::default()
    );
    println!(
        "| model | budget | predicted | used by that layer | fetched early | served by prefetch | wasted kB | hit rate | hit rate with prefetch |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, _, _, trace) in &traces {
        let (predicted, used) = prediction_accuracy(&trace.accesses);
        for share in [10, 25, 50] {
            let slots = slots(share, trace.experts.len());
            let p = replay_prefetch(
                &trace.accesses,
                &trace.experts,
                Policy::default(),
                Budget::Shared(slots),
            );
            println!(
                "| {name} | {share} % | {predicted} | {used} ({:.1} %) | {} | {} | {:.1} | {} | {:.1} % |",
                100.0 * used as f64 / predicted.max(1) as f64,
                p.prefetched,
                p.served_by_prefetch,
                (p.wasted * trace.shard_bytes) as f64 / 1e3,
                percent(p.demand),
                100.0 * (p.demand.hits + p.served_by_prefetch) as f64
                    / p.demand.requests.max(1) as f64
            );
        }
    }

    if let (Some(path), Some((name, _, _, trace))) = (&args.json_out, traces.first()) {
        let n = trace.experts.len();
        let line = |name: String, f: &dyn Fn(usize) -> HitCount| {
            let points: Vec<serde_json::Value> = (1..=20)
                .map(|i| {
                    let share = i * 5;
                    serde_json::json!({ "x": share, "hit_rate": f(slots(share, n)).rate() })
                })
                .collect();
            serde_json::json!({ "name": name, "points": points })
        };
        let mut series = vec![line("optimum (Belady)".into(), &|s| {
            optimal(&trace.accesses, &trace.experts, Budget::Shared(s))
        })];
        for policy in Policy::ALL {
            series.push(line(policy.to_string(), &|s| {
                replay(&trace.accesses, &trace.experts, policy, Budget::Shared(s))
            }));
        }
        let json = serde_json::json!({ "plot": { "model": name, "series": series } });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("bench shards: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn count_experts(dir: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(dir.join("manifest.json"))?;
    let manifest = switchscope_core::formats::manifest::Manifest::from_json(&text)?;
    Ok(manifest.experts.len() as u64)
}

/// A prompt's first words, on one line, for a table cell.
fn opening(text: &str) -> String {
    let line = text.replace('\n', " ");
    match line.char_indices().nth(28) {
        Some((cut, _)) => format!("{}…", line[..cut].trim_end()),
        None => line,
    }
}

/// A bytes table's cells after the first: experts hit, expert bytes and model bytes fetched.
/// The model's bytes fetched are the files it always needs (dense weights, tokenizer) and the
/// expert files the routers picked.
fn bytes_cells(o: &Outcome, all_experts: u64) -> String {
    let dense = o.model_bytes - o.expert_bytes_total;
    let fetched = dense + o.stats.bytes_fetched;
    format!(
        "{} / {all_experts} | {} / {} | {:.1} % | {} / {} | {:.1} %",
        o.experts_hit,
        mb(o.stats.bytes_fetched),
        mb(o.expert_bytes_total),
        100.0 * o.stats.bytes_fetched as f64 / o.expert_bytes_total as f64,
        mb(fetched),
        mb(o.model_bytes),
        100.0 * fetched as f64 / o.model_bytes as f64
    )
}
