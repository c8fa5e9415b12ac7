//! Pre-tokenizers (text into words before the model) and the `Metaspace` decoder.

use serde_json::Value;

use crate::{TextError, kind};

/// A piece of normalized text on its way to the model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Piece {
    pub text: String,
    /// Whether the piece starts the whole input (its original offset is 0): `Metaspace` with
    /// `prepend_scheme: "first"` prefixes only that one.
    pub first: bool,
}

/// When `Metaspace` puts its replacement in front of a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prepend {
    Always,
    First,
    Never,
}

/// SentencePiece's word boundary: spaces become `▁` (the replacement), a piece may get one in
/// front, and pieces split before each `▁`.
#[derive(Debug, Clone)]
pub(crate) struct Metaspace {
    replacement: char,
    prepend: Prepend,
    split: bool,
}

impl Metaspace {
    pub(crate) fn from_json(value: &Value) -> Result<Self, TextError> {
        let invalid = |what: &str| TextError::Invalid(format!("Metaspace: {what}"));
        let replacement = value
            .get("replacement")
            .and_then(Value::as_str)
            .and_then(|s| {
                let mut chars = s.chars();
                chars.next().filter(|_| chars.next().is_none())
            })
            .ok_or_else(|| invalid("\"replacement\" is not one character"))?;
        let mut prepend = match value.get("prepend_scheme").and_then(Value::as_str) {
            None | Some("always") => Prepend::Always,
            Some("first") => Prepend::First,
            Some("never") => Prepend::Never,
            Some(other) => return Err(invalid(&format!("unknown prepend_scheme {other:?}"))),
        };
        if value.get("add_prefix_space").and_then(Value::as_bool) == Some(false) {
            if prepend != Prepend::Never && value.get("prepend_scheme").is_some() {
                return Err(invalid("add_prefix_space does not match prepend_scheme"));
            }
            prepend = Prepend::Never;
        }
        Ok(Self {
            replacement,
            prepend,
            split: value.get("split").and_then(Value::as_bool).unwrap_or(true),
        })
    }

    fn split(&self, piece: Piece) -> Vec<Piece> {
        if piece.text.is_empty() {
            return Vec::new();
        }
        let mut text = piece
            .text
            .replace(' ', self.replacement.encode_utf8(&mut [0; 4]));
        let prepend = match self.prepend {
            Prepend::Always => true,
            Prepend::First => piece.first,
            Prepend::Never => false,
        };
        if prepend && !text.starts_with(self.replacement) {
            text.insert(0, self.replacement);
        }
        if !self.split {
            return vec![Piece {
                text,
                first: piece.first,
            }];
        }
        let mut out = Vec::new();
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if c == self.replacement && i > start {
                out.push(Piece {
                    text: text[start..i].to_owned(),
                    first: piece.first && start == 0,
                });
                start = i;
            }
        }
        if start < text.len() {
            out.push(Piece {
                text: text[start..].to_owned(),
                first: piece.first && start == 0,
            });
        }
        out
    }

    /// The text of `tokens`: each replacement becomes a space, except in the first token
    /// (where the pre-tokenizer may have put it), unless nothing was ever prepended.
    pub(crate) fn decode(&self, tokens: &[&str]) -> String {
        let mut out = String::new();
        for (i, token) in tokens.iter().enumerate() {
            for c in token.chars() {
                if c != self.replacement {
                    out.push(c);
                } else if i != 0 || self.prepend == Prepend::Never {
                    out.push(' ');
                }
            }
        }
        out
    }
}

/// A pre-tokenizer of `tokenizer.json` (a `Sequence` is read as the list of its members).
#[derive(Debug, Clone)]
pub(crate) enum PreTokenizer {
    Metaspace(Metaspace),
    /// Splits on whitespace, dropping it.
    WhitespaceSplit,
}

impl PreTokenizer {
    pub(crate) fn from_json(value: &Value) -> Result<Vec<Self>, TextError> {
        Ok(match kind(value)? {
            "Metaspace" => vec![Self::Metaspace(Metaspace::from_json(value)?)],
            "WhitespaceSplit" => vec![Self::WhitespaceSplit],
            "Sequence" => {
                let mut all = Vec::new();
                for member in value
                    .get("pretokenizers")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        TextError::Invalid("a Sequence pre-tokenizer without members".into())
                    })?
                {
                    all.extend(Self::from_json(member)?);
                }
                all
            }
            other => {
                return Err(TextError::Unsupported {
                    what: format!("a {other} pre-tokenizer"),
                    reads: "Metaspace, WhitespaceSplit and Sequence",
                });
            }
        })
    }

    pub(crate) fn split(&self, piece: Piece) -> Vec<Piece> {
        match self {
            Self::Metaspace(m) => m.split(piece),
            Self::WhitespaceSplit => {
                let mut out = Vec::new();
                let mut start = None;
                for (i, c) in piece.text.char_indices().chain([(piece.text.len(), ' ')]) {
                    match (c.is_whitespace(), start) {
                        (true, Some(s)) => {
                            out.push(Piece {
                                text: piece.text[s..i].to_owned(),
                                first: piece.first && s == 0,
                            });
                            start = None;
                        }
                        (false, None) => start = Some(i),
                        _ => {}
                    }
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(pieces: &[Piece]) -> Vec<&str> {
        pieces.iter().map(|p| p.text.as_str()).collect()
    }

    #[test]
    fn metaspace_splits_before_each_replacement() {
        let m = Metaspace {
            replacement: '▁',
            prepend: Prepend::First,
            split: true,
        };
        let first = |text: &str, first| {
            m.split(Piece {
                text: text.into(),
                first,
            })
        };
        assert_eq!(
            texts(&first("Hello  world ", true)),
            ["▁Hello", "▁", "▁world", "▁"]
        );
        assert_eq!(texts(&first(" x", false)), ["▁x"]);
        assert_eq!(texts(&first("x y", false)), ["x", "▁y"]);
        assert_eq!(m.decode(&["▁Hello", "▁world"]), "Hello world");
        assert_eq!(m.decode(&["▁a▁b", "c"]), "abc");
    }

    #[test]
    fn whitespace_split_drops_whitespace() {
        let pieces = PreTokenizer::WhitespaceSplit.split(Piece {
            text: " a\tbc  d ".into(),
            first: true,
        });
        assert_eq!(texts(&pieces), ["a", "bc", "d"]);
        assert!(pieces.iter().all(|p| !p.first));
    }
}
