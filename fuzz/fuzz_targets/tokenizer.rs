//! The tokenizer of the shipped model (`public/models/switchscope-mini/tokenizer.json`, loaded
//! once): the input as text into `Tokenizer::encode` (emoji, right-to-left scripts, combining
//! marks, NUL, long inputs), the ids it gives back into `decode`, and the input's bytes as id
//! lists (16-bit ids, mostly in the vocabulary, and 32-bit ids, mostly outside it) into
//! `decode`. Errors are fine; a panic is a bug.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchscope_core::tokenizer::Tokenizer;

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        Tokenizer::from_bytes(include_bytes!(
            "../../public/models/switchscope-mini/tokenizer.json"
        ))
        .expect("the shipped tokenizer.json loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let tokenizer = tokenizer();
    let text = String::from_utf8_lossy(data);
    if let Ok(ids) = tokenizer.encode(&text) {
        let _ = tokenizer.decode(&ids);
    }
    let narrow: Vec<u32> = data
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    let _ = tokenizer.decode(&narrow);
    let wide: Vec<u32> = data
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let _ = tokenizer.decode(&wide);
});
