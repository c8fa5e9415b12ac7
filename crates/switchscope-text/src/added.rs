//! Added tokens (`</s>`, `<extra_id_0>`, …): found in the text before the model sees it, each
//! becoming its own id. Those marked `normalized: false` are matched in the raw text, the others
//! in the normalized text (against their own normalized content), leftmost first and longest
//! among those that start at the same place.

use std::collections::HashMap;

use serde_json::Value;

use crate::normalizer::Normalizer;
use crate::unigram::Unigram;
use crate::{TextError, Unicode};

/// A part of the text: an added token's id, or text the model encodes (with its byte offset in
/// the text it was cut from).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Section<'a> {
    Token(u32),
    Text(&'a str, usize),
}

#[derive(Debug, Clone)]
struct Token {
    id: u32,
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Added {
    /// Matched in the raw text.
    raw: Vec<Token>,
    /// Matched in the normalized text (`content` normalized).
    normalized: Vec<Token>,
    by_id: HashMap<u32, String>,
    by_content: HashMap<String, u32>,
}

impl Added {
    pub(crate) fn from_json(
        value: &Value,
        model: &Unigram,
        normalizer: Option<&Normalizer>,
        unicode: &dyn Unicode,
    ) -> Result<Self, TextError> {
        let mut added = Self::default();
        let Some(list) = value.as_array() else {
            return Ok(added);
        };
        let invalid = |what: String| TextError::Invalid(format!("added_tokens: {what}"));
        for item in list {
            let flag = |name: &str| item.get(name).and_then(Value::as_bool).unwrap_or(false);
            let content = item
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("a token without content: {item}")))?;
            if content.is_empty() || added.by_content.contains_key(content) {
                continue;
            }
            let listed = item
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| invalid(format!("{content} has no id")))?;
            // As `tokenizers`: a token the vocabulary has keeps the vocabulary's id.
            let id = model.id(content).unwrap_or(listed);
            let normalized = item
                .get("normalized")
                .and_then(Value::as_bool)
                .unwrap_or(!flag("special"));
            let mut token = Token {
                id,
                content: content.to_owned(),
                single_word: flag("single_word"),
                lstrip: flag("lstrip"),
                rstrip: flag("rstrip"),
            };
            added.by_id.insert(id, content.to_owned());
            added.by_content.insert(content.to_owned(), id);
            if normalized {
                if let Some(n) = normalizer {
                    token.content = n.apply(content, unicode);
                }
                added.normalized.push(token);
            } else {
                added.raw.push(token);
            }
        }
        Ok(added)
    }

    pub(crate) fn content(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    pub(crate) fn id(&self, content: &str) -> Option<u32> {
        self.by_content.get(content).copied()
    }

    pub(crate) fn split_raw<'a>(&self, text: &'a str) -> Vec<Section<'a>> {
        split(text, &self.raw)
    }

    pub(crate) fn split_normalized<'a>(&self, text: &'a str) -> Vec<Section<'a>> {
        split(text, &self.normalized)
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The longest of `tokens` that starts at byte `at` of `text`.
fn longest_at<'t>(text: &str, at: usize, tokens: &'t [Token]) -> Option<&'t Token> {
    tokens
        .iter()
        .filter(|t| text[at..].starts_with(t.content.as_str()))
        .max_by_key(|t| t.content.len())
}

fn split<'a>(text: &'a str, tokens: &[Token]) -> Vec<Section<'a>> {
    if tokens.is_empty() || text.is_empty() {
        return vec![Section::Text(text, 0)];
    }
    let mut sections = Vec::new();
    let mut done = 0;
    let mut at = 0;
    while at < text.len() {
        let Some(token) = longest_at(text, at, tokens) else {
            at += text[at..].chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let (mut start, mut stop) = (at, at + token.content.len());
        at = stop;
        if token.single_word {
            let before = text[..start].chars().next_back().is_some_and(is_word);
            let after = text[stop..].chars().next().is_some_and(is_word);
            if before || after {
                continue;
            }
        }
        if token.lstrip {
            let trimmed = text[..start].trim_end_matches(char::is_whitespace).len();
            start = trimmed.max(done);
        }
        if token.rstrip {
            stop = text.len() - text[stop..].trim_start_matches(char::is_whitespace).len();
            at = stop;
        }
        if done < start {
            sections.push(Section::Text(&text[done..start], done));
        }
        sections.push(Section::Token(token.id));
        done = stop;
    }
    if done < text.len() {
        sections.push(Section::Text(&text[done..], done));
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(content: &str, id: u32, lstrip: bool) -> Token {
        Token {
            id,
            content: content.into(),
            single_word: false,
            lstrip,
            rstrip: false,
        }
    }

    #[test]
    fn splits_leftmost_longest_with_lstrip() {
        let tokens = [
            token("<x>", 7, true),
            token("<x><y>", 8, false),
            token("</s>", 1, false),
        ];
        assert_eq!(
            split("a  <x> b <x><y></s>", &tokens),
            [
                Section::Text("a", 0),
                Section::Token(7),
                Section::Text(" b ", 6),
                Section::Token(8),
                Section::Token(1),
            ]
        );
        assert_eq!(split("", &tokens), [Section::Text("", 0)]);
        assert_eq!(split("  <x>", &tokens), [Section::Token(7)]);
    }
}
