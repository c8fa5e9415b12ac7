//! `--model <URL>`: checkpoints read by byte ranges from a local HTTP server that counts every
//! byte it sends and can misbehave on purpose (no `Range` support, hidden headers, a file that
//! changes, a short answer).

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

mod common;
use common::{fixture, switchscope};

/// How the server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Answers a `Range` request with the whole file (200).
    IgnoresRange,
    /// Sends neither `Content-Range` nor `ETag` (as a browser sees a server without
    /// `Access-Control-Expose-Headers`).
    HidesHeaders,
    /// The `ETag` changes after this many ranged requests.
    ChangesAfter(usize),
    /// Ranged answers after this many carry half the bytes (with a matching `Content-Length`).
    TruncatesAfter(usize),
}

struct Server {
    port: u16,
    /// Body bytes sent with 200 and 206 answers.
    sent: Arc<AtomicU64>,
    /// Paths requested, with their ranges.
    log: Arc<Mutex<Vec<String>>>,
}

fn serve(root: PathBuf, fault: Fault) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let ranged = Arc::new(AtomicUsize::new(0));
    let (s, l) = (sent.clone(), log.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (root, s, l, ranged) = (root.clone(), s.clone(), l.clone(), ranged.clone());
            std::thread::spawn(move || {
                let _ = answer(stream, &root, fault, &s, &l, &ranged);
            });
        }
    });
    Server { port, sent, log }
}

fn answer(
    stream: TcpStream,
    root: &Path,
    fault: Fault,
    sent: &AtomicU64,
    log: &Mutex<Vec<String>>,
    ranged: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut range = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let (a, b) = v.trim().split_once('-').unwrap();
            range = Some((a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()));
        }
    }
    log.lock().unwrap().push(format!("{path} {range:?}"));
    let file = root.join(path.trim_start_matches('/'));
    let Ok(mut f) = std::fs::File::open(&file) else {
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    };
    let len = f.metadata()?.len();
    let n = match range {
        Some(_) => ranged.fetch_add(1, Ordering::SeqCst),
        None => 0,
    };
    let etag = match fault {
        Fault::ChangesAfter(k) if n >= k => "\"v2\"",
        _ => "\"v1\"",
    };
    let (status, start, end) = match range {
        Some((a, b)) if fault != Fault::IgnoresRange => {
            ("206 Partial Content", a, b.min(len - 1) + 1)
        }
        _ => ("200 OK", 0, len),
    };
    let mut body = vec![0u8; (end - start) as usize];
    f.seek(SeekFrom::Start(start))?;
    f.read_exact(&mut body)?;
    if matches!(fault, Fault::TruncatesAfter(k) if n >= k) && range.is_some() {
        body.truncate(body.len() / 2);
    }
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        body.len()
    );
    if fault != Fault::HidesHeaders {
        head += &format!("ETag: {etag}\r\n");
        if status.starts_with("206") {
            head += &format!("Content-Range: bytes {start}-{}/{len}\r\n", end - 1);
        }
    }
    out.write_all(head.as_bytes())?;
    out.write_all(b"\r\n")?;
    out.write_all(&body)?;
    sent.fetch_add(body.len() as u64, Ordering::SeqCst);
    Ok(())
}

fn generate(model: &str) -> (bool, Value, String) {
    generate_on(model, "cpu")
}

fn generate_on(model: &str, backend: &str) -> (bool, Value, String) {
    let (ok, stdout, stderr) = switchscope(&[
        "generate",
        "--backend",
        backend,
        "--model",
        model,
        "--input-ids",
        "5,25,59,107,11,40,3,77,1",
        "--max-new-tokens",
        "6",
        "--json",
    ]);
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (ok, json, stderr)
}

/// A random checkpoint with 64 experts per sparse layer (2 + 2 blocks, one sparse each), in
/// files of at most `shard_mb` MB.
fn random_checkpoint(dir: &Path, shard_mb: &str) -> PathBuf {
    let config = serde_json::json!({
        "architectures": ["SwitchTransformersForConditionalGeneration"],
        "model_type": "switch_transformers",
        "vocab_size": 256, "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4,
        "num_layers": 2, "num_decoder_layers": 2,
        "num_sparse_encoder_layers": 1, "num_sparse_decoder_layers": 1,
        "encoder_sparse_step": 2, "decoder_sparse_step": 2,
        "num_experts": 64, "expert_capacity": 64,
        "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "dense_act_fn": "relu", "tie_word_embeddings": true, "router_bias": false,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0
    });
    std::fs::create_dir_all(dir).unwrap();
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let out = dir.join(format!("random-{shard_mb}"));
    let (ok, _, stderr) = switchscope(&[
        "bench",
        "random-checkpoint",
        "--config",
        config_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--shard-mb",
        shard_mb,
    ]);
    assert!(ok, "{stderr}");
    out
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("switchscope-remote-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Bytes of a safetensors file's header (its length prefix included) and of its dense tensors.
fn safetensors_parts(path: &Path) -> (u64, u64) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let header: Value = serde_json::from_slice(&bytes[8..8 + n as usize]).unwrap();
    let dense = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| *name != "__metadata__" && !name.contains(".mlp.experts.expert_"))
        .map(|(_, t)| {
            let o = t["data_offsets"].as_array().unwrap();
            o[1].as_u64().unwrap() - o[0].as_u64().unwrap()
        })
        .sum();
    (8 + n, dense)
}

#[test]
fn checkpoints_over_http_run_like_their_directories() {
    let work = temp_dir("same");
    let single = random_checkpoint(&work, "64");
    let sharded = random_checkpoint(&work, "0.3");
    assert!(sharded.join("model.safetensors.index.json").is_file());
    for dir in [
        single,
        sharded,
        fixture("tiny"),
        fixture("tiny-sharded"),
        fixture("tiny-bin"),
    ] {
        let server = serve(dir.parent().unwrap().to_owned(), Fault::None);
        let name = dir.file_name().unwrap().to_str().unwrap();
        let url = format!("http://127.0.0.1:{}/{name}/", server.port);
        let (ok, remote, stderr) = generate(&url);
        assert!(ok, "{name}: {stderr}");
        let (ok, local, stderr) = generate(dir.to_str().unwrap());
        assert!(ok, "{name}: {stderr}");
        assert_eq!(remote["output_ids"], local["output_ids"], "{name}");
        assert_eq!(remote["routing"], local["routing"], "{name}");
    }
    std::fs::remove_dir_all(&work).unwrap();
}

/// On a GPU each expert is quantized to int8 as it arrives, as `switchscope convert` would.
#[test]
fn on_a_gpu_experts_are_quantized_as_they_arrive() {
    let work = temp_dir("gpu");
    let dir = random_checkpoint(&work, "64");
    let converted = work.join("int8");
    let (ok, _, stderr) = switchscope(&[
        "convert",
        "--from",
        dir.to_str().unwrap(),
        "--out",
        converted.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let server = serve(work.clone(), Fault::None);
    let url = format!("http://127.0.0.1:{}/random-64/", server.port);
    let (ok, remote, stderr) = generate_on(&url, "wgpu");
    assert!(ok, "{stderr}");
    let (ok, local, stderr) = generate_on(converted.to_str().unwrap(), "wgpu");
    assert!(ok, "{stderr}");
    assert_eq!(remote["output_ids"], local["output_ids"]);
    assert_eq!(remote["routing"], local["routing"]);
    std::fs::remove_dir_all(&work).unwrap();
}

#[test]
fn only_headers_dense_tensors_and_routed_experts_cross_the_network() {
    let work = temp_dir("bytes");
    let dir = random_checkpoint(&work, "64");
    let server = serve(work.clone(), Fault::None);
    let url = format!("http://127.0.0.1:{}/random-64/", server.port);
    let (ok, out, stderr) = generate(&url);
    assert!(ok, "{stderr}");
    let weights = dir.join("model.safetensors");
    let (header, dense) = safetensors_parts(&weights);
    let config = std::fs::metadata(dir.join("config.json")).unwrap().len();
    // Each expert's file is named `{file}/{start}-{end}` by the bytes it came from.
    let loaded = out["shards_loaded"].as_array().unwrap();
    let experts: u64 = loaded
        .iter()
        .map(|f| {
            let (_, range) = f.as_str().unwrap().rsplit_once('/').unwrap();
            let (a, b) = range.split_once('-').unwrap();
            b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap()
        })
        .sum();
    assert!(
        !loaded.is_empty() && loaded.len() < 128,
        "{} experts",
        loaded.len()
    );
    // The first request (one byte) learns the file's length and ETag.
    let expected = config + 1 + header + dense + experts;
    let sent = server.sent.load(Ordering::SeqCst);
    let size = std::fs::metadata(&weights).unwrap().len();
    assert_eq!(
        sent,
        expected,
        "served {sent} bytes; config {config} + probe 1 + header {header} + dense {dense} + {} experts {experts}\n{:#?}",
        loaded.len(),
        server.log.lock().unwrap()
    );
    assert!(sent * 2 < size, "{sent} of {size} bytes");
    std::fs::remove_dir_all(&work).unwrap();
}

#[test]
fn a_server_that_misbehaves_is_refused_with_the_reason() {
    let root = fixture("");
    for (fault, expected) in [
        (Fault::IgnoresRange, "does not support Range"),
        (Fault::HidesHeaders, "Access-Control-Expose-Headers"),
        (Fault::ChangesAfter(3), "changed since it was opened"),
        (Fault::TruncatesAfter(3), "(truncated)"),
    ] {
        let server = serve(root.clone(), fault);
        let url = format!("http://127.0.0.1:{}/tiny/", server.port);
        let (ok, _, stderr) = generate(&url);
        assert!(!ok, "{fault:?} was accepted");
        assert!(stderr.contains(expected), "{fault:?}: {stderr}");
        if fault == Fault::IgnoresRange {
            let log = server.log.lock().unwrap();
            let asked = log
                .iter()
                .filter(|l| l.contains("model.safetensors"))
                .count();
            assert_eq!(asked, 1, "one request, then stop: {log:?}");
        }
    }
    // Not a checkpoint directory at all.
    let server = serve(root, Fault::None);
    let (ok, _, stderr) = generate(&format!("http://127.0.0.1:{}/nothing-here/", server.port));
    assert!(!ok);
    assert!(stderr.contains("not a checkpoint directory"), "{stderr}");
}
