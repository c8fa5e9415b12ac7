//! A Hugging Face checkpoint read where it lives: the core's [`Transport`] over `fetch`. The
//! core checks every answer (206, `Content-Range`, the `ETag` and length recorded at open);
//! the ranges it accepted are kept in the Cache API under their URL, `ETag` and range, so a
//! later visit takes them from there while the file is unchanged, and a changed file (a new
//! `ETag`) is never answered from an old copy.

use js_sys::Uint8Array;
use switchscope_core::CoreError;
use switchscope_core::runtime::http::{HttpReply, HttpRequest, ReplyFuture, Transport};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Response, ResponseInit};

use super::http::{
    CANCELLED, add_network_bytes, body, is_abort, open_cache, start_range, unreachable,
};
use crate::error::describe;
use crate::js::{call, get};

/// HTTP for a checkpoint in the worker (stateless: the cache is the Cache API).
#[derive(Debug, Default)]
pub struct FetchTransport;

fn failed(url: &str, reason: impl Into<String>) -> CoreError {
    CoreError::Http {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

/// Where a verified range is kept: the file's URL with the range and `ETag` in the query.
fn range_key(url: &str, (start, end): (u64, u64), etag: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    let etag = String::from(js_sys::encode_uri_component(etag));
    format!("{url}{separator}switchscope-range={start}-{end}&etag={etag}")
}

/// A response header, when present and readable (CORS hides those not exposed).
fn header(response: &JsValue, name: &str) -> Option<String> {
    call(&get(response, "headers"), "get", &[name.into()])
        .ok()?
        .as_string()
}

/// The kept copy of a range, when there is one and it is whole (one that is not is deleted).
async fn from_cache(url: &str, range: (u64, u64), etag: &str) -> Option<HttpReply> {
    let cache = open_cache().await?;
    let key = range_key(url, range, etag);
    let found = JsFuture::from(cache.match_with_str(&key)).await.ok()?;
    if found.is_undefined() || found.is_null() {
        return None;
    }
    let content_range = header(&found, "content-range");
    let kept_etag = header(&found, "etag");
    let bytes = body(&found.unchecked_into()).await.ok();
    match bytes {
        Some(bytes)
            if bytes.len() as u64 == range.1 - range.0 && kept_etag.as_deref() == Some(etag) =>
        {
            Some(HttpReply {
                status: 206,
                content_range,
                etag: kept_etag,
                body: bytes,
                cached: true,
            })
        }
        _ => {
            let _ = JsFuture::from(cache.delete_with_str(&key)).await;
            None
        }
    }
}

/// Asks the network. The body of a ranged request is read only when the answer is `206`: a
/// server that ignores `Range` starts sending the whole file, and that transfer is cancelled.
async fn from_network(request: &HttpRequest<'_>) -> Result<HttpReply, CoreError> {
    let url = request.url;
    let response = JsFuture::from(start_range(url, request.range))
        .await
        .map_err(|e| {
            if is_abort(&e) {
                failed(url, CANCELLED)
            } else {
                CoreError::Http {
                    url: url.to_owned(),
                    reason: unreachable(url, &e),
                }
            }
        })?;
    let response: Response = response.unchecked_into();
    let status = response.status();
    let content_range = header(&response, "content-range");
    let etag = header(&response, "etag");
    let wanted = match request.range {
        Some(_) => status == 206,
        None => (200..300).contains(&status),
    };
    let bytes = if wanted {
        body(&response)
            .await
            .map_err(|e| failed(url, format!("stopped arriving ({e})")))?
    } else {
        let stream = get(&response, "body");
        if !stream.is_null() && !stream.is_undefined() {
            let _ = call(&stream, "cancel", &[]);
        }
        Vec::new()
    };
    add_network_bytes(bytes.len() as u64);
    Ok(HttpReply {
        status,
        content_range,
        etag,
        body: bytes,
        cached: false,
    })
}

/// Stores a verified range with the headers it was checked by.
async fn keep_range(key: String, content_range: Option<String>, etag: String, bytes: Vec<u8>) {
    let Some(cache) = open_cache().await else {
        return;
    };
    let headers = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&headers, &"ETag".into(), &etag.into());
    if let Some(content_range) = content_range {
        let _ = js_sys::Reflect::set(&headers, &"Content-Range".into(), &content_range.into());
    }
    let init = ResponseInit::new();
    init.set_headers(&headers);
    let array = Uint8Array::from(bytes.as_slice());
    let stored = match Response::new_with_opt_buffer_source_and_init(Some(&array), &init) {
        Ok(response) => JsFuture::from(cache.put_with_str(&key, &response))
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        web_sys::console::warn_1(&JsValue::from_str(&format!(
            "{key} was not cached: {}",
            describe(&e)
        )));
    }
}

impl Transport for FetchTransport {
    fn get<'a>(&'a self, request: HttpRequest<'a>) -> ReplyFuture<'a> {
        Box::pin(async move {
            if let (Some(range), Some(etag)) = (request.range, request.etag)
                && let Some(reply) = from_cache(request.url, range, etag).await
            {
                return Ok(reply);
            }
            from_network(&request).await
        })
    }

    fn keep(&self, request: &HttpRequest<'_>, reply: &HttpReply) {
        let (Some(range), Some(etag)) = (request.range, request.etag) else {
            return;
        };
        if reply.cached {
            return;
        }
        let key = range_key(request.url, range, etag);
        wasm_bindgen_futures::spawn_local(keep_range(
            key,
            reply.content_range.clone(),
            etag.to_owned(),
            reply.body.clone(),
        ));
    }
}
