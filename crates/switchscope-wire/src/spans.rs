//! Masked spans: T5's sentinels `<extra_id_0>`, `<extra_id_1>`, … in a prompt, and the answer
//! that fills them in.
//!
//! A span-corruption model answers `<extra_id_0> first span <extra_id_1> second span … </s>`.
//! Trained on text with many spans, it often goes on past the spans a prompt has, inventing
//! answers for `<extra_id_N>` that the prompt never asked about. [`end_of_answer`] names the
//! sentinel after the prompt's last one: a generation that stops there (see
//! `GenerateOptions::stop_at`) has answered every span and nothing more. [`answer_spans`] splits
//! an answer by sentinel, and [`fill_in`] writes each span's text into the prompt in place of its
//! sentinel.

/// The most sentinels a T5 vocabulary has (`<extra_id_0>` … `<extra_id_99>`).
pub const MAX_SENTINELS: usize = 100;

/// The text of sentinel `n`.
pub fn sentinel(n: usize) -> String {
    format!("<extra_id_{n}>")
}

/// The ids of `<extra_id_0>`, `<extra_id_1>`, … as `token_to_id` finds them, up to the first one
/// it does not know (a vocabulary without sentinels gives an empty list).
pub fn sentinel_ids(token_to_id: impl Fn(&str) -> Option<u32>) -> Vec<u32> {
    (0..MAX_SENTINELS)
        .map_while(|n| token_to_id(&sentinel(n)))
        .collect()
}

/// Whether `input` has a masked span (any sentinel).
pub fn has_spans(input: &[u32], sentinels: &[u32]) -> bool {
    input.iter().any(|id| sentinels.contains(id))
}

/// The sentinel that follows the highest one `input` uses: once a model generates it, every
/// span of the input has its answer. `None` when the input has no sentinel, or uses the last
/// one the vocabulary has.
pub fn end_of_answer(input: &[u32], sentinels: &[u32]) -> Option<u32> {
    let highest = input
        .iter()
        .filter_map(|id| sentinels.iter().position(|s| s == id))
        .max()?;
    sentinels.get(highest + 1).copied()
}

/// The answer split at its sentinels: for each sentinel in `output` (in order), its number and
/// the ids that follow it up to the next sentinel (`pad` and `eos` left out). Ids before the
/// first sentinel are not part of any span and are left out too.
pub fn answer_spans(
    output: &[u32],
    sentinels: &[u32],
    pad: u32,
    eos: u32,
) -> Vec<(usize, Vec<u32>)> {
    let mut spans: Vec<(usize, Vec<u32>)> = Vec::new();
    for &id in output {
        if let Some(n) = sentinels.iter().position(|&s| s == id) {
            spans.push((n, Vec::new()));
        } else if id != pad
            && id != eos
            && let Some((_, ids)) = spans.last_mut()
        {
            ids.push(id);
        }
    }
    spans
}

/// A piece of a filled-in prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filled {
    /// Text of the prompt as it was typed.
    Prompt(String),
    /// The model's answer for sentinel `n`.
    Answer { n: usize, text: String },
    /// A sentinel of the prompt that the answer has no span for (yet).
    Missing(usize),
}

/// `prompt` with each `<extra_id_N>` replaced by the text of span `N` (`answers`: span number
/// and decoded text, as from [`answer_spans`]). A span answered twice keeps its first answer.
pub fn fill_in(prompt: &str, answers: &[(usize, String)]) -> Vec<Filled> {
    let mut pieces = Vec::new();
    let mut rest = prompt;
    let push_text = |pieces: &mut Vec<Filled>, text: &str| {
        if text.is_empty() {
            return;
        }
        if let Some(Filled::Prompt(last)) = pieces.last_mut() {
            last.push_str(text);
        } else {
            pieces.push(Filled::Prompt(text.to_owned()));
        }
    };
    while let Some(start) = rest.find("<extra_id_") {
        let after = &rest[start + "<extra_id_".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let n = after[..digits].parse::<usize>().ok();
        match n {
            Some(n) if digits > 0 && after[digits..].starts_with('>') => {
                push_text(&mut pieces, &rest[..start]);
                pieces.push(match answers.iter().find(|(k, _)| *k == n) {
                    Some((_, text)) => Filled::Answer {
                        n,
                        text: text.trim().to_owned(),
                    },
                    None => Filled::Missing(n),
                });
                rest = &after[digits + 1..];
            }
            _ => {
                // Not a sentinel after all (`<extra_id_x`): keep it as text.
                let keep = start + "<extra_id_".len();
                push_text(&mut pieces, &rest[..keep]);
                rest = &rest[keep..];
            }
        }
    }
    push_text(&mut pieces, rest);
    pieces
}

/// [`fill_in`] of the answer in `output` (as generated, from the decoder start on): its spans
/// ([`answer_spans`]) decoded by `decode`.
pub fn fill_in_answer(
    prompt: &str,
    output: &[u32],
    sentinels: &[u32],
    (pad, eos): (u32, u32),
    decode: impl Fn(&[u32]) -> String,
) -> Vec<Filled> {
    let answers: Vec<(usize, String)> = answer_spans(output, sentinels, pad, eos)
        .into_iter()
        .map(|(n, ids)| (n, decode(&ids)))
        .collect();
    fill_in(prompt, &answers)
}

/// The filled-in prompt as plain text, answers in `[brackets]` and unanswered spans as `[…]`.
pub fn fill_in_text(pieces: &[Filled]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Filled::Prompt(text) => text.clone(),
            Filled::Answer { text, .. } => format!("[{text}]"),
            Filled::Missing(_) => "[…]".to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A vocabulary of 10 ids whose sentinels are 9, 8, 7 (T5's order: from the top down).
    const SENTINELS: [u32; 3] = [9, 8, 7];

    fn lookup(token: &str) -> Option<u32> {
        match token {
            "<extra_id_0>" => Some(9),
            "<extra_id_1>" => Some(8),
            "<extra_id_2>" => Some(7),
            _ => None,
        }
    }

    #[test]
    fn sentinels_are_found_in_order_up_to_the_first_unknown() {
        assert_eq!(sentinel_ids(lookup), SENTINELS);
        assert!(sentinel_ids(|_| None).is_empty());
    }

    #[test]
    fn the_answer_ends_at_the_sentinel_after_the_prompts_highest() {
        assert_eq!(end_of_answer(&[3, 9, 4, 1], &SENTINELS), Some(8));
        // spans numbered out of order: the highest counts
        assert_eq!(end_of_answer(&[3, 8, 4, 9, 1], &SENTINELS), Some(7));
        assert_eq!(end_of_answer(&[3, 4, 1], &SENTINELS), None);
        // the vocabulary's last sentinel: nothing follows it, but the prompt has a span
        assert_eq!(end_of_answer(&[7, 1], &SENTINELS), None);
        assert!(has_spans(&[7, 1], &SENTINELS));
        assert!(!has_spans(&[3, 4, 1], &SENTINELS));
    }

    #[test]
    fn answers_split_at_sentinels_without_pad_and_eos() {
        let spans = answer_spans(&[0, 5, 9, 3, 4, 8, 6, 1], &SENTINELS, 0, 1);
        assert_eq!(spans, vec![(0, vec![3, 4]), (1, vec![6])]);
        assert!(answer_spans(&[0, 3, 1], &SENTINELS, 0, 1).is_empty());
        assert_eq!(answer_spans(&[9], &SENTINELS, 0, 1), vec![(0, vec![])]);
    }

    #[test]
    fn the_prompt_is_filled_in_place_of_its_sentinels() {
        let answers = vec![(0, " cat ".to_owned()), (0, "dog".to_owned())];
        let filled = fill_in("The <extra_id_0> sat on the <extra_id_1>.", &answers);
        assert_eq!(
            filled,
            vec![
                Filled::Prompt("The ".into()),
                Filled::Answer {
                    n: 0,
                    text: "cat".into()
                },
                Filled::Prompt(" sat on the ".into()),
                Filled::Missing(1),
                Filled::Prompt(".".into()),
            ]
        );
        assert_eq!(fill_in_text(&filled), "The [cat] sat on the […].");
    }

    #[test]
    fn an_answer_fills_the_prompt_through_its_decoder() {
        let decode = |ids: &[u32]| ids.iter().map(|i| format!(" w{i}")).collect::<String>();
        let filled = fill_in_answer(
            "A <extra_id_0> B <extra_id_1>",
            &[0, 9, 3, 4, 8, 5, 7, 6, 1],
            &SENTINELS,
            (0, 1),
            decode,
        );
        assert_eq!(fill_in_text(&filled), "A [w3 w4] B [w5]");
    }

    #[test]
    fn text_that_only_looks_like_a_sentinel_stays_text() {
        let filled = fill_in("a <extra_id_x> b <extra_id_> c <extra_id_0", &[]);
        assert_eq!(
            filled,
            vec![Filled::Prompt(
                "a <extra_id_x> b <extra_id_> c <extra_id_0".into()
            )]
        );
        assert_eq!(fill_in("", &[]), vec![]);
        assert_eq!(
            fill_in("<extra_id_12>", &[(12, "x".into())]),
            vec![Filled::Answer {
                n: 12,
                text: "x".into()
            }]
        );
    }
}
