//! HTTP for models that live on a server: the [`Transport`] whoever does HTTP implements (the
//! CLI natively, the web worker with `fetch`), and [`RemoteFile`], one file read by byte ranges
//! with every answer checked here, once: `206`, `Content-Range` for exactly the bytes asked,
//! and the `ETag` and length the file had when opened (see [`super::remote`] for what that
//! guarantees).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::CoreError;
use crate::formats::ranged::{BytesFuture, RangeRead};

/// One HTTP request: a whole file, or the bytes `start..end` of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    pub url: &'a str,
    /// `(start, end)`, end exclusive: sent as `Range: bytes=start-(end-1)`.
    pub range: Option<(u64, u64)>,
    /// The `ETag` the file had when opened, for a transport that keeps verified ranges (a
    /// cache keyed by URL, `ETag` and range).
    pub etag: Option<&'a str>,
}

/// What came back. For a request with a range that was not answered `206`, a transport leaves
/// `body` empty: it never reads a whole file it did not ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpReply {
    pub status: u16,
    /// `Content-Range`, when the response has it and it is readable (CORS may hide it).
    pub content_range: Option<String>,
    /// `ETag`, likewise.
    pub etag: Option<String>,
    pub body: Vec<u8>,
    /// Served from the transport's own cache, not the network.
    pub cached: bool,
}

/// A future returning a reply.
pub type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Result<HttpReply, CoreError>> + 'a>>;

/// Does HTTP `GET`s.
pub trait Transport: fmt::Debug + Send + Sync {
    /// Sends `request`. An error is for a request that got no HTTP answer (network, CORS).
    fn get<'a>(&'a self, request: HttpRequest<'a>) -> ReplyFuture<'a>;

    /// `reply` to a ranged `request` was checked against the file's `ETag` and length: a
    /// transport with a cache may keep it. The default keeps nothing.
    fn keep(&self, request: &HttpRequest<'_>, reply: &HttpReply) {
        let _ = (request, reply);
    }
}

pub(crate) fn http(url: &str, reason: impl Into<String>) -> CoreError {
    CoreError::Http {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

/// Bytes and requests over the network, counted as replies arrive.
#[derive(Debug, Default)]
pub struct Traffic {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    /// Of them, answered from the transport's cache.
    pub cached_bytes: AtomicU64,
}

/// `GET url` whole: `Ok(None)` for a 404.
///
/// # Errors
/// [`CoreError::Http`] for any status but 200 and 404.
pub async fn get_file(transport: &dyn Transport, url: &str) -> Result<Option<Vec<u8>>, CoreError> {
    let reply = transport
        .get(HttpRequest {
            url,
            range: None,
            etag: None,
        })
        .await?;
    match reply.status {
        200 => Ok(Some(reply.body)),
        404 | 410 => Ok(None),
        status => Err(http(url, format!("answered HTTP {status}"))),
    }
}

const EXPOSE: &str = "the server must send it and, for another origin, expose it to scripts \
                      (Access-Control-Expose-Headers: Content-Range, ETag)";

/// One file of a checkpoint read by byte ranges, with the `ETag` and length it had when opened.
#[derive(Debug)]
pub struct RemoteFile {
    pub url: String,
    /// The file name within its directory (for the shard panel).
    pub name: String,
    pub len: u64,
    pub etag: String,
    transport: Arc<dyn Transport>,
    traffic: Arc<Traffic>,
}

/// `bytes a-b/total` → `(a, b + 1, total)`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((
        a.trim().parse().ok()?,
        b.trim().parse::<u64>().ok()? + 1,
        total.trim().parse().ok()?,
    ))
}

impl RemoteFile {
    /// Opens `url` with a request for its first bytes, learning its length and `ETag`; `Ok(None)`
    /// when the server says it does not exist (404).
    ///
    /// # Errors
    /// [`CoreError::Http`] when the server ignores `Range`, hides or omits `Content-Range` or
    /// `ETag`, or answers anything else.
    pub async fn open(
        url: &str,
        name: &str,
        transport: Arc<dyn Transport>,
        traffic: Arc<Traffic>,
    ) -> Result<Option<Self>, CoreError> {
        let request = HttpRequest {
            url,
            range: Some((0, 1)),
            etag: None,
        };
        let reply = transport.get(request).await?;
        traffic.requests.fetch_add(1, Ordering::Relaxed);
        traffic
            .bytes
            .fetch_add(reply.body.len() as u64, Ordering::Relaxed);
        match reply.status {
            206 => {}
            404 | 410 => return Ok(None),
            200 => return Err(ignores_range(url)),
            status => return Err(http(url, format!("answered HTTP {status}"))),
        }
        let content_range = reply.content_range.ok_or_else(|| {
            http(
                url,
                format!("its answer has no readable Content-Range: {EXPOSE}"),
            )
        })?;
        let (_, _, len) = parse_content_range(&content_range)
            .ok_or_else(|| http(url, format!("unreadable Content-Range {content_range:?}")))?;
        let etag = reply.etag.ok_or_else(|| {
            http(
                url,
                format!("its answer has no readable ETag, so a change to the file could not be noticed: {EXPOSE}"),
            )
        })?;
        Ok(Some(Self {
            url: url.to_owned(),
            name: name.to_owned(),
            len,
            etag,
            transport,
            traffic,
        }))
    }

    /// Bytes `start..end`, checked against the `ETag` and length recorded at open; one retry
    /// for a failed or short answer.
    ///
    /// # Errors
    /// [`CoreError::Http`] for a range outside the file, a server that ignores `Range`, a file
    /// that changed, or an answer that stays short.
    pub async fn range(&self, start: u64, end: u64) -> Result<(Vec<u8>, bool), CoreError> {
        if start > end || end > self.len {
            return Err(http(
                &self.url,
                format!(
                    "bytes {start}..{end} are outside the file ({} bytes)",
                    self.len
                ),
            ));
        }
        if start == end {
            return Ok((Vec::new(), false));
        }
        let mut last = None;
        for _ in 0..2 {
            match self.try_range(start, end).await {
                Ok(bytes) => return Ok(bytes),
                Err((e, retry)) if retry => last = Some(e),
                Err((e, _)) => return Err(e),
            }
        }
        Err(last.expect("two tries"))
    }

    /// One try; the error says whether another try could help.
    async fn try_range(&self, start: u64, end: u64) -> Result<(Vec<u8>, bool), (CoreError, bool)> {
        let url = self.url.as_str();
        let request = HttpRequest {
            url,
            range: Some((start, end)),
            etag: Some(&self.etag),
        };
        let reply = self.transport.get(request).await.map_err(|e| (e, true))?;
        let counter = if reply.cached {
            &self.traffic.cached_bytes
        } else {
            self.traffic.requests.fetch_add(1, Ordering::Relaxed);
            &self.traffic.bytes
        };
        counter.fetch_add(reply.body.len() as u64, Ordering::Relaxed);
        let changed = |what: String| {
            (
                http(
                    url,
                    format!("the file changed since it was opened ({what}); open the model again"),
                ),
                false,
            )
        };
        match reply.status {
            206 => {}
            200 => return Err((ignores_range(url), false)),
            412 | 416 => {
                return Err(changed(format!(
                    "HTTP {} for bytes {start}..{end}",
                    reply.status
                )));
            }
            status if status >= 500 => {
                return Err((http(url, format!("answered HTTP {status}")), true));
            }
            status => return Err((http(url, format!("answered HTTP {status}")), false)),
        }
        let etag = reply.etag.as_deref().unwrap_or("");
        if etag != self.etag {
            return Err(changed(format!("ETag {etag:?}, was {:?}", self.etag)));
        }
        let content_range = reply.content_range.as_deref().unwrap_or("");
        match parse_content_range(content_range) {
            Some((a, b, total)) if (a, b) == (start, end) && total == self.len => {}
            Some((_, _, total)) if total != self.len => {
                return Err(changed(format!("{total} bytes, was {}", self.len)));
            }
            _ => {
                return Err((
                    http(
                        url,
                        format!(
                            "asked for bytes {start}..{end}, got Content-Range {content_range:?}"
                        ),
                    ),
                    false,
                ));
            }
        }
        if reply.body.len() as u64 != end - start {
            return Err((
                http(
                    url,
                    format!(
                        "bytes {start}..{end}: {} of {} bytes arrived (truncated)",
                        reply.body.len(),
                        end - start
                    ),
                ),
                true,
            ));
        }
        self.transport.keep(&request, &reply);
        let cached = reply.cached;
        Ok((reply.body, cached))
    }
}

fn ignores_range(url: &str) -> CoreError {
    http(
        url,
        "the server answered a byte-range request with the whole file (HTTP 200): it does not \
         support Range, so the checkpoint would be downloaded whole; stopped. Serve it from a \
         server that answers Range requests (cargo xtask serve --dir does)",
    )
}

impl RangeRead for RemoteFile {
    fn label(&self) -> &str {
        &self.url
    }

    fn size(&self) -> u64 {
        self.len
    }

    fn read(&self, start: u64, len: u64) -> BytesFuture<'_> {
        Box::pin(async move { Ok(self.range(start, start + len).await?.0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 0-7/100"), Some((0, 8, 100)));
        assert_eq!(parse_content_range("bytes 10-19/20"), Some((10, 20, 20)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range(""), None);
    }
}
