//! The same ids and text as Hugging Face `tokenizers` (the version the CLI links), for every
//! `tokenizer.json` the project ships or tests with, on hand-picked and generated text: the page
//! uses this crate, the CLI uses `tokenizers`, and the two must agree.
//!
//! Unicode normalization and grapheme clusters come from the crates `tokenizers` itself uses, so
//! that a difference here is one of this crate's; the browser's normalization is checked in the
//! page (`tests/e2e/reference.test.mjs`).

use std::path::{Path, PathBuf};

use switchscope_text::{Form, Tokenizer, Unicode};
use unicode_normalization_alignments::UnicodeNormalization;
use unicode_segmentation::UnicodeSegmentation;

struct Native;

impl Unicode for Native {
    fn normalize(&self, form: Form, text: &str) -> String {
        match form {
            Form::Nfc => text.nfc().map(|(c, _)| c).collect(),
            Form::Nfd => text.nfd().map(|(c, _)| c).collect(),
            Form::Nfkc => text.nfkc().map(|(c, _)| c).collect(),
            Form::Nfkd => text.nfkd().map(|(c, _)| c).collect(),
        }
    }
    fn graphemes<'a>(&self, text: &'a str) -> Vec<&'a str> {
        text.graphemes(true).collect()
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `tokenizer.json` under the model and fixture directories.
fn files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["public/models", "tests/fixtures"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path().join("tokenizer.json");
            if path.exists() {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 3, "{files:?}");
    files
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "",
        " ",
        "   ",
        "Hello world",
        "  leading and trailing  ",
        "translate English to Spanish: And Ephron answered Abraham, saying unto him,",
        "translate Spanish to English: Y respondieron los hijos de Heth á Abraham, y dijéronle:",
        "Fellow-Citizens of the Senate and of the House of <extra_id_0>:",
        "def __init__(self, <extra_id_0>):\n    self.name = name",
        "The <extra_id_0> walks in <extra_id_1> park</s>",
        "<extra_id_0>",
        "  <extra_id_0>  x",
        "a<extra_id_1>b<extra_id_10>c<extra_id_99><extra_id_100>",
        "<pad><unk></s><s>",
        "ﬁne ＡＢＣ ① ½ ㍿ Å e\u{301} ñ n\u{303}",
        "日本語のテキスト 中文 한국어",
        "emoji 👩‍👩‍👧 🇫🇷 ❤️",
        "tabs\tand\nnewlines\r\nhere",
        "\u{0} \u{1} \u{7f} \u{200b}zero\u{feff}width",
        "مرحبا بالعالم",
        "Ω≈ç√∫˜µ≤≥÷ ¡™£¢∞§¶•ªº–≠",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let seeds = root().join("fuzz/seeds/tokenizer");
    for entry in std::fs::read_dir(seeds).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    let pool: Vec<&str> = vec![
        "a",
        "e",
        "the",
        "The",
        " ",
        " ",
        "  ",
        "\t",
        "\n",
        ".",
        ",",
        "'",
        "\"",
        "-",
        "é",
        "á",
        "ñ",
        "ü",
        "ß",
        "ﬁ",
        "Ａ",
        "①",
        "ｶ",
        "e\u{301}",
        "\u{301}",
        "中",
        "語",
        "😀",
        "👍🏽",
        "‍",
        "<extra_id_0>",
        "<extra_id_5>",
        "</s>",
        "<unk>",
        "<pad>",
        "<extra_id_",
        ">",
        "<",
        "▁",
        "Abraham",
        "answered",
        "hijos",
        "unto",
        "saying",
        "0",
        "42",
        "_",
        "\u{0}",
        "ǅ",
        "Å",
    ];
    let mut rng = Rng(0x5eed_1234_abcd);
    for _ in 0..600 {
        let n = 1 + rng.below(24);
        texts.push((0..n).map(|_| pool[rng.below(pool.len())]).collect());
    }
    texts
}

#[test]
fn encodes_and_decodes_as_tokenizers_does() {
    let texts = texts();
    for path in files() {
        let json = std::fs::read_to_string(&path).unwrap();
        let ours = Tokenizer::from_json(&json, &Native).unwrap();
        let theirs = json.parse::<tokenizers::Tokenizer>().unwrap();
        let mut checked = 0;
        for text in &texts {
            for special in [true, false] {
                let expected = theirs.encode(text.as_str(), special).unwrap();
                let got = ours.encode(text, special, &Native).unwrap();
                assert_eq!(
                    got,
                    expected.get_ids(),
                    "{} encoding {text:?}",
                    path.display()
                );
            }
            let ids = theirs
                .encode(text.as_str(), true)
                .unwrap()
                .get_ids()
                .to_vec();
            assert_eq!(
                ours.decode(&ids),
                theirs.decode(&ids, false).unwrap(),
                "{} decoding the ids of {text:?}",
                path.display()
            );
            checked += 1;
        }
        let size = theirs.get_vocab_size(true) as u32;
        let mut rng = Rng(0xdec0de);
        for _ in 0..300 {
            let ids: Vec<u32> = (0..1 + rng.below(12))
                .map(|_| rng.below(size as usize + 3) as u32)
                .collect();
            assert_eq!(
                ours.decode(&ids),
                theirs.decode(&ids, false).unwrap(),
                "{ids:?}"
            );
        }
        for id in 0..size + 2 {
            let token = theirs.id_to_token(id);
            assert_eq!(ours.id_to_token(id), token.as_deref(), "id {id}");
            if let Some(token) = token.as_deref() {
                assert_eq!(
                    ours.token_to_id(token),
                    theirs.token_to_id(token),
                    "{token}"
                );
            }
        }
        assert!(checked > 600);
    }
}

#[test]
fn refuses_what_it_does_not_read_by_name() {
    let json = std::fs::read_to_string(root().join("tests/fixtures/tiny/tokenizer.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["pre_tokenizer"] = serde_json::json!({"type": "ByteLevel"});
    let err = Tokenizer::from_json(&value.to_string(), &Native).unwrap_err();
    assert!(
        err.to_string().contains("a ByteLevel pre-tokenizer"),
        "{err}"
    );
    value["pre_tokenizer"] = serde_json::Value::Null;
    value["model"]["type"] = "BPE".into();
    let err = Tokenizer::from_json(&value.to_string(), &Native).unwrap_err();
    assert!(err.to_string().contains("a BPE model"), "{err}");
    let err = Tokenizer::from_json("{\"model\": 1", &Native).unwrap_err();
    assert!(
        err.to_string().starts_with("tokenizer.json is not JSON"),
        "{err}"
    );
}

/// Texts whose normalization matters (compatibility forms, combining marks, ligatures, scripts
/// without spaces), with the default model's ids from `tokenizers`: the page is checked against
/// the same file in the browser (`tests/e2e/tokenize.test.mjs`), where normalization is the
/// browser's. `SWITCHSCOPE_WRITE_FIXTURE=1` rewrites the file from `tokenizers`.
#[test]
fn the_pages_tokenization_fixture_is_what_tokenizers_gives() {
    let texts = [
        "ﬁne ＡＢＣ ① ½ ㍿",
        "Å e\u{301} n\u{303} café naïve",
        "Y respondieron los hijos de Heth á Abraham, y dijéronle:",
        "日本語 中文 한국어 ｶﾀｶﾅ",
        "emoji 👩‍👩‍👧 ❤️ and ™ ℃ ㎏",
        "  spaces   between\twords\n<extra_id_0> and </s> inside",
    ];
    let root = root();
    let json = std::fs::read_to_string(root.join("public/models/switchscope-mini/tokenizer.json"))
        .unwrap();
    let theirs = json.parse::<tokenizers::Tokenizer>().unwrap();
    let cases: Vec<serde_json::Value> = texts
        .iter()
        .map(|text| {
            let ids = theirs.encode(*text, true).unwrap().get_ids().to_vec();
            serde_json::json!({ "text": text, "ids": ids })
        })
        .collect();
    let expected =
        serde_json::to_string_pretty(&serde_json::json!({ "cases": cases })).unwrap() + "\n";
    let path = root.join("tests/fixtures/switchscope-mini/tokenize.json");
    if std::env::var_os("SWITCHSCOPE_WRITE_FIXTURE").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        expected,
        "{}",
        path.display()
    );
    let ours = Tokenizer::from_json(&json, &Native).unwrap();
    for text in texts {
        let ids = ours.encode(text, true, &Native).unwrap();
        assert_eq!(
            ids,
            theirs.encode(text, true).unwrap().get_ids(),
            "{text:?}"
        );
    }
}
