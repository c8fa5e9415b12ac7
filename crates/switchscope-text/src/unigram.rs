//! SentencePiece's Unigram model: a word becomes the pieces whose scores sum highest (Viterbi
//! over every way the vocabulary covers it); characters no piece covers become `<unk>`, a run of
//! them one `<unk>`.

use std::collections::HashMap;

use serde_json::Value;

use crate::{TextError, kind};

/// What a character no piece covers scores, below the vocabulary's lowest score.
const UNKNOWN_PENALTY: f64 = 10.0;

#[derive(Debug, Clone)]
pub(crate) struct Unigram {
    vocab: Vec<(String, f64)>,
    ids: HashMap<String, u32>,
    /// The longest piece, in bytes.
    longest: usize,
    unk: Option<u32>,
    min_score: f64,
    byte_fallback: bool,
}

/// The best way found so far to cover the word up to a byte offset.
#[derive(Debug, Clone, Copy)]
struct Best {
    score: f64,
    /// Where its last piece starts (`None`: not reached yet).
    from: Option<usize>,
    id: u32,
}

impl Unigram {
    pub(crate) fn from_json(value: &Value) -> Result<Self, TextError> {
        if kind(value)? != "Unigram" {
            return Err(TextError::Unsupported {
                what: format!("a {} model", kind(value)?),
                reads: "Unigram (SentencePiece) models",
            });
        }
        let invalid = |what: String| TextError::Invalid(format!("Unigram: {what}"));
        let vocab: Vec<(String, f64)> = value
            .get("vocab")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("no vocab".into()))?
            .iter()
            .map(|entry| match entry.as_array().map(Vec::as_slice) {
                Some([Value::String(piece), score]) => score
                    .as_f64()
                    .map(|score| (piece.clone(), score))
                    .ok_or_else(|| invalid(format!("a score that is not a number: {entry}"))),
                _ => Err(invalid(format!(
                    "a vocab entry that is not [piece, score]: {entry}"
                ))),
            })
            .collect::<Result<_, _>>()?;
        if vocab.is_empty() {
            return Err(invalid("the vocab is empty".into()));
        }
        let unk = match value.get("unk_id") {
            None | Some(Value::Null) => None,
            Some(id) => Some(
                id.as_u64()
                    .filter(|&id| id < vocab.len() as u64)
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| invalid(format!("unk_id {id} is not in the vocab")))?,
            ),
        };
        let mut ids = HashMap::with_capacity(vocab.len());
        let mut min_score = f64::INFINITY;
        let mut longest = 0;
        for (id, (piece, score)) in vocab.iter().enumerate() {
            // A piece listed twice keeps its last id, as in `tokenizers`.
            ids.insert(piece.clone(), id as u32);
            min_score = min_score.min(*score);
            longest = longest.max(piece.len());
        }
        Ok(Self {
            vocab,
            ids,
            longest,
            unk,
            min_score,
            byte_fallback: value
                .get("byte_fallback")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    pub(crate) fn piece(&self, id: u32) -> Option<&str> {
        self.vocab.get(id as usize).map(|(piece, _)| piece.as_str())
    }

    pub(crate) fn id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }

    /// The pieces of `word`, best path first to last; runs of unknown characters fused.
    fn pieces<'a>(&self, word: &'a str) -> Result<Vec<&'a str>, TextError> {
        let unknown = self.min_score - UNKNOWN_PENALTY;
        let mut best = vec![
            Best {
                score: 0.0,
                from: None,
                id: 0,
            };
            word.len() + 1
        ];
        let offer = |best: &mut [Best], at: usize, end: usize, score: f64, id: u32| {
            let candidate = best[at].score + score;
            let target = &mut best[end];
            if target.from.is_none() || candidate > target.score {
                *target = Best {
                    score: candidate,
                    from: Some(at),
                    id,
                };
            }
        };
        for (at, c) in word.char_indices() {
            let char_end = at + c.len_utf8();
            let mut covers_char = false;
            let ends = word[at..]
                .char_indices()
                .map(|(i, c)| at + i + c.len_utf8())
                .take_while(|&end| end - at <= self.longest);
            for end in ends {
                if let Some(&id) = self.ids.get(&word[at..end]) {
                    offer(&mut best, at, end, self.vocab[id as usize].1, id);
                    covers_char |= end == char_end;
                }
            }
            if !covers_char {
                offer(
                    &mut best,
                    at,
                    char_end,
                    unknown,
                    self.unk.ok_or(TextError::MissingUnk)?,
                );
            }
        }
        let mut pieces = Vec::new();
        let mut end = word.len();
        let mut unknown_run: Option<usize> = None;
        while end > 0 {
            let node = best[end];
            let from = node.from.unwrap_or(0);
            if Some(node.id) == self.unk {
                // Extends the run of unknown pieces that ends at `unknown_run`.
                unknown_run.get_or_insert(end);
            } else {
                if let Some(run_end) = unknown_run.take() {
                    pieces.push(&word[end..run_end]);
                }
                pieces.push(&word[from..end]);
            }
            end = from;
        }
        if let Some(run_end) = unknown_run {
            pieces.push(&word[..run_end]);
        }
        pieces.reverse();
        Ok(pieces)
    }

    /// Appends the ids of `word` to `ids`.
    pub(crate) fn encode(&self, word: &str, ids: &mut Vec<u32>) -> Result<(), TextError> {
        for piece in self.pieces(word)? {
            if let Some(id) = self.id(piece) {
                ids.push(id);
                continue;
            }
            if self.byte_fallback {
                let bytes: Option<Vec<u32>> = piece
                    .bytes()
                    .map(|b| self.id(&format!("<0x{b:02X}>")))
                    .collect();
                if let Some(bytes) = bytes {
                    ids.extend(bytes);
                    continue;
                }
            }
            ids.push(self.unk.ok_or(TextError::MissingUnk)?);
        }
        Ok(())
    }
}
