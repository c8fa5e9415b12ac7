//! The static file server behind `cargo xtask serve` and the end-to-end tests (std only).
//!
//! Every file is answered with a strong `ETag` (its length and modification time) and
//! `Accept-Ranges: bytes`. A `Range: bytes=…` request for one range is answered `206 Partial
//! Content` with `Content-Range`, reading only the requested bytes from the file (a seek, never
//! the whole file); a range that starts past the end gets `416 Range Not Satisfiable` with
//! `Content-Range: bytes */LEN`; an `If-Range` that names another version gets the whole file,
//! as does a request for several ranges (a server may ignore `Range`; one range is all the app
//! asks for). Responses allow any origin to read them and expose the headers a ranged reader
//! checks (`Content-Range`, `ETag`, `Content-Length`, `Accept-Ranges`), so that a page on
//! another origin can read a checkpoint served here.
//!
//! A file with precompressed copies beside it ([`crate::compress`]: `NAME.br`, `NAME.gz`) is
//! answered with the best copy the request's `Accept-Encoding` takes (`Content-Encoding`,
//! `Vary: Accept-Encoding`, an `ETag` of its own), but never for a `Range` request: ranges
//! address the file's own bytes. An `If-None-Match` that names the current `ETag` gets
//! `304 Not Modified` with no body.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::UNIX_EPOCH;

use anyhow::Result;

use crate::compress::{CODINGS, Coding};

/// What the server serves: `root` at `/`, and each mount's directory at `/NAME/`.
#[derive(Debug, Clone)]
pub struct Site {
    pub root: PathBuf,
    pub mounts: Vec<(String, PathBuf)>,
    /// Body bytes sent so far, over every connection (shared by the clones).
    pub sent: Arc<AtomicU64>,
}

impl Site {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            mounts: Vec::new(),
            sent: Arc::default(),
        }
    }

    /// Maps a request path onto a file, refusing anything that leaves its directory.
    pub fn resolve(&self, request_path: &str) -> Option<PathBuf> {
        let path = request_path.split(['?', '#']).next().unwrap_or("/");
        let path = path.trim_start_matches('/');
        let (dir, rest) = self
            .mounts
            .iter()
            .find_map(|(name, dir)| {
                let rest = path.strip_prefix(name.as_str())?;
                (rest.is_empty() || rest.starts_with('/')).then_some((dir, rest))
            })
            .unwrap_or((&self.root, path));
        let relative = Path::new(rest.trim_start_matches('/'));
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return None;
        }
        let mut full = dir.join(relative);
        if full.is_dir() {
            full = full.join("index.html");
        }
        full.is_file().then_some(full)
    }
}

/// Starts the server on an ephemeral port in a background thread; returns its address.
pub fn spawn(site: Site) -> Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let addr = listener.local_addr()?;
    thread::spawn(move || serve_forever(listener, site));
    Ok(addr)
}

pub fn serve_forever(listener: TcpListener, site: Site) {
    for stream in listener.incoming().flatten() {
        let site = site.clone();
        thread::spawn(move || {
            if let Err(e) = handle(stream, &site) {
                eprintln!("serve: {e:#}");
            }
        });
    }
}

pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A byte range a request asks for, before the file's length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-` or `first-last` (inclusive).
    From { first: u64, last: Option<u64> },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// Why a range cannot be served from a file of the given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// The `Range` header's one byte range; `None` when there is none the server takes (no
/// header, another unit, several ranges, a malformed one: the whole file is answered).
pub fn parse_range(header: &str) -> Option<ByteRange> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return Some(ByteRange::Suffix(last.parse().ok()?));
    }
    let first = first.parse().ok()?;
    let last = if last.is_empty() {
        None
    } else {
        Some(last.parse().ok()?)
    };
    if last.is_some_and(|l| l < first) {
        return None;
    }
    Some(ByteRange::From { first, last })
}

impl ByteRange {
    /// The inclusive byte span of a file of `len` bytes.
    ///
    /// # Errors
    /// [`Unsatisfiable`] when the range starts past the end (or asks for the last 0 bytes).
    pub fn resolve(self, len: u64) -> Result<(u64, u64), Unsatisfiable> {
        match self {
            Self::From { first, last } if first < len => {
                Ok((first, last.map_or(len - 1, |l| l.min(len - 1))))
            }
            Self::Suffix(n) if n > 0 && len > 0 => Ok((len.saturating_sub(n), len - 1)),
            _ => Err(Unsatisfiable),
        }
    }
}

/// A strong validator for a file: its length and modification time, which change together
/// with any rewrite here.
fn etag(meta: &std::fs::Metadata) -> String {
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{modified:x}\"", meta.len())
}

/// Whether an `Accept-Encoding` header takes `token` (`gzip;q=0` refuses it, `*` takes any
/// coding not named).
pub fn accepts(header: &str, token: &str) -> bool {
    let mut star = false;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
        if name == token {
            return q > 0.0;
        }
        if name == "*" {
            star = q > 0.0;
        }
    }
    star
}

/// The representation of `path` to send: a precompressed copy the request accepts (never for
/// a range request), or the file itself; and whether the file has copies at all (`Vary`). A
/// copy older than its file is stale (the file was rewritten after the build) and is not used.
fn representation(
    path: &Path,
    accept: Option<&str>,
    ranged: bool,
) -> (PathBuf, Option<Coding>, bool) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let file_time = modified(path);
    let copies: Vec<Coding> = CODINGS
        .into_iter()
        .filter(|c| modified(&c.variant(path)).is_some_and(|t| Some(t) >= file_time))
        .collect();
    let chosen = copies
        .iter()
        .copied()
        .find(|c| !ranged && accept.is_some_and(|a| accepts(a, c.token())));
    let file = chosen.map_or_else(|| path.to_path_buf(), |c| c.variant(path));
    (file, chosen, !copies.is_empty())
}

fn handle(stream: TcpStream, site: &Site) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers (names lower-cased); no request here has a body we need.
    let mut headers = HashMap::new();
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let mut out = stream;
    let head = method == "HEAD";
    if method != "GET" && !head {
        return respond_text(
            &mut out,
            "405 Method Not Allowed",
            "method not allowed\n",
            false,
        );
    }
    let Some(path) = site.resolve(target) else {
        return respond_text(&mut out, "404 Not Found", "not found\n", head);
    };
    let (sent, coding, varies) = representation(
        &path,
        headers.get("accept-encoding").map(String::as_str),
        headers.contains_key("range"),
    );
    let mut file = File::open(&sent)?;
    let meta = file.metadata()?;
    let len = meta.len();
    let mut tag = etag(&meta);
    if let Some(coding) = coding {
        tag.insert_str(tag.len() - 1, &format!("-{}", coding.suffix()));
    }
    let mut common = format!(
        "Content-Type: {}\r\nETag: {tag}\r\nAccept-Ranges: bytes\r\n",
        content_type(&path)
    );
    if let Some(coding) = coding {
        common.push_str(&format!("Content-Encoding: {}\r\n", coding.token()));
    }
    if varies {
        common.push_str("Vary: Accept-Encoding\r\n");
    }
    let unchanged = headers
        .get("if-none-match")
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if unchanged {
        write_head(&mut out, "304 Not Modified", &common, None)?;
        out.flush()?;
        return Ok(());
    }
    // If-Range naming another version: the whole (current) file.
    let current = headers.get("if-range").is_none_or(|v| *v == tag);
    let range = headers
        .get("range")
        .and_then(|r| parse_range(r))
        .filter(|_| current);
    let (status, first, count) = match range.map(|r| r.resolve(len)) {
        None => ("200 OK", 0, len),
        Some(Ok((first, last))) => {
            common.push_str(&format!("Content-Range: bytes {first}-{last}/{len}\r\n"));
            ("206 Partial Content", first, last - first + 1)
        }
        Some(Err(Unsatisfiable)) => {
            common.push_str(&format!("Content-Range: bytes */{len}\r\n"));
            write_head(&mut out, "416 Range Not Satisfiable", &common, Some(0))?;
            return Ok(());
        }
    };
    write_head(&mut out, status, &common, Some(count))?;
    if !head {
        file.seek(SeekFrom::Start(first))?;
        let copied = io::copy(&mut file.take(count), &mut out)?;
        site.sent.fetch_add(copied, Ordering::SeqCst);
        if copied != count {
            anyhow::bail!("{} shrank while being sent", sent.display());
        }
    }
    out.flush()?;
    Ok(())
}

/// The status line and headers; `len` is the body's length (`None` for a 304, which has no
/// body and must not announce one).
fn write_head(out: &mut TcpStream, status: &str, headers: &str, len: Option<u64>) -> Result<()> {
    let length = len.map_or_else(String::new, |l| format!("Content-Length: {l}\r\n"));
    write!(
        out,
        "HTTP/1.1 {status}\r\n{headers}{length}Cache-Control: no-cache\r\n\
         X-Content-Type-Options: nosniff\r\nAccess-Control-Allow-Origin: *\r\n\
         Access-Control-Expose-Headers: Content-Range, ETag, Content-Length, Accept-Ranges, \
         Content-Encoding\r\nConnection: close\r\n\r\n"
    )?;
    Ok(())
}

fn respond_text(out: &mut TcpStream, status: &str, body: &str, head: bool) -> Result<()> {
    write_head(
        out,
        status,
        "Content-Type: text/plain\r\n",
        Some(body.len() as u64),
    )?;
    if !head {
        out.write_all(body.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn resolve_stays_inside_its_directory() {
        let dir = temp_dir("resolve");
        let ckpt = temp_dir("resolve-mount");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("index.html"), "x").unwrap();
        std::fs::write(dir.join("sub/a.wasm"), "x").unwrap();
        std::fs::write(ckpt.join("config.json"), "{}").unwrap();
        let mut site = Site::new(dir.clone());
        site.mounts.push(("ckpt".into(), ckpt.clone()));
        assert_eq!(site.resolve("/"), Some(dir.join("index.html")));
        assert_eq!(site.resolve("/?backend=cpu"), Some(dir.join("index.html")));
        assert_eq!(site.resolve("/sub/a.wasm"), Some(dir.join("sub/a.wasm")));
        assert_eq!(
            site.resolve("/ckpt/config.json"),
            Some(ckpt.join("config.json"))
        );
        assert_eq!(site.resolve("/ckptx/config.json"), None);
        assert_eq!(site.resolve("/../etc/passwd"), None);
        assert_eq!(site.resolve("/sub/../../x"), None);
        assert_eq!(site.resolve("/ckpt/../index.html"), None);
        assert_eq!(site.resolve("/missing.js"), None);
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&ckpt).unwrap();
    }

    #[test]
    fn ranges_parse_and_resolve_against_a_length() {
        let from = |first, last| Some(ByteRange::From { first, last });
        assert_eq!(parse_range("bytes=0-99"), from(0, Some(99)));
        assert_eq!(parse_range("bytes=100-"), from(100, None));
        assert_eq!(parse_range(" bytes= -8 "), Some(ByteRange::Suffix(8)));
        assert_eq!(parse_range("bytes=5-4"), None);
        assert_eq!(parse_range("bytes=0-1,4-5"), None);
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(parse_range("bytes=x-1"), None);
        assert_eq!(from(0, Some(99)).unwrap().resolve(50), Ok((0, 49)));
        assert_eq!(from(10, None).unwrap().resolve(50), Ok((10, 49)));
        assert_eq!(from(50, None).unwrap().resolve(50), Err(Unsatisfiable));
        assert_eq!(ByteRange::Suffix(8).resolve(50), Ok((42, 49)));
        assert_eq!(ByteRange::Suffix(80).resolve(50), Ok((0, 49)));
        assert_eq!(ByteRange::Suffix(0).resolve(50), Err(Unsatisfiable));
        assert_eq!(ByteRange::Suffix(3).resolve(0), Err(Unsatisfiable));
    }

    /// A raw request; the status line, the headers (lower-cased names) and the body.
    fn get(
        addr: SocketAddr,
        path: &str,
        extra: &str,
    ) -> (String, HashMap<String, String>, Vec<u8>) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let mut lines = head.lines();
        let status = lines.next().unwrap().to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, raw[split + 4..].to_vec())
    }

    #[test]
    fn the_server_answers_ranges_from_the_file() {
        let dir = temp_dir("serve");
        let ckpt = temp_dir("serve-mount");
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        std::fs::write(dir.join("index.html"), "<p>x</p>").unwrap();
        std::fs::write(ckpt.join("model.safetensors"), &data).unwrap();
        let mut site = Site::new(dir.clone());
        site.mounts.push(("ckpt".into(), ckpt.clone()));
        let addr = spawn(site).unwrap();
        let path = "/ckpt/model.safetensors";

        let (status, h, body) = get(addr, path, "");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, data);
        assert_eq!(h["accept-ranges"], "bytes");
        assert_eq!(h["content-length"], "10000");
        let tag = h["etag"].clone();
        assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
        assert!(h["access-control-expose-headers"].contains("Content-Range"));

        let (status, h, body) = get(addr, path, "Range: bytes=8-15\r\n");
        assert_eq!(status, "HTTP/1.1 206 Partial Content");
        assert_eq!(body, data[8..16]);
        assert_eq!(h["content-range"], "bytes 8-15/10000");
        assert_eq!(h["content-length"], "8");
        assert_eq!(h["etag"], tag);

        let (_, h, body) = get(addr, path, "Range: bytes=-10\r\n");
        assert_eq!(body, data[9990..]);
        assert_eq!(h["content-range"], "bytes 9990-9999/10000");

        let (status, h, body) = get(addr, path, "Range: bytes=10000-\r\n");
        assert_eq!(status, "HTTP/1.1 416 Range Not Satisfiable");
        assert_eq!(h["content-range"], "bytes */10000");
        assert!(body.is_empty());

        // a range of another version of the file: the whole file instead
        let (status, _, body) = get(addr, path, "Range: bytes=0-3\r\nIf-Range: \"old\"\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body.len(), 10_000);
        let (status, _, body) = get(
            addr,
            path,
            &format!("Range: bytes=0-3\r\nIf-Range: {tag}\r\n"),
        );
        assert_eq!(status, "HTTP/1.1 206 Partial Content");
        assert_eq!(body, data[..4]);

        // the file changes: so does its validator
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(ckpt.join("model.safetensors"), &data[..9000]).unwrap();
        let (_, h, _) = get(addr, path, "Range: bytes=0-0\r\n");
        assert_ne!(h["etag"], tag);
        assert_eq!(h["content-range"], "bytes 0-0/9000");

        let (status, _, _) = get(addr, "/ckpt/missing.bin", "");
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&ckpt).unwrap();
    }

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        assert!(accepts("gzip, deflate, br, zstd", "br"));
        assert!(accepts("gzip;q=1.0, br;q=0.5", "br"));
        assert!(!accepts("gzip, br;q=0", "br"));
        assert!(!accepts("gzip", "br"));
        assert!(accepts("*", "br"));
        assert!(!accepts("*, br;q=0", "br"));
        assert!(!accepts("identity", "gzip"));
    }

    #[test]
    fn precompressed_copies_answer_accept_encoding_but_never_a_range() {
        let dir = temp_dir("encodings");
        let text = "export function run() { return 'expert 3'; }\n".repeat(300);
        std::fs::write(dir.join("app.js"), &text).unwrap();
        std::fs::write(dir.join("plain.js"), &text).unwrap();
        crate::compress::write_variants(&dir).unwrap();
        std::fs::remove_file(dir.join("plain.js.br")).unwrap();
        std::fs::remove_file(dir.join("plain.js.gz")).unwrap();
        let addr = spawn(Site::new(dir.clone())).unwrap();

        let (status, h, body) = get(addr, "/app.js", "Accept-Encoding: gzip, deflate, br\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(h["content-encoding"], "br");
        assert_eq!(h["vary"], "Accept-Encoding");
        assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
        assert_eq!(body, std::fs::read(dir.join("app.js.br")).unwrap());
        assert_eq!(h["content-length"], body.len().to_string());
        let br_tag = h["etag"].clone();

        let (_, h, body) = get(addr, "/app.js", "Accept-Encoding: gzip, br;q=0\r\n");
        assert_eq!(h["content-encoding"], "gzip");
        assert_eq!(body, std::fs::read(dir.join("app.js.gz")).unwrap());
        assert_ne!(h["etag"], br_tag);

        let (_, h, body) = get(addr, "/app.js", "");
        assert!(!h.contains_key("content-encoding"));
        assert_eq!(h["vary"], "Accept-Encoding");
        assert_eq!(body, text.as_bytes());
        let identity_tag = h["etag"].clone();
        assert_ne!(identity_tag, br_tag);

        // a range addresses the file's own bytes, whatever the request accepts
        let (status, h, body) = get(
            addr,
            "/app.js",
            "Accept-Encoding: br, gzip\r\nRange: bytes=7-14\r\n",
        );
        assert_eq!(status, "HTTP/1.1 206 Partial Content");
        assert!(!h.contains_key("content-encoding"));
        assert_eq!(body, &text.as_bytes()[7..15]);
        assert_eq!(h["content-range"], format!("bytes 7-14/{}", text.len()));

        // a file without copies says nothing about encodings
        let (_, h, body) = get(addr, "/plain.js", "Accept-Encoding: br\r\n");
        assert!(!h.contains_key("content-encoding") && !h.contains_key("vary"));
        assert_eq!(body, text.as_bytes());

        // revalidation: the representation's own tag, no body
        let (status, h, body) = get(
            addr,
            "/app.js",
            &format!("Accept-Encoding: br\r\nIf-None-Match: {br_tag}\r\n"),
        );
        assert_eq!(status, "HTTP/1.1 304 Not Modified");
        assert!(body.is_empty() && !h.contains_key("content-length"));
        assert_eq!(h["etag"], br_tag);
        let (status, _, body) = get(addr, "/app.js", &format!("If-None-Match: {br_tag}\r\n"));
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, text.as_bytes());

        // the file rewritten after its copies were made: the copies are stale, the file is sent
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.join("app.js"), "export const fresh = 1;\n").unwrap();
        let (_, h, body) = get(addr, "/app.js", "Accept-Encoding: br, gzip\r\n");
        assert!(!h.contains_key("content-encoding") && !h.contains_key("vary"));
        assert_eq!(body, b"export const fresh = 1;\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
