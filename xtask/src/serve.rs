//! `cargo xtask serve`: build the web app in release with Trunk and serve `dist/` over HTTP.
//!
//! The server is ours (std only) rather than `trunk serve`, so that what the tests exercise is
//! exactly what users get: the release build, correct MIME types (`application/wasm`), no
//! rebuild or reload machinery in between.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::thread;

use anyhow::{Context, Result, bail};

use crate::root;
use crate::tools::{self, Tools};

pub fn run(args: &[String]) -> Result<()> {
    let mut port = 8080u16;
    let mut build = true;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--port" => {
                port = it
                    .next()
                    .context("--port needs a number")?
                    .parse()
                    .context("--port needs a number")?;
            }
            "--skip-build" => build = false,
            other => bail!("unknown option {other:?} for serve"),
        }
    }
    if build {
        let tools = tools::ensure_web_tools()?;
        build_web(&tools)?;
    }
    let dist = root().join("dist");
    if !dist.join("index.html").exists() {
        bail!("{} has no build; run without --skip-build", dist.display());
    }
    let listener = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port} (is it in use?)"))?;
    println!("Switchscope is served at http://127.0.0.1:{port}/  (Ctrl-C stops it)");
    serve_forever(listener, dist);
    Ok(())
}

/// `trunk build --release`, offline, into `dist/`.
pub fn build_web(tools: &Tools) -> Result<()> {
    tools::run(tools.command("trunk").args(["build", "--release"]))
}

/// Starts the server on an ephemeral port in a background thread; returns its address.
pub fn spawn(dist: PathBuf) -> Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let addr = listener.local_addr()?;
    thread::spawn(move || serve_forever(listener, dist));
    Ok(addr)
}

fn serve_forever(listener: TcpListener, dist: PathBuf) {
    for stream in listener.incoming().flatten() {
        let dist = dist.clone();
        thread::spawn(move || {
            if let Err(e) = handle(stream, &dist) {
                eprintln!("serve: {e:#}");
            }
        });
    }
}

fn content_type(path: &Path) -> &'static str {
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

/// Maps a request path onto a file under `dist`, refusing anything that leaves it.
fn resolve(dist: &Path, request_path: &str) -> Option<PathBuf> {
    let path = request_path.split(['?', '#']).next().unwrap_or("/");
    let relative = Path::new(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let mut full = dist.join(relative);
    if full.is_dir() {
        full = full.join("index.html");
    }
    full.is_file().then_some(full)
}

fn handle(stream: TcpStream, dist: &Path) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers; no request here has a body we need.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let mut out = stream;
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut out,
            "405 Method Not Allowed",
            "text/plain",
            b"method not allowed\n",
            false,
        );
    }
    match resolve(dist, target) {
        Some(file) => {
            let body = std::fs::read(&file)?;
            respond(
                &mut out,
                "200 OK",
                content_type(&file),
                &body,
                method == "HEAD",
            )
        }
        None => respond(
            &mut out,
            "404 Not Found",
            "text/plain",
            b"not found\n",
            method == "HEAD",
        ),
    }
}

fn respond(out: &mut TcpStream, status: &str, ctype: &str, body: &[u8], head: bool) -> Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !head {
        out.write_all(body)?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_inside_dist() {
        let dir = std::env::temp_dir().join(format!("xtask-serve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("index.html"), "x").unwrap();
        std::fs::write(dir.join("sub/a.wasm"), "x").unwrap();
        assert_eq!(resolve(&dir, "/"), Some(dir.join("index.html")));
        assert_eq!(resolve(&dir, "/?backend=cpu"), Some(dir.join("index.html")));
        assert_eq!(resolve(&dir, "/sub/a.wasm"), Some(dir.join("sub/a.wasm")));
        assert_eq!(resolve(&dir, "/../etc/passwd"), None);
        assert_eq!(resolve(&dir, "/sub/../../x"), None);
        assert_eq!(resolve(&dir, "/missing.js"), None);
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
