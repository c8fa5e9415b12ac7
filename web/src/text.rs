//! Text ↔ token ids on the page, with the model's `tokenizer.json` (`switchscope-text`, which
//! gives the ids Hugging Face `tokenizers` gives), normalizing with the browser's Unicode.

use switchscope_text::{Form, Tokenizer, Unicode};
use wasm_bindgen::{JsCast, JsValue};

use crate::js::{call, get};

use crate::spans::{self, Filled};

/// The browser's Unicode: `String.prototype.normalize` and `Intl.Segmenter` (where it is
/// missing, each character is its own grapheme; only SentencePiece's precompiled normalizer
/// asks for graphemes).
struct Browser;

impl Unicode for Browser {
    fn normalize(&self, form: Form, text: &str) -> String {
        js_sys::JsString::from(text).normalize(form.as_str()).into()
    }

    fn graphemes<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let segments = (|| {
            let constructor: js_sys::Function = get(&get(&js_sys::global(), "Intl"), "Segmenter")
                .dyn_into()
                .ok()?;
            let options = js_sys::Object::new();
            js_sys::Reflect::set(&options, &"granularity".into(), &"grapheme".into()).ok()?;
            let args: js_sys::Array = [JsValue::UNDEFINED, options.into()].into_iter().collect();
            let segmenter = js_sys::Reflect::construct(&constructor, &args).ok()?;
            let iterable = call(&segmenter, "segment", &[JsValue::from_str(text)]).ok()?;
            let mut out = Vec::new();
            let mut at = 0;
            for segment in js_sys::Array::from(&iterable).iter() {
                let len = get(&segment, "segment").as_string()?.len();
                out.push(text.get(at..at + len)?);
                at += len;
            }
            (at == text.len()).then_some(out)
        })();
        segments.unwrap_or_else(|| {
            text.char_indices()
                .map(|(i, c)| &text[i..i + c.len_utf8()])
                .collect()
        })
    }
}

/// The model's tokenizer.
#[derive(Clone)]
pub struct Text {
    tokenizer: std::sync::Arc<Tokenizer>,
    eos: u32,
    pad: u32,
    /// `<extra_id_0>`, `<extra_id_1>`, …
    sentinels: Vec<u32>,
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Text").field("eos", &self.eos).finish()
    }
}

/// A prompt turned into ids, possibly shortened.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// The ids, ending with `</s>`.
    pub ids: Vec<u32>,
    /// How many tokens the prompt had before it was shortened to fit, when it was.
    pub truncated_from: Option<usize>,
}

impl Text {
    /// Reads `tokenizer.json` text.
    ///
    /// # Errors
    /// A sentence saying why the file is not a usable tokenizer.
    pub fn new(json: &str, eos: u32, pad: u32) -> Result<Self, String> {
        let tokenizer = Tokenizer::from_json(json, &Browser)
            .map_err(|e| format!("the model's tokenizer cannot be read: {e}"))?;
        let sentinels = spans::sentinel_ids(|token| tokenizer.token_to_id(token));
        Ok(Self {
            tokenizer: std::sync::Arc::new(tokenizer),
            eos,
            pad,
            sentinels,
        })
    }

    /// The ids of `prompt` (with the final `</s>`), at most `max` of them: a longer prompt
    /// keeps its first `max - 1` tokens and `</s>`.
    ///
    /// # Errors
    /// For an empty prompt, or one the tokenizer cannot encode.
    pub fn encode(&self, prompt: &str, max: usize) -> Result<Encoded, String> {
        if prompt.trim().is_empty() {
            return Err("the prompt is empty: type some text first".into());
        }
        let mut ids = self
            .tokenizer
            .encode(prompt, true, &Browser)
            .map_err(|e| format!("the prompt cannot be tokenized: {e}"))?;
        if ids.last() != Some(&self.eos) {
            ids.push(self.eos);
        }
        let before = ids.len();
        if before > max {
            ids.truncate(max - 1);
            ids.push(self.eos);
            return Ok(Encoded {
                ids,
                truncated_from: Some(before),
            });
        }
        Ok(Encoded {
            ids,
            truncated_from: None,
        })
    }

    /// The piece of one id as the grid shows it (`▁` marks a word start).
    pub fn piece(&self, id: u32) -> String {
        self.tokenizer
            .id_to_token(id)
            .map_or_else(|| format!("#{id}"), str::to_owned)
    }

    /// The sentinel after the last one `input_ids` has: generating it ends the answer.
    pub fn end_of_answer(&self, input_ids: &[u32]) -> Option<u32> {
        spans::end_of_answer(input_ids, &self.sentinels)
    }

    /// `prompt` with each masked span replaced by its answer in `output_ids`; `None` when the
    /// prompt has no masked span.
    pub fn fill_in(
        &self,
        prompt: &str,
        input_ids: &[u32],
        output_ids: &[u32],
    ) -> Option<Vec<Filled>> {
        spans::has_spans(input_ids, &self.sentinels).then(|| {
            spans::fill_in_answer(
                prompt,
                output_ids,
                &self.sentinels,
                (self.pad, self.eos),
                |ids| self.decode(ids),
            )
        })
    }

    /// Readable text of generated ids (special tokens such as `<extra_id_0>` kept, padding and
    /// `</s>` left out).
    pub fn decode(&self, ids: &[u32]) -> String {
        let kept: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| id != self.eos && id != self.pad)
            .collect();
        self.tokenizer.decode(&kept)
    }
}
