//! HTTP for `--model <URL>`: the core's [`Transport`] over a blocking client.

use switchscope_core::CoreError;
use switchscope_core::runtime::http::{HttpReply, HttpRequest, ReplyFuture, Transport};

/// Blocking `GET`s with one connection pool; redirects followed (the Hugging Face hub sends
/// files from a CDN), HTTP errors returned as statuses for the core to judge.
#[derive(Debug)]
pub struct Ureq(ureq::Agent);

impl Default for Ureq {
    fn default() -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("switchscope/", env!("CARGO_PKG_VERSION")))
            .build();
        Self(config.into())
    }
}

fn failed(url: &str, e: impl std::fmt::Display) -> CoreError {
    CoreError::Http {
        url: url.to_owned(),
        reason: format!("request failed: {e}"),
    }
}

impl Transport for Ureq {
    fn get<'a>(&'a self, request: HttpRequest<'a>) -> ReplyFuture<'a> {
        Box::pin(async move {
            let url = request.url;
            let mut call = self.0.get(url);
            if let Some((start, end)) = request.range {
                call = call.header("Range", format!("bytes={start}-{}", end - 1));
            }
            let mut response = call.call().map_err(|e| failed(url, e))?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let content_range = header("content-range");
            let etag = header("etag");
            // A range answered otherwise than 206 may be the whole file: never read it.
            let body = if request.range.is_some() && status != 206 || status >= 300 {
                Vec::new()
            } else {
                response
                    .body_mut()
                    .with_config()
                    .limit(u64::MAX)
                    .read_to_vec()
                    .map_err(|e| failed(url, e))?
            };
            Ok(HttpReply {
                status,
                content_range,
                etag,
                body,
                cached: false,
            })
        })
    }
}
