//! The loaded model of this worker and what runs on it: loading, generating (streamed) and
//! recomputing the routing with another capacity factor.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use switchscope_core::formats::manifest::Manifest;
use switchscope_core::formats::quant::Scheme;
use switchscope_core::model::RunOptions;
use switchscope_core::runtime::generate::{GenerateOptions, Progress};
use switchscope_core::runtime::policy::Policy;
use switchscope_core::runtime::remote::open_checkpoint;
use switchscope_core::runtime::store::{ExpertStore, StoreOptions};
use switchscope_core::wire::{MAX_INPUT_TOKENS, ShardEvent};
use switchscope_core::{ModelLocation, OpenOptions, Switch};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use super::checkpoint::FetchTransport;
use super::device::device_for;
use super::http::{HttpSource, fetch_text_network_first, keep_text, open_cache};
use super::reply::post;
use crate::gpu::now_ms;
use crate::js::{call, get};
use crate::protocol::{
    Backend, BackendPreference, DeviceCounts, LayerRouting, ModelInfo, Response, RunSummary,
    Settings, ShardInfo, Stack,
};

struct Session {
    /// The model directory's URL (ends with `/`).
    base: String,
    switch: Switch,
    /// The store of `switch` (a model over HTTP always has one).
    store: Arc<ExpertStore>,
    /// A Hugging Face checkpoint read by byte ranges: its experts are not files under `base`.
    checkpoint: bool,
}

thread_local! {
    static SESSION: RefCell<Option<Rc<Session>>> = const { RefCell::new(None) };
    /// Set by [`stop`], read between tokens.
    static STOP: Cell<bool> = const { Cell::new(false) };
    /// Whether a generation is running (one at a time).
    static BUSY: Cell<bool> = const { Cell::new(false) };
    /// The `MessageChannel` behind [`yield_now`] (kept, so that its ports live while a turn is
    /// pending).
    static TURN: RefCell<Option<JsValue>> = const { RefCell::new(None) };
}

fn on_shard_event(event: &ShardEvent) {
    post(&Response::Shard(event.clone()));
}

/// Resolves after the event loop has had a turn, so that a `stop` message can be handled.
///
/// The turn is a message to this worker's own `MessageChannel`, not `setTimeout(0)`: browsers
/// hold a timer set from within a chain of timers for at least 4 ms (HTML's timer nesting
/// clamp), which one token per turn would pay every time; a posted message waits only for the
/// messages already queued (the page's `stop` among them).
async fn yield_now() {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let posted = TURN.with_borrow_mut(|channel| {
            if channel.is_none() {
                let constructor: js_sys::Function =
                    get(&js_sys::global(), "MessageChannel").dyn_into().ok()?;
                *channel = js_sys::Reflect::construct(&constructor, &js_sys::Array::new()).ok();
            }
            let channel = channel.as_ref()?;
            js_sys::Reflect::set(&get(channel, "port1"), &"onmessage".into(), &resolve).ok()?;
            call(&get(channel, "port2"), "postMessage", &[JsValue::NULL]).ok()
        });
        if posted.is_none() {
            let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
            let _ = global.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
        }
    });
    let _ = JsFuture::from(promise).await;
}

fn describe_quantization(manifest: &Manifest) -> String {
    let q = &manifest.quantization;
    let experts = if q.experts.is_quantized() {
        format!(
            "{} experts (group {}, {} scales)",
            q.experts.as_str(),
            q.group_size,
            q.scale_dtype
        )
    } else {
        format!("{} experts", q.experts.as_str())
    };
    format!("{experts}, {} dense weights", q.dense.as_str())
}

/// Where a model comes from, as [`Switch::open`] takes it, and what the page is told of it.
struct Located {
    at: ModelLocation,
    tokenizer_json: Option<String>,
    shards: Vec<ShardInfo>,
    dense_bytes: u64,
    total_bytes: u64,
    quantization: String,
    /// A Hugging Face checkpoint read by byte ranges (not a converted model).
    checkpoint: bool,
}

/// A converted model: its checked manifest, its tokenizer, which of its shards are cached.
async fn converted(base: &str, manifest: Manifest) -> Result<Located, String> {
    let source = HttpSource {
        base: base.to_owned(),
    };
    let tokenizer_json = match &manifest.tokenizer {
        Some(name) => {
            let entry = manifest
                .file(name)
                .ok_or_else(|| format!("the manifest does not list its tokenizer {name}"))?;
            let bytes = source
                .get_verified(entry)
                .await
                .map_err(|e| e.to_string())?;
            Some(String::from_utf8(bytes).map_err(|_| format!("{name} is not UTF-8 text"))?)
        }
        None => None,
    };
    let cache = open_cache().await;
    let mut shards = Vec::with_capacity(manifest.experts.len());
    for e in &manifest.experts {
        let cached = match &cache {
            Some(cache) => JsFuture::from(cache.match_with_str(&format!("{base}{}", e.file)))
                .await
                .is_ok_and(|found| !found.is_undefined() && !found.is_null()),
            None => false,
        };
        shards.push(ShardInfo {
            stack: e.stack,
            block: e.block,
            expert: e.expert,
            file: e.file.clone(),
            bytes: manifest.file(&e.file).map_or(0, |f| f.bytes),
            cached,
        });
    }
    Ok(Located {
        tokenizer_json,
        shards,
        dense_bytes: manifest.file(&manifest.dense).map_or(0, |f| f.bytes),
        total_bytes: manifest.total_bytes(),
        quantization: describe_quantization(&manifest),
        checkpoint: false,
        at: ModelLocation::Source {
            manifest: Box::new(manifest),
            source: Box::new(source),
        },
    })
}

/// A Hugging Face checkpoint directory, read by byte ranges: its headers and dense tensors
/// now, each expert when routed to, quantized to int8 as it arrives on WebGPU (the runtime's
/// representation there), kept f32 on the CPU.
async fn checkpoint(base: &str, backend: Backend) -> Result<Located, String> {
    let experts = match backend {
        Backend::Webgpu => Scheme::Int8,
        Backend::Cpu => Scheme::F32,
    };
    let opened = open_checkpoint(base, Arc::new(FetchTransport), experts)
        .await
        .map_err(|e| {
            format!("{base} has no manifest.json, and as a Hugging Face checkpoint directory: {e}")
        })?;
    let tokenizer_json = match &opened.tokenizer {
        Some(bytes) => Some(
            String::from_utf8(bytes.clone())
                .map_err(|_| format!("{base}tokenizer.json is not UTF-8 text"))?,
        ),
        None => None,
    };
    let manifest = &opened.manifest;
    let shards = manifest
        .experts
        .iter()
        .map(|e| ShardInfo {
            stack: e.stack,
            block: e.block,
            expert: e.expert,
            file: e.file.clone(),
            bytes: manifest.file(&e.file).map_or(0, |f| f.bytes),
            cached: false,
        })
        .collect();
    Ok(Located {
        tokenizer_json,
        shards,
        dense_bytes: opened.dense_bytes,
        total_bytes: manifest.total_bytes(),
        quantization: format!(
            "a checkpoint read by byte ranges: {} experts as they arrive, f32 dense weights",
            experts.as_str()
        ),
        checkpoint: true,
        at: ModelLocation::Checkpoint(Box::new(opened)),
    })
}

/// Loads the model at `url` (replacing any loaded one): a converted model when the directory
/// has `manifest.json`, else a Hugging Face checkpoint directory read by byte ranges.
pub async fn load(
    url: String,
    preference: BackendPreference,
    budget_bytes: Option<u64>,
    prefetch: bool,
    cache_policy: Option<String>,
) -> Result<ModelInfo, String> {
    let policy = match cache_policy {
        Some(name) => name
            .parse::<Policy>()
            .map_err(|e| format!("cache= in the URL: {e}"))?,
        None => Policy::default(),
    };
    let start = now_ms();
    let network_before = crate::worker::http::network_bytes();
    let base = if url.ends_with('/') {
        url
    } else {
        format!("{url}/")
    };
    let manifest_url = format!("{base}manifest.json");
    let manifest = match fetch_text_network_first(&manifest_url).await? {
        Some((text, fresh)) => {
            // Only a manifest that parses and validates is kept for offline use.
            let manifest =
                Manifest::from_json(&text).map_err(|e| format!("{manifest_url}: {e}"))?;
            if fresh {
                keep_text(&manifest_url, &text).await;
            }
            Some(manifest)
        }
        None => None,
    };
    let chosen = device_for(preference).await?;
    let located = match manifest {
        Some(manifest) => converted(&base, manifest).await?,
        None => checkpoint(&base, chosen.backend()).await?,
    };
    let Located {
        at,
        tokenizer_json,
        shards,
        dense_bytes,
        total_bytes,
        quantization,
        checkpoint,
    } = located;
    let options = StoreOptions {
        budget_bytes,
        prefetch,
        policy,
        clock: Some(now_ms),
        listener: Some(Arc::new(on_shard_event)),
        // on WebGPU, experts stay int8/int4 and run on our kernels
        generic_experts: false,
        ..StoreOptions::default()
    };
    let options_policy = options.policy;
    SESSION.set(None);
    let options = OpenOptions {
        store: options,
        ..OpenOptions::default()
    };
    let switch = Switch::open(at, &chosen.device, options)
        .await
        .map_err(|e| e.to_string())?;
    let store = switch
        .store()
        .cloned()
        .ok_or("a model over HTTP has an expert store")?;
    let config = switch.config();
    let sparse_layers = [Stack::Encoder, Stack::Decoder]
        .into_iter()
        .flat_map(|stack| {
            config
                .sparse_blocks(stack)
                .into_iter()
                .map(move |b| (stack, b))
        })
        .collect();
    let info = ModelInfo {
        url: base,
        backend: chosen.backend(),
        fallback_reason: chosen.fallback_reason.clone(),
        adapter: chosen.adapter.clone(),
        d_model: config.d_model,
        d_ff: config.d_ff,
        num_experts: config.num_experts,
        vocab_size: config.vocab_size,
        num_layers: config.num_layers,
        num_decoder_layers: config.decoder_layers(),
        sparse_layers,
        expert_capacity: config.expert_capacity,
        quantization,
        shards,
        dense_bytes,
        downloaded_bytes: crate::worker::http::network_bytes() - network_before,
        total_bytes,
        expert_device_bytes: (2 * config.d_model * config.d_ff * 4) as u64,
        cache_policy: options_policy.to_string(),
        tokenizer_json,
        pad_token_id: config.pad_token_id,
        eos_token_id: config.eos_token_id,
        decoder_start_token_id: config.decoder_start(),
        load_ms: now_ms() - start,
    };
    SESSION.set(Some(Rc::new(Session {
        base: info.url.clone(),
        switch,
        store,
        checkpoint,
    })));
    Ok(info)
}

fn session() -> Result<Rc<Session>, String> {
    SESSION
        .with_borrow(Clone::clone)
        .ok_or_else(|| "no model is loaded yet".to_string())
}

fn check_input(session: &Session, input_ids: &[u32]) -> Result<(), String> {
    if input_ids.is_empty() {
        return Err("the prompt is empty: type some text first".into());
    }
    if input_ids.len() > MAX_INPUT_TOKENS {
        return Err(format!(
            "the prompt has {} tokens; at most {MAX_INPUT_TOKENS} are accepted",
            input_ids.len()
        ));
    }
    let vocab = session.switch.config().vocab_size;
    if let Some(bad) = input_ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(format!(
            "token id {bad} is outside the model's vocabulary of {vocab}"
        ));
    }
    Ok(())
}

/// Generates, streaming the encoder's routing, then each token, and returns the summary.
pub async fn generate(
    input_ids: Vec<u32>,
    settings: Settings,
    stop_at: Option<u32>,
) -> Result<RunSummary, String> {
    let session = session()?;
    check_input(&session, &input_ids)?;
    if BUSY.replace(true) {
        return Err("a generation is already running".into());
    }
    STOP.set(false);
    let result = run(&session, &input_ids, settings, stop_at).await;
    BUSY.set(false);
    result
}

async fn run(
    session: &Session,
    input_ids: &[u32],
    settings: Settings,
    stop_at: Option<u32>,
) -> Result<RunSummary, String> {
    let options = GenerateOptions {
        max_new_tokens: settings.max_new_tokens,
        sampling: settings.sampling,
        use_cache: true,
        run: RunOptions {
            capacity_factor: settings.capacity_factor,
            block_clock: settings.time_layers.then_some(now_ms as fn() -> f64),
        },
        stop_at,
        ignore_eos: false,
    };
    let start = now_ms();
    let last = Cell::new(start);
    let first_token_ms = Cell::new(0.0);
    let encoder_ms = Cell::new(0.0);
    let count = Cell::new(0usize);
    let produced: RefCell<Vec<u32>> = RefCell::new(Vec::new());
    let generation = session
        .switch
        .generate(input_ids, &options, |progress| {
            let now = now_ms();
            let ms = now - last.replace(now);
            let response = match progress {
                Progress::Encoded { routing, block_ms } => {
                    encoder_ms.set(ms);
                    Response::Encoded {
                        routing: routing.to_vec(),
                        ms,
                        block_ms: block_ms.to_vec(),
                    }
                }
                Progress::Step(step) => {
                    let index = count.get();
                    count.set(index + 1);
                    if index == 0 {
                        first_token_ms.set(now - start);
                    }
                    produced.borrow_mut().push(step.token);
                    Response::Token {
                        index,
                        id: step.token,
                        routing: step.routing.clone(),
                        ms,
                        block_ms: step.block_ms.clone(),
                    }
                }
            };
            post(&response);
            async move {
                yield_now().await;
                !STOP.get()
            }
        })
        .await;
    let generation = match generation {
        Ok(generation) => {
            if !session.checkpoint {
                HttpSource {
                    base: session.base.clone(),
                }
                .keep_unused_prefetches(&session.store.manifest().files);
            }
            generation
        }
        // Stop pressed while an expert was downloading: the transfer was aborted, and the run
        // ends as stopped with the tokens it had.
        Err(e) if STOP.get() => {
            let total_ms = now_ms() - start;
            return Ok(RunSummary {
                stopped: true,
                cancelled: Some(e.to_string()),
                output_ids: produced.take(),
                encoder_ms: encoder_ms.get(),
                first_token_ms: first_token_ms.get(),
                total_ms,
                tokens_per_s: 0.0,
                decode_counts: DeviceCounts::default(),
                stats: session.store.stats(),
                wasm_memory_bytes: wasm_memory_bytes(),
            });
        }
        Err(e) => return Err(e.to_string()),
    };
    let total_ms = now_ms() - start;
    let output_ids = generation.output_ids[1..].to_vec();
    let n = output_ids.len();
    let tokens_per_s = if n > 1 && total_ms > first_token_ms.get() {
        (n - 1) as f64 * 1000.0 / (total_ms - first_token_ms.get())
    } else {
        0.0
    };
    let finished = output_ids
        .last()
        .is_some_and(|&id| id == session.switch.config().eos_token_id || Some(id) == stop_at);
    Ok(RunSummary {
        stopped: STOP.get() && !finished && n < settings.max_new_tokens,
        cancelled: None,
        output_ids,
        encoder_ms: encoder_ms.get(),
        first_token_ms: first_token_ms.get(),
        total_ms,
        tokens_per_s,
        decode_counts: generation.decode_counts,
        stats: session.store.stats(),
        wasm_memory_bytes: wasm_memory_bytes(),
    })
}

/// The size of this worker's wasm memory.
fn wasm_memory_bytes() -> u64 {
    js_sys::Reflect::get(&wasm_bindgen::memory(), &"buffer".into())
        .and_then(|b| js_sys::Reflect::get(&b, &"byteLength".into()))
        .ok()
        .and_then(|n| n.as_f64())
        .map_or(0, |n| n as u64)
}

/// Recomputes the routing of `input_ids` → `output_ids` (teacher-forced, decoder starting
/// from the start token) with `capacity_factor`.
pub async fn route(
    input_ids: Vec<u32>,
    output_ids: Vec<u32>,
    capacity_factor: Option<f64>,
) -> Result<Vec<LayerRouting>, String> {
    let session = session()?;
    check_input(&session, &input_ids)?;
    let run = RunOptions {
        capacity_factor,
        ..RunOptions::default()
    };
    session
        .switch
        .route(&input_ids, &output_ids, run)
        .await
        .map_err(|e| e.to_string())
}

/// Asks the running generation to stop after its current token, cancelling any download it
/// waits for.
pub fn stop() {
    if BUSY.get() {
        STOP.set(true);
        super::http::cancel_transfers();
    }
}

/// The offline copy is of a converted model's files; a checkpoint keeps only the ranges it read.
fn refuse_checkpoint(session: &Session) -> Result<(), String> {
    if session.checkpoint {
        return Err(format!(
            "{} is a Hugging Face checkpoint read by byte ranges: the ranges it read are kept in \
             the browser's cache, but an offline copy needs a converted model (switchscope \
             convert, then serve the converted directory)",
            session.base
        ));
    }
    Ok(())
}

/// Makes every expert of the loaded model resident on the device (each fetched, verified and
/// uploaded as when routed to, with its shard events); returns how many there are. With a
/// budget smaller than the model, the store keeps what fits.
pub async fn make_resident() -> Result<usize, String> {
    let session = session()?;
    let ids = session.store.manifest().expert_ids();
    for id in &ids {
        session
            .store
            .expert(id.stack, id.block, id.expert)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(ids.len())
}

/// Stores every file of the loaded model (and its manifest) in the browser's cache.
pub async fn make_offline() -> Result<Response, String> {
    let session = session()?;
    refuse_checkpoint(&session)?;
    let source = HttpSource {
        base: session.base.clone(),
    };
    let files = &session.store.manifest().files;
    let done = source
        .make_offline(files, |p| {
            post(&Response::OfflineProgress {
                files_done: p.files_done,
                files: p.files,
                bytes_done: p.bytes_done,
                bytes: p.bytes,
            });
        })
        .await?;
    // The manifest was cached when the model was loaded (network first, then the cache).
    Ok(Response::Offline {
        stored: true,
        files: done.files,
        bytes: done.bytes,
    })
}

/// Removes the loaded model's files from the browser's cache.
pub async fn remove_offline() -> Result<Response, String> {
    let session = session()?;
    refuse_checkpoint(&session)?;
    let source = HttpSource {
        base: session.base.clone(),
    };
    let files = &session.store.manifest().files;
    source.remove_offline(files).await;
    Ok(Response::Offline {
        stored: false,
        files: files.len(),
        bytes: files.iter().map(|f| f.bytes).sum(),
    })
}
