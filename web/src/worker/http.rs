//! Shards over HTTP for the browser: the Cache API first, then the network (one retry for
//! network errors and server errors), and only verified bytes are stored in the cache.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use js_sys::{Promise, Uint8Array};
use switchscope_core::CoreError;
use switchscope_core::formats::manifest::{FileEntry, verify};
use switchscope_core::runtime::source::{ExpertSource, Fetched, ShardFuture};
use switchscope_core::wire::Origin;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, RequestCache, RequestInit, WorkerGlobalScope};

use crate::error::describe;
use crate::js::{call, get};

/// The Cache API cache that holds model files (shared with the service worker).
pub const MODEL_CACHE: &str = "switchscope-models-v1";

thread_local! {
    /// Transfers started by a prefetch, by URL, waiting for `fetch` to take them.
    static PREFETCHED: RefCell<HashMap<String, Promise>> = RefCell::new(HashMap::new());
    /// The `AbortController` whose signal every transfer carries; [`cancel_transfers`] aborts
    /// it and the next transfer gets a new one.
    static ABORT: RefCell<Option<JsValue>> = const { RefCell::new(None) };
    /// Bytes of verified model files that came over the network (not from the cache).
    static NETWORK_BYTES: Cell<u64> = const { Cell::new(0) };
}

/// Bytes of verified model files this worker has taken from the network so far (the page's
/// "downloaded" figure; files answered by the cache are not counted).
pub fn network_bytes() -> u64 {
    NETWORK_BYTES.get()
}

/// Counts `bytes` more of model data taken from the network.
pub(super) fn add_network_bytes(bytes: u64) {
    NETWORK_BYTES.set(NETWORK_BYTES.get() + bytes);
}

fn scope() -> WorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// The current run's `AbortController` (created on first use).
fn controller() -> Option<JsValue> {
    ABORT.with_borrow_mut(|current| {
        if current.is_none() {
            let constructor: js_sys::Function =
                get(&js_sys::global(), "AbortController").dyn_into().ok()?;
            *current = js_sys::Reflect::construct(&constructor, &js_sys::Array::new()).ok();
        }
        current.clone()
    })
}

/// Aborts every transfer in flight (Stop during a download): their requests fail with
/// "the download was cancelled", and nothing partial is verified or cached.
pub fn cancel_transfers() {
    if let Some(controller) = ABORT.with_borrow_mut(Option::take) {
        let _ = call(&controller, "abort", &[]);
    }
    PREFETCHED.with_borrow_mut(HashMap::clear);
}

/// Whether `error` is the rejection of an aborted transfer.
pub(super) fn is_abort(error: &JsValue) -> bool {
    get(error, "name").as_string().as_deref() == Some("AbortError")
}

pub(super) const CANCELLED: &str = "was not downloaded: the download was cancelled (Stop)";

/// A converted model served as static files under `base` (a URL ending in `/`).
#[derive(Debug, Clone)]
pub struct HttpSource {
    pub base: String,
}

fn shard_error(file: &str, reason: impl Into<String>) -> CoreError {
    CoreError::Shard {
        file: file.to_owned(),
        reason: reason.into(),
    }
}

/// Opens the model cache; `None` when the Cache API is unavailable (e.g. an insecure context).
pub async fn open_cache() -> Option<Cache> {
    let caches = scope().caches().ok()?;
    JsFuture::from(caches.open(MODEL_CACHE))
        .await
        .ok()
        .map(JsCast::unchecked_into)
}

pub(super) async fn body(response: &web_sys::Response) -> Result<Vec<u8>, String> {
    let buffer = JsFuture::from(response.array_buffer().map_err(|e| describe(&e))?)
        .await
        .map_err(|e| format!("its body could not be read ({})", describe(&e)))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// Reads a network response's body chunk by chunk, telling the page how far it got (at most
/// every 100 ms, and once at the end) so that a slow transfer is visibly moving; `expected` is
/// the file's size in the manifest.
async fn body_with_progress(
    response: &web_sys::Response,
    file: &str,
    expected: u64,
) -> Result<Vec<u8>, Failure> {
    let stream = get(response, "body");
    let reader = match call(&stream, "getReader", &[]) {
        Ok(reader) if !stream.is_null() => reader,
        _ => return body(response).await.map_err(Failure::Retry),
    };
    // Progress counts against the manifest's size of the decoded file, not `Content-Length`: a
    // server that sends the file compressed announces the compressed length, while the stream
    // yields decoded bytes. (The reservation is capped: the manifest is not trusted yet.)
    let mut bytes = Vec::with_capacity(usize::try_from(expected.min(1 << 28)).unwrap_or(0));
    let mut last = 0.0;
    let report = |received: usize, total: u64| {
        super::reply::post(&crate::protocol::Response::Download {
            file: file.to_owned(),
            received: received as u64,
            total,
        });
    };
    loop {
        let read = call(&reader, "read", &[]).map_err(|e| Failure::Retry(describe(&e)))?;
        let chunk = JsFuture::from(Promise::from(read)).await.map_err(|e| {
            if is_abort(&e) {
                Failure::Final(CANCELLED.into())
            } else {
                Failure::Retry(format!(
                    "stopped arriving after {} bytes ({})",
                    bytes.len(),
                    describe(&e)
                ))
            }
        })?;
        if get(&chunk, "done").as_bool() == Some(true) {
            break;
        }
        let value: Uint8Array = get(&chunk, "value").unchecked_into();
        let at = bytes.len();
        bytes.resize(at + value.length() as usize, 0);
        value.copy_to(&mut bytes[at..]);
        let now = crate::gpu::now_ms();
        if now - last >= 100.0 {
            last = now;
            report(bytes.len(), expected.max(bytes.len() as u64));
        }
    }
    report(bytes.len(), bytes.len() as u64);
    Ok(bytes)
}

/// A network request for `url` that bypasses the browser's HTTP cache (the Cache API is ours)
/// and is cancelled by [`cancel_transfers`].
fn start(url: &str) -> Promise {
    start_range(url, None)
}

/// As [`start`], for the bytes `start..end` of `url` when `range` is given.
pub(super) fn start_range(url: &str, range: Option<(u64, u64)>) -> Promise {
    let init = RequestInit::new();
    init.set_cache(RequestCache::NoStore);
    if let Some(controller) = controller() {
        let _ = js_sys::Reflect::set(&init, &"signal".into(), &get(&controller, "signal"));
    }
    if let Some((start, end)) = range {
        let headers = js_sys::Object::new();
        let value = JsValue::from_str(&format!("bytes={start}-{}", end - 1));
        let _ = js_sys::Reflect::set(&headers, &"Range".into(), &value);
        init.set_headers(&headers);
    }
    scope().fetch_with_str_and_init(url, &init)
}

/// Whether a failure is worth one retry: the request did not complete, or the server failed.
enum Failure {
    Retry(String),
    Final(String),
}

/// The body of the response `promise` resolves to; `progress` names the file and its expected
/// size when the page should see the transfer move.
async fn from_network(promise: Promise, progress: Option<(&str, u64)>) -> Result<Vec<u8>, Failure> {
    let response = JsFuture::from(promise).await.map_err(|e| {
        if is_abort(&e) {
            Failure::Final(CANCELLED.into())
        } else if !online() {
            Failure::Retry(format!(
                "could not be fetched: the network is unreachable ({})",
                describe(&e)
            ))
        } else {
            Failure::Retry(format!("could not be fetched ({})", describe(&e)))
        }
    })?;
    // A prefetch that found nothing to transfer, or failed.
    if response.is_null() || response.is_undefined() {
        return Err(Failure::Retry("was not prefetched".into()));
    }
    let response: web_sys::Response = response.unchecked_into();
    let status = response.status();
    if status == 404 {
        return Err(Failure::Final("is missing on the server (HTTP 404)".into()));
    }
    if status >= 500 {
        return Err(Failure::Retry(format!(
            "could not be fetched (HTTP {status})"
        )));
    }
    if !response.ok() {
        return Err(Failure::Final(format!(
            "could not be fetched (HTTP {status})"
        )));
    }
    match progress {
        Some((file, expected)) => body_with_progress(&response, file, expected).await,
        None => body(&response).await.map_err(Failure::Retry),
    }
}

impl HttpSource {
    fn url(&self, file: &FileEntry) -> String {
        format!("{}{}", self.base, file.name)
    }

    /// Verified bytes from the cache, or `None` (a cached copy that fails the check is deleted).
    async fn from_cache(cache: &Cache, url: &str, file: &FileEntry) -> Option<Vec<u8>> {
        let found = JsFuture::from(cache.match_with_str(url)).await.ok()?;
        if found.is_undefined() || found.is_null() {
            return None;
        }
        let bytes = body(&found.unchecked_into()).await.ok();
        match bytes {
            Some(bytes) if verify(file, &bytes).is_ok() => Some(bytes),
            _ => {
                let _ = JsFuture::from(cache.delete_with_str(url)).await;
                None
            }
        }
    }

    /// The verified bytes of `file` (cache first, then the network).
    ///
    /// # Errors
    /// [`CoreError::Shard`] naming the file: missing, truncated, corrupt, unreachable.
    pub async fn get_verified(&self, file: &FileEntry) -> Result<Vec<u8>, CoreError> {
        Ok(self.get(file).await?.bytes)
    }

    async fn get(&self, file: &FileEntry) -> Result<Fetched, CoreError> {
        let url = self.url(file);
        let cache = open_cache().await;
        let early = PREFETCHED.with_borrow_mut(|p| p.remove(&url));
        if let Some(cache) = &cache
            && let Some(bytes) = Self::from_cache(cache, &url, file).await
        {
            return Ok(Fetched {
                bytes,
                origin: Origin::Cache,
                prefetched: false,
            });
        }
        let prefetched = early.is_some();
        let progress = Some((file.name.as_str(), file.bytes));
        let bytes = match from_network(early.unwrap_or_else(|| start(&url)), progress).await {
            Ok(bytes) => bytes,
            Err(Failure::Retry(_)) => match from_network(start(&url), progress).await {
                Ok(bytes) => bytes,
                Err(Failure::Retry(_)) if !online() => {
                    return Err(shard_error(
                        &file.name,
                        "is not available offline: it was never downloaded, and the network \
                         cannot be reached",
                    ));
                }
                Err(Failure::Retry(reason) | Failure::Final(reason)) => {
                    return Err(shard_error(&file.name, format!("{reason}, also on retry")));
                }
            },
            Err(Failure::Final(reason)) => return Err(shard_error(&file.name, reason)),
        };
        verify(file, &bytes)?;
        add_network_bytes(bytes.len() as u64);
        if let Some(cache) = &cache {
            store(cache, &url, &bytes).await;
        }
        Ok(Fetched {
            bytes,
            origin: Origin::Network,
            prefetched,
        })
    }
}

/// Puts bytes into the cache.
pub(super) async fn put(cache: &Cache, url: &str, bytes: &[u8]) -> Result<(), JsValue> {
    let array = Uint8Array::from(bytes);
    let response = web_sys::Response::new_with_opt_buffer_source(Some(&array))?;
    JsFuture::from(cache.put_with_str(url, &response))
        .await
        .map(|_| ())
}

/// Puts verified bytes into the cache. A full quota only costs the cached copy: the bytes are
/// used anyway, and the failure is logged.
async fn store(cache: &Cache, url: &str, bytes: &[u8]) {
    if let Err(e) = put(cache, url, bytes).await {
        web_sys::console::warn_1(&JsValue::from_str(&format!(
            "{url} was not cached: {}",
            describe(&e)
        )));
    }
}

/// `navigator.onLine` (true when unknown).
pub(super) fn online() -> bool {
    get(&get(&js_sys::global(), "navigator"), "onLine")
        .as_bool()
        .unwrap_or(true)
}

/// Why a `fetch` of `url` got no HTTP answer, in words after the URL: the network, or (for another origin)
/// its CORS policy, which the browser does not let the page tell apart from a network error.
pub(super) fn unreachable(url: &str, error: &JsValue) -> String {
    let why = describe(error);
    if !online() {
        return format!("could not be fetched: the network is unreachable ({why})");
    }
    let origin = |v: &JsValue| get(v, "origin").as_string();
    let here = origin(&get(&js_sys::global(), "location"));
    let there = web_sys::Url::new(url).ok().map(|u| u.origin());
    if there.is_some() && here != there {
        format!(
            "could not be fetched ({why}); the server on {} must allow this page's origin \
             (CORS: Access-Control-Allow-Origin), or be unreachable",
            there.unwrap_or_default()
        )
    } else {
        format!("could not be fetched ({why})")
    }
}

/// Progress of [`HttpSource::make_offline`]: files and bytes done of the totals.
#[derive(Debug, Clone, Copy)]
pub struct OfflineProgress {
    pub files_done: usize,
    pub files: usize,
    pub bytes_done: u64,
    pub bytes: u64,
}

impl HttpSource {
    /// Stores every file in `files` in the cache (those already there and intact are kept),
    /// reporting progress. When the browser refuses to store one (a full quota), the entries
    /// added by this call are removed again and the error says so.
    ///
    /// # Errors
    /// A sentence naming the file and the cause.
    pub async fn make_offline(
        &self,
        files: &[FileEntry],
        mut progress: impl FnMut(OfflineProgress),
    ) -> Result<OfflineProgress, String> {
        let cache = open_cache()
            .await
            .ok_or("this browser offers no Cache API here, so nothing can be kept offline")?;
        let mut done = OfflineProgress {
            files_done: 0,
            files: files.len(),
            bytes_done: 0,
            bytes: files.iter().map(|f| f.bytes).sum(),
        };
        let mut added: Vec<String> = Vec::new();
        for file in files {
            let url = self.url(file);
            if Self::from_cache(&cache, &url, file).await.is_none() {
                let fetched = async {
                    match from_network(start(&url), None).await {
                        Ok(bytes) => Ok(bytes),
                        Err(Failure::Retry(_)) => from_network(start(&url), None).await,
                        Err(e) => Err(e),
                    }
                }
                .await
                .map_err(|(Failure::Retry(reason) | Failure::Final(reason))| {
                    format!("{} {reason}", file.name)
                });
                let stored = match fetched {
                    Ok(bytes) => match verify(file, &bytes) {
                        Ok(()) => put(&cache, &url, &bytes).await.map_err(|e| {
                            let name = js_sys::Reflect::get(&e, &"name".into())
                                .ok()
                                .and_then(|n| n.as_string())
                                .unwrap_or_default();
                            if name == "QuotaExceededError" {
                                format!(
                                    "not enough storage for the offline copy: the browser refused \
                                     to keep {} ({name}); {:.1} of {:.1} MB were stored and have \
                                     been removed again",
                                    file.name,
                                    done.bytes_done as f64 / 1e6,
                                    done.bytes as f64 / 1e6
                                )
                            } else {
                                format!("{} could not be stored: {}", file.name, describe(&e))
                            }
                        }),
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e),
                };
                if let Err(message) = stored {
                    for url in &added {
                        let _ = JsFuture::from(cache.delete_with_str(url)).await;
                    }
                    return Err(message);
                }
                added.push(url);
            }
            done.files_done += 1;
            done.bytes_done += file.bytes;
            progress(done);
        }
        Ok(done)
    }

    /// Keeps the shards that pre-gating prefetched but no token used: in the background, each
    /// finished transfer is verified and cached, so that the next visit does not download it
    /// again. Transfers that fail, were cancelled or do not verify are dropped.
    pub fn keep_unused_prefetches(&self, files: &[FileEntry]) {
        let unused: Vec<(String, Promise)> = PREFETCHED.with_borrow_mut(|p| p.drain().collect());
        let unused: Vec<(String, Promise, FileEntry)> = unused
            .into_iter()
            .filter_map(|(url, promise)| {
                let file = files.iter().find(|f| self.url(f) == url)?;
                Some((url, promise, file.clone()))
            })
            .collect();
        if unused.is_empty() {
            return;
        }
        wasm_bindgen_futures::spawn_local(async move {
            let Some(cache) = open_cache().await else {
                return;
            };
            for (url, promise, file) in unused {
                let Ok(response) = JsFuture::from(promise).await else {
                    continue;
                };
                if response.is_null() || response.is_undefined() {
                    continue;
                }
                let response: web_sys::Response = response.unchecked_into();
                if !response.ok() {
                    continue;
                }
                if let Ok(bytes) = body(&response).await
                    && verify(&file, &bytes).is_ok()
                {
                    store(&cache, &url, &bytes).await;
                }
            }
        });
    }

    /// Removes every file in `files` from the cache.
    pub async fn remove_offline(&self, files: &[FileEntry]) {
        if let Some(cache) = open_cache().await {
            for file in files {
                let _ = JsFuture::from(cache.delete_with_str(&self.url(file))).await;
            }
            let manifest = format!("{}manifest.json", self.base);
            let _ = JsFuture::from(cache.delete_with_str(&manifest)).await;
        }
    }
}

impl ExpertSource for HttpSource {
    fn fetch<'a>(&'a self, file: &'a FileEntry) -> ShardFuture<'a> {
        Box::pin(self.get(file))
    }

    /// Starts the transfer now unless the cache already holds the file. The promise resolves to
    /// the network response, or to `null` (cached, or the request failed): `get` then reads the
    /// cache or fetches again, so a prefetch never fails a run and never downloads a cached file.
    fn prefetch(&self, file: &FileEntry) {
        let url = self.url(file);
        PREFETCHED.with_borrow_mut(|p| {
            p.entry(url.clone()).or_insert_with(|| {
                wasm_bindgen_futures::future_to_promise(async move {
                    if let Some(cache) = open_cache().await
                        && let Ok(found) = JsFuture::from(cache.match_with_str(&url)).await
                        && !found.is_undefined()
                        && !found.is_null()
                    {
                        return Ok(JsValue::NULL);
                    }
                    Ok(JsFuture::from(start(&url)).await.unwrap_or(JsValue::NULL))
                })
            });
        });
    }
}

/// Fetches a small text file of the model that is not content-checked by a manifest entry
/// (`manifest.json` itself): the network first, the cached copy when offline. Nothing is
/// cached here: the caller stores a fresh copy with [`keep_text`] once it has checked it.
/// `Ok(None)` when the server answers that the file does not exist (404) and no copy is cached.
///
/// # Errors
/// A sentence naming the URL.
pub async fn fetch_text_network_first(url: &str) -> Result<Option<(String, bool)>, String> {
    let network = async {
        let response: web_sys::Response = JsFuture::from(start(url))
            .await
            .map_err(|e| (format!("{url} {}", unreachable(url, &e)), false))?
            .unchecked_into();
        if !response.ok() {
            let status = response.status();
            return Err((
                format!("{url} could not be fetched (HTTP {status})"),
                status == 404,
            ));
        }
        body(&response)
            .await
            .map_err(|e| (format!("{url}: {e}"), false))
    }
    .await;
    let (bytes, fresh) = match network {
        Ok(bytes) => (bytes, true),
        Err((network_error, missing)) => {
            let cached = match &open_cache().await {
                Some(cache) => match JsFuture::from(cache.match_with_str(url)).await {
                    Ok(found) if !found.is_undefined() && !found.is_null() => {
                        body(&found.unchecked_into()).await.ok()
                    }
                    _ => None,
                },
                None => None,
            };
            match cached {
                Some(bytes) => (bytes, false),
                None if missing => return Ok(None),
                None => return Err(network_error),
            }
        }
    };
    let text = String::from_utf8(bytes).map_err(|_| format!("{url} is not UTF-8 text"))?;
    Ok(Some((text, fresh)))
}

/// Stores a checked text file (see [`fetch_text_network_first`]) for offline use.
pub async fn keep_text(url: &str, text: &str) {
    if let Some(cache) = open_cache().await {
        store(&cache, url, text.as_bytes()).await;
    }
}
