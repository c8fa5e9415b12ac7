//! The shard reader on arbitrary bytes. The input is one file's bytes, handed straight to the
//! code that runs after `verify` has checked a shard's size and SHA-256 (random bytes would
//! never pass that check, so the parser is driven directly):
//! - `safetensors::parse_bytes` (the in-memory header parser) and `decode_floats_named` on
//!   every tensor it finds;
//! - `store::decode_matrix` for `wi` and `wo` under the shipped int8 and int4 manifests and
//!   under f32 and f16 variants, so that every stored layout reaches its decoder (and
//!   `decode_stored`, `Quantized::dequantize` behind it);
//! - `SafetensorsFile::open` and `read` (the streaming reader used for dense weights) on the
//!   same bytes written to a scratch file.
//!
//! Errors are fine; a panic, or an allocation sized by a header's claims rather than by the
//! bytes present (a header that says 2^60 bytes), is a bug.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchscope_core::formats::tensor::decode_floats_named;
use switchscope_core::formats::manifest::Manifest;
use switchscope_core::formats::quant::Scheme;
use switchscope_core::formats::safetensors::{SafetensorsFile, parse_bytes};
use switchscope_core::formats::shard::decode_matrix;

/// The shipped manifests (int8 and int4 experts) and f32/f16 variants of the first.
fn manifests() -> &'static [Manifest] {
    static MANIFESTS: OnceLock<Vec<Manifest>> = OnceLock::new();
    MANIFESTS.get_or_init(|| {
        let mut out: Vec<Manifest> = [
            include_str!("../../public/models/switchscope-mini/manifest.json"),
            include_str!("../../public/models/switchscope-mini-int4/manifest.json"),
        ]
        .into_iter()
        .map(|text| Manifest::from_json(text).expect("the shipped manifests parse"))
        .collect();
        for scheme in [Scheme::F32, Scheme::F16] {
            let mut m = out[0].clone();
            m.quantization.experts = scheme;
            out.push(m);
        }
        out
    })
}

/// A scratch file for this process (libFuzzer runs one input at a time).
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("switchscope-fuzz-shard-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = parse_bytes(data) {
        for (name, (info, raw)) in &tensors {
            let _ = decode_floats_named(&info.dtype, raw, name);
        }
        for manifest in manifests() {
            for matrix in ["wi", "wo"] {
                if let Ok((values, [rows, cols])) = decode_matrix(manifest, "fuzz", data, matrix) {
                    assert_eq!(values.len(), rows * cols);
                }
            }
        }
    }
    let path = scratch();
    std::fs::write(path, data).expect("the scratch file can be written");
    if let Ok(mut file) = SafetensorsFile::open(path) {
        let names: Vec<String> = file.tensors.keys().cloned().collect();
        for name in names {
            let _ = file.read(&name);
        }
    }
});
