//! Text ↔ token ids with a Hugging Face `tokenizer.json` (the `tokenizers` crate).

use crate::CoreError;

/// A loaded tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Parses `tokenizer.json` bytes.
    ///
    /// # Errors
    /// [`CoreError::Tokenizer`] when the JSON is not a tokenizer.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CoreError> {
        tokenizers::Tokenizer::from_bytes(bytes)
            .map(|inner| Self { inner })
            .map_err(|e| CoreError::Tokenizer(format!("tokenizer.json: {e}")))
    }

    /// Encodes `text` with the special tokens the tokenizer's post-processor adds (T5 appends
    /// `</s>`).
    ///
    /// # Errors
    /// [`CoreError::Input`] for an empty prompt; [`CoreError::Tokenizer`] otherwise.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, CoreError> {
        if text.trim().is_empty() {
            return Err(CoreError::Input("the prompt is empty".into()));
        }
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| CoreError::Tokenizer(e.to_string()))
    }

    /// The ids of the sentinels `<extra_id_0>`, `<extra_id_1>`, … ([`switchscope_wire::spans`]).
    pub fn sentinel_ids(&self) -> Vec<u32> {
        switchscope_wire::spans::sentinel_ids(|token| self.inner.token_to_id(token))
    }

    /// Decodes ids to text, leaving out special tokens.
    ///
    /// # Errors
    /// [`CoreError::Tokenizer`].
    pub fn decode(&self, ids: &[u32]) -> Result<String, CoreError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| CoreError::Tokenizer(e.to_string()))
    }
}
