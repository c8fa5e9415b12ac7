//! Text ↔ token ids on the page, with the model's `tokenizer.json` (Hugging Face `tokenizers`).

use tokenizers::Tokenizer;

use crate::spans::{self, Filled};

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
        let tokenizer = Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| format!("the model's tokenizer.json cannot be read: {e}"))?;
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
        let encoding = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| format!("the prompt cannot be tokenized: {e}"))?;
        let mut ids = encoding.get_ids().to_vec();
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
            .unwrap_or_else(|| format!("#{id}"))
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
        self.tokenizer
            .decode(&kept, false)
            .unwrap_or_else(|_| kept.iter().map(|&id| self.piece(id)).collect())
    }
}
