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

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::UNIX_EPOCH;

use anyhow::Result;

/// What the server serves: `root` at `/`, and each mount's directory at `/NAME/`.
#[derive(Debug, Clone)]
pub struct Site {
    pub root: PathBuf,
    pub mounts: Vec<(String, PathBuf)>,
}

impl Site {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            mounts: Vec::new(),
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
    let mut file = File::open(&path)?;
    let meta = file.metadata()?;
    let len = meta.len();
    let tag = etag(&meta);
    let mut common = format!(
        "Content-Type: {}\r\nETag: {tag}\r\nAccept-Ranges: bytes\r\n",
        content_type(&path)
    );
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
            write_head(&mut out, "416 Range Not Satisfiable", &common, 0)?;
            return Ok(());
        }
    };
    write_head(&mut out, status, &common, count)?;
    if !head {
        file.seek(SeekFrom::Start(first))?;
        let copied = io::copy(&mut file.take(count), &mut out)?;
        if copied != count {
            anyhow::bail!("{} shrank while being sent", path.display());
        }
    }
    out.flush()?;
    Ok(())
}

fn write_head(out: &mut TcpStream, status: &str, headers: &str, len: u64) -> Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {len}\r\nCache-Control: no-cache\r\n\
         X-Content-Type-Options: nosniff\r\nAccess-Control-Allow-Origin: *\r\n\
         Access-Control-Expose-Headers: Content-Range, ETag, Content-Length, Accept-Ranges\r\n\
         Connection: close\r\n\r\n"
    )?;
    Ok(())
}

fn respond_text(out: &mut TcpStream, status: &str, body: &str, head: bool) -> Result<()> {
    write_head(
        out,
        status,
        "Content-Type: text/plain\r\n",
        body.len() as u64,
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
}
