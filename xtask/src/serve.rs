//! `cargo xtask serve`: build the web app in release with Trunk and serve `dist/` over HTTP.
//!
//! The server is ours ([`crate::http`], std only) rather than `trunk serve`, so that what the
//! tests exercise is exactly what users get: the release build, correct MIME types
//! (`application/wasm`), byte ranges and validators, precompressed copies answered by
//! `Accept-Encoding`, no rebuild or reload machinery in between.
//! `--dir NAME=PATH` also serves a directory at `/NAME/` (a checkpoint to try, say).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::compress;
use crate::http::{self, Site};
use crate::root;
use crate::tools::{self, Tools};

pub fn run(args: &[String]) -> Result<()> {
    let mut port = 8080u16;
    let mut build = true;
    let mut mounts = Vec::new();
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
            "--dir" => mounts.push(mount(it.next().map(String::as_str))?),
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
    for (name, dir) in &mounts {
        println!("  {} at http://127.0.0.1:{port}/{name}/", dir.display());
    }
    let mut site = Site::new(dist);
    site.mounts = mounts;
    http::serve_forever(listener, site);
    Ok(())
}

/// `NAME=PATH` of `--dir`: an existing directory, served at `/NAME/`.
fn mount(arg: Option<&str>) -> Result<(String, PathBuf)> {
    let arg = arg.context("--dir needs NAME=PATH")?;
    let (name, path) = arg
        .split_once('=')
        .with_context(|| format!("--dir {arg:?}: expected NAME=PATH"))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("--dir {arg:?}: NAME must be letters, digits, '-', '_' or '.'");
    }
    let path = PathBuf::from(path);
    if !path.is_dir() {
        bail!("--dir {arg:?}: {} is not a directory", path.display());
    }
    Ok((name.to_owned(), path))
}

/// `trunk build --release`, offline, into `dist/`; then the precompressed copies that the
/// server answers `Accept-Encoding` with.
pub fn build_web(tools: &Tools) -> Result<()> {
    tools::run(tools.command("trunk").args(["build", "--release"]))?;
    let dist = root().join("dist");
    let written = compress::write_variants(&dist)?;
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "precompressed {} files: {:.2} MB, {:.2} MB as their smallest copies",
        written.files,
        mb(written.bytes),
        mb(written.smallest)
    );
    let code = compress::app_code(&dist)?;
    let listed: Vec<String> = code
        .iter()
        .map(|(name, _, gz)| format!("{name} {:.2} MB", mb(*gz)))
        .collect();
    println!(
        "the app's code (wasm and JS): {:.2} MB gzipped ({})",
        mb(code.iter().map(|c| c.2).sum()),
        listed.join(", ")
    );
    Ok(())
}

/// Serves `dist` on an ephemeral port in a background thread; returns its address.
pub fn spawn(dist: PathBuf) -> Result<SocketAddr> {
    http::spawn(Site::new(dist))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_mounts_are_checked() {
        let here = std::env::temp_dir();
        let ok = format!("ckpt={}", here.display());
        assert_eq!(mount(Some(&ok)).unwrap(), ("ckpt".to_owned(), here.clone()));
        let err = |arg: Option<&str>| mount(arg).unwrap_err().to_string();
        assert!(err(None).contains("NAME=PATH"));
        assert!(err(Some("ckpt")).contains("expected NAME=PATH"));
        assert!(err(Some(&format!("a/b={}", here.display()))).contains("NAME must be"));
        assert!(err(Some("x=/no/such/dir")).contains("is not a directory"));
    }
}
