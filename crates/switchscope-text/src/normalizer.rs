//! Normalizers: Unicode forms, SentencePiece's precompiled character map, and the small string
//! edits `tokenizer.json` files combine them with.

use serde_json::Value;

use crate::{TextError, Unicode, base64, kind};

/// A Unicode normalization form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Nfc,
    Nfd,
    Nfkc,
    Nfkd,
}

impl Form {
    /// Its name, as `String.prototype.normalize` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nfc => "NFC",
            Self::Nfd => "NFD",
            Self::Nfkc => "NFKC",
            Self::Nfkd => "NFKD",
        }
    }
}

/// A run of at least `min` of one character, the only regular expression a `Replace` may hold
/// here (`" {2,}"`, as SentencePiece conversions write it).
#[derive(Debug, Clone)]
pub(crate) struct Run {
    c: char,
    min: usize,
}

impl Run {
    /// `X{n,}` or `X+`, where X is one character (or `\` and one).
    fn parse(pattern: &str) -> Option<Self> {
        let mut chars = pattern.chars();
        let c = match chars.next()? {
            '\\' => chars.next().filter(|c| !c.is_alphanumeric())?,
            c if "\\.^$|?*+()[]{}".contains(c) => return None,
            c => c,
        };
        let rest = chars.as_str();
        let min = if rest == "+" {
            1
        } else {
            rest.strip_prefix('{')?
                .strip_suffix(",}")?
                .parse()
                .ok()
                .filter(|&n| n >= 1)?
        };
        Some(Self { c, min })
    }

    fn replace(&self, text: &str, content: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut run = 0;
        let flush = |out: &mut String, run: usize| {
            if run >= self.min {
                out.push_str(content);
            } else {
                out.extend(std::iter::repeat_n(self.c, run));
            }
        };
        for c in text.chars() {
            if c == self.c {
                run += 1;
            } else {
                flush(&mut out, run);
                run = 0;
                out.push(c);
            }
        }
        flush(&mut out, run);
        out
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    Literal(String),
    Run(Run),
}

/// One normalizer of `tokenizer.json`.
#[derive(Debug, Clone)]
pub(crate) enum Normalizer {
    Unicode(Form),
    Lowercase,
    Strip { left: bool, right: bool },
    Replace { pattern: Pattern, content: String },
    Prepend(String),
    Precompiled(Precompiled),
    Sequence(Vec<Normalizer>),
}

impl Normalizer {
    pub(crate) fn from_json(value: &Value) -> Result<Self, TextError> {
        let invalid = |what: &str| TextError::Invalid(format!("normalizer: {what}"));
        let string = |field: &str| {
            value
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| invalid(&format!("no string \"{field}\"")))
        };
        Ok(match kind(value)? {
            "NFC" => Self::Unicode(Form::Nfc),
            "NFD" => Self::Unicode(Form::Nfd),
            "NFKC" => Self::Unicode(Form::Nfkc),
            "NFKD" => Self::Unicode(Form::Nfkd),
            "Lowercase" => Self::Lowercase,
            "Strip" => Self::Strip {
                left: value
                    .get("strip_left")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
                right: value
                    .get("strip_right")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            },
            "Prepend" => Self::Prepend(string("prepend")?),
            "Replace" => {
                let pattern = value.get("pattern").ok_or_else(|| invalid("no pattern"))?;
                let pattern = if let Some(s) = pattern.get("String").and_then(Value::as_str) {
                    Pattern::Literal(s.to_owned())
                } else if let Some(re) = pattern.get("Regex").and_then(Value::as_str) {
                    Pattern::Run(Run::parse(re).ok_or_else(|| TextError::Unsupported {
                        what: format!("a Replace normalizer with the regular expression {re:?}"),
                        reads: "literal patterns and runs of one character such as \" {2,}\"",
                    })?)
                } else {
                    return Err(invalid(&format!(
                        "a Replace pattern of no known kind: {pattern}"
                    )));
                };
                Self::Replace {
                    pattern,
                    content: string("content")?,
                }
            }
            "Precompiled" => {
                let map = value
                    .get("precompiled_charsmap")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("Precompiled without a precompiled_charsmap"))?;
                let bytes = base64::decode(map)
                    .ok_or_else(|| invalid("precompiled_charsmap is not base64"))?;
                Self::Precompiled(Precompiled::parse(&bytes).map_err(|e| invalid(&e))?)
            }
            "Sequence" => Self::Sequence(
                value
                    .get("normalizers")
                    .and_then(Value::as_array)
                    .ok_or_else(|| invalid("a Sequence without \"normalizers\""))?
                    .iter()
                    .map(Self::from_json)
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(TextError::Unsupported {
                    what: format!("a {other} normalizer"),
                    reads: "NFC, NFD, NFKC, NFKD, Lowercase, Strip, Replace, Prepend, Precompiled \
                            and Sequence",
                });
            }
        })
    }

    pub(crate) fn apply(&self, text: &str, unicode: &dyn Unicode) -> String {
        match self {
            Self::Unicode(form) => unicode.normalize(*form, text),
            Self::Lowercase => text.chars().flat_map(char::to_lowercase).collect(),
            Self::Strip { left, right } => {
                let mut s = text;
                if *left {
                    s = s.trim_start();
                }
                if *right {
                    s = s.trim_end();
                }
                s.to_owned()
            }
            Self::Replace {
                pattern: Pattern::Literal(p),
                content,
            } => {
                if p.is_empty() {
                    text.to_owned()
                } else {
                    text.replace(p.as_str(), content)
                }
            }
            Self::Replace {
                pattern: Pattern::Run(run),
                content,
            } => run.replace(text, content),
            Self::Prepend(prefix) => {
                if text.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}{text}")
                }
            }
            Self::Precompiled(map) => map.apply(text, unicode),
            Self::Sequence(all) => all
                .iter()
                .fold(text.to_owned(), |text, n| n.apply(&text, unicode)),
        }
    }
}

/// SentencePiece's precompiled normalization map: a double-array trie over UTF-8 byte strings
/// whose leaves point into a blob of NUL-terminated replacements.
#[derive(Debug, Clone)]
pub(crate) struct Precompiled {
    units: Vec<u32>,
    replacements: String,
}

impl Precompiled {
    /// `[trie bytes: u32 LE][trie: u32 LE units][replacements]`.
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let size = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("precompiled_charsmap is shorter than its header")?;
        let trie = bytes
            .get(4..4 + size)
            .filter(|t| t.len().is_multiple_of(4) && !t.is_empty())
            .ok_or("precompiled_charsmap's trie does not fit its length")?;
        let units = trie
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let replacements = String::from_utf8(bytes[4 + size..].to_vec())
            .map_err(|_| "precompiled_charsmap's replacements are not UTF-8")?;
        Ok(Self {
            units,
            replacements,
        })
    }

    /// The value of the shortest key that is a prefix of `key`.
    fn shortest_prefix(&self, key: &[u8]) -> Option<usize> {
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let label = |u: u32| u & ((1 << 31) | 0xFF);
        let mut pos = offset(*self.units.first()?);
        for &c in key {
            if c == 0 {
                break;
            }
            pos ^= usize::from(c);
            let unit = *self.units.get(pos)?;
            if label(unit) != u32::from(c) {
                return None;
            }
            pos ^= offset(unit);
            if (unit >> 8) & 1 == 1 {
                return Some((*self.units.get(pos)? & ((1 << 31) - 1)) as usize);
            }
        }
        None
    }

    /// The replacement for `chunk`: that of the shortest key that starts it.
    fn transform(&self, chunk: &str) -> Option<&str> {
        let start = self.shortest_prefix(chunk.as_bytes())?;
        let rest = self.replacements.get(start..)?;
        Some(rest.split('\0').next().unwrap_or(rest))
    }

    /// Each grapheme cluster shorter than 6 bytes is replaced whole when the map has it;
    /// otherwise each of its characters is replaced (or kept).
    fn apply(&self, text: &str, unicode: &dyn Unicode) -> String {
        let mut out = String::with_capacity(text.len());
        for grapheme in unicode.graphemes(text) {
            if grapheme.len() < 6
                && let Some(replacement) = self.transform(grapheme)
            {
                out.push_str(replacement);
                continue;
            }
            for (i, c) in grapheme.char_indices() {
                match self.transform(&grapheme[i..i + c.len_utf8()]) {
                    Some(replacement) => out.push_str(replacement),
                    None => out.push(c),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Run;

    #[test]
    fn runs_of_one_character() {
        let run = Run::parse(" {2,}").unwrap();
        assert_eq!(run.replace("a  b   c d", "▁"), "a▁b▁c d");
        assert_eq!(run.replace("  ", " "), " ");
        let plus = Run::parse("\\.+").unwrap();
        assert_eq!(plus.replace("a..b.c", "!"), "a!b!c");
        for bad in ["\\s+", "a|b", "[ ]+", " {2,3}", " *", "", ".+", " {0,}"] {
            assert!(Run::parse(bad).is_none(), "{bad:?}");
        }
    }
}
