//! Text ↔ token ids with a model's `tokenizer.json`, giving the ids Hugging Face `tokenizers`
//! gives, for the tokenizers Switch Transformers ship: a SentencePiece Unigram model behind
//! Unicode or SentencePiece (`Precompiled`) normalization, the `Metaspace` and `WhitespaceSplit`
//! pre-tokenizers, the `Metaspace` decoder, added and special tokens (`<extra_id_0>`, `</s>`),
//! and a `TemplateProcessing` post-processor. Anything else in a `tokenizer.json` is refused by
//! name ([`TextError::Unsupported`]).
//!
//! It exists so that the page's wasm does not carry `tokenizers` (regular-expression engines,
//! Unicode tables, every model type): Unicode normalization and grapheme clusters come from the
//! host through [`Unicode`] (in the browser, `String.prototype.normalize` and `Intl.Segmenter`).
//!
//! The pipeline, as `tokenizers` runs it for one sequence:
//! 1. added tokens that are matched before normalization split the text ([`added`]);
//! 2. each remaining section is normalized ([`normalizer`]), then split by the added tokens
//!    matched after normalization;
//! 3. each remaining piece is pre-tokenized ([`pretokenizer`]) into words, each word encoded by
//!    the Unigram model ([`unigram`]);
//! 4. the post-processor's template adds `</s>` (or whatever it names).

mod added;
mod base64;
mod normalizer;
mod pretokenizer;
mod unigram;

use std::collections::HashMap;

use serde_json::Value;

pub use normalizer::Form;

use added::{Added, Section};
use normalizer::Normalizer;
use pretokenizer::{Metaspace, Piece, PreTokenizer};
use unigram::Unigram;

/// Why a `tokenizer.json` cannot be read, or a text cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// Not JSON.
    #[error("tokenizer.json is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A part this reader does not implement.
    #[error("tokenizer.json uses {what}, which this reader does not support (it reads {reads})")]
    Unsupported {
        /// What the file asks for.
        what: String,
        /// What this reader reads in its place.
        reads: &'static str,
    },
    /// A field missing or of the wrong kind.
    #[error("tokenizer.json is invalid: {0}")]
    Invalid(String),
    /// The text has a character no token covers, and the model names no unknown token.
    #[error(
        "the text has a character that no token of the vocabulary covers, and the model names \
         no unknown token"
    )]
    MissingUnk,
}

/// Unicode services the host provides.
pub trait Unicode {
    /// `text` in normalization form `form`.
    fn normalize(&self, form: Form, text: &str) -> String;
    /// The extended grapheme clusters of `text`, in order (they concatenate to `text`).
    fn graphemes<'a>(&self, text: &'a str) -> Vec<&'a str>;
}

/// One item of the post-processor's template for a single sequence.
#[derive(Debug, Clone)]
enum Template {
    /// The sequence's own ids.
    Sequence,
    /// A special token's ids.
    Special(Vec<u32>),
}

/// A tokenizer read from `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    added: Added,
    normalizer: Option<Normalizer>,
    pre_tokenizers: Vec<PreTokenizer>,
    model: Unigram,
    decoder: Option<Metaspace>,
    template: Option<Vec<Template>>,
}

/// The `"type"` of a JSON object.
fn kind(value: &Value) -> Result<&str, TextError> {
    value
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| TextError::Invalid(format!("an object without a \"type\": {value}")))
}

impl Tokenizer {
    /// Reads the text of a `tokenizer.json` (`unicode` normalizes the added tokens that are
    /// matched after normalization).
    ///
    /// # Errors
    /// [`TextError`] naming what is invalid or unsupported.
    pub fn from_json(json: &str, unicode: &dyn Unicode) -> Result<Self, TextError> {
        let root: Value = serde_json::from_str(json)?;
        for field in ["truncation", "padding"] {
            if root.get(field).is_some_and(|v| !v.is_null()) {
                return Err(TextError::Unsupported {
                    what: format!("\"{field}\""),
                    reads: "a file whose truncation and padding are null",
                });
            }
        }
        let model = Unigram::from_json(
            root.get("model")
                .ok_or_else(|| TextError::Invalid("no \"model\"".into()))?,
        )?;
        let normalizer = match root.get("normalizer") {
            None | Some(Value::Null) => None,
            Some(n) => Some(Normalizer::from_json(n)?),
        };
        let pre_tokenizers = match root.get("pre_tokenizer") {
            None | Some(Value::Null) => Vec::new(),
            Some(p) => PreTokenizer::from_json(p)?,
        };
        let decoder = match root.get("decoder") {
            None | Some(Value::Null) => None,
            Some(d) if kind(d)? == "Metaspace" => Some(Metaspace::from_json(d)?),
            Some(d) => {
                return Err(TextError::Unsupported {
                    what: format!("a {} decoder", kind(d)?),
                    reads: "the Metaspace decoder",
                });
            }
        };
        let added = Added::from_json(
            root.get("added_tokens").unwrap_or(&Value::Null),
            &model,
            normalizer.as_ref(),
            unicode,
        )?;
        let template = match root.get("post_processor") {
            None | Some(Value::Null) => None,
            Some(p) => Some(template_from_json(p)?),
        };
        Ok(Self {
            added,
            normalizer,
            pre_tokenizers,
            model,
            decoder,
            template,
        })
    }

    /// The ids of `text`, with the post-processor's special tokens when `add_special_tokens`.
    ///
    /// # Errors
    /// [`TextError::MissingUnk`] for a character no token covers in a model without `<unk>`.
    pub fn encode(
        &self,
        text: &str,
        add_special_tokens: bool,
        unicode: &dyn Unicode,
    ) -> Result<Vec<u32>, TextError> {
        let mut ids = Vec::new();
        for section in self.added.split_raw(text) {
            let (part, original_start) = match section {
                Section::Token(id) => {
                    ids.push(id);
                    continue;
                }
                Section::Text(part, start) => (part, start),
            };
            let normalized = match &self.normalizer {
                Some(n) => n.apply(part, unicode),
                None => part.to_owned(),
            };
            for sub in self.added.split_normalized(&normalized) {
                match sub {
                    Section::Token(id) => ids.push(id),
                    Section::Text(piece, start) => {
                        let mut pieces = vec![Piece {
                            text: piece.to_owned(),
                            first: original_start == 0 && start == 0,
                        }];
                        for pre in &self.pre_tokenizers {
                            pieces = pieces.into_iter().flat_map(|p| pre.split(p)).collect();
                        }
                        for piece in pieces {
                            self.model.encode(&piece.text, &mut ids)?;
                        }
                    }
                }
            }
        }
        if add_special_tokens && let Some(template) = &self.template {
            let mut with = Vec::with_capacity(ids.len() + 2);
            for item in template {
                match item {
                    Template::Sequence => with.extend_from_slice(&ids),
                    Template::Special(special) => with.extend_from_slice(special),
                }
            }
            ids = with;
        }
        Ok(ids)
    }

    /// The text of `ids` (ids the vocabulary lacks are left out; special tokens are kept).
    pub fn decode(&self, ids: &[u32]) -> String {
        let tokens: Vec<&str> = ids.iter().filter_map(|&id| self.id_to_token(id)).collect();
        match &self.decoder {
            Some(decoder) => decoder.decode(&tokens),
            None => tokens.join(" "),
        }
    }

    /// The token of `id`: an added token's content, or the vocabulary's piece.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.added.content(id).or_else(|| self.model.piece(id))
    }

    /// The id of `token`, added tokens first.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added.id(token).or_else(|| self.model.id(token))
    }
}

/// The single-sequence template of a `TemplateProcessing` post-processor.
fn template_from_json(value: &Value) -> Result<Vec<Template>, TextError> {
    if kind(value)? != "TemplateProcessing" {
        return Err(TextError::Unsupported {
            what: format!("a {} post-processor", kind(value)?),
            reads: "TemplateProcessing",
        });
    }
    let invalid = |what: &str| TextError::Invalid(format!("TemplateProcessing: {what}"));
    let mut specials: HashMap<&str, Vec<u32>> = HashMap::new();
    if let Some(map) = value.get("special_tokens").and_then(Value::as_object) {
        for (name, token) in map {
            let ids = token
                .get("ids")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("a special token without \"ids\""))?
                .iter()
                .map(|id| {
                    id.as_u64()
                        .and_then(|id| u32::try_from(id).ok())
                        .ok_or_else(|| invalid("an id that is not a number"))
                })
                .collect::<Result<Vec<u32>, _>>()?;
            specials.insert(name, ids);
        }
    }
    value
        .get("single")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no \"single\" template"))?
        .iter()
        .map(|item| {
            if let Some(sequence) = item.get("Sequence") {
                match sequence.get("id").and_then(Value::as_str) {
                    Some("A") => Ok(Template::Sequence),
                    _ => Err(invalid("a single template may only name sequence A")),
                }
            } else if let Some(special) = item.get("SpecialToken") {
                let name = special
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("a special token without \"id\""))?;
                specials
                    .get(name)
                    .map(|ids| Template::Special(ids.clone()))
                    .ok_or_else(|| invalid(&format!("{name} is not among its special tokens")))
            } else {
                Err(invalid(&format!(
                    "an item that is neither a sequence nor a special token: {item}"
                )))
            }
        })
        .collect()
}
