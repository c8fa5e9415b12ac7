//! What a session's prompts say about when experts come back, for the next-use estimate: how
//! long a decode lasts, how many experts an encoder pass asks for per layer, and how often each
//! encoder expert is asked for again by the next prompt.
//!
//! A prompt begins where an encoder request follows a decoder request (or opens the trace); a
//! decoded token is a visit to the decoder's first sparse layer.

use std::collections::{HashMap, VecDeque};

use switchscope_wire::{ExpertId, Stack};

/// How many finished prompts' decode lengths are kept (the most recent).
const KEPT_LENGTHS: usize = 64;

/// Tokens a decode is expected to last before any prompt has finished.
const FIRST_DECODE: f64 = 16.0;

/// Prompts after which a prompt's use of an encoder expert counts half.
const PROMPT_HALF_LIFE: f64 = 4.0;

/// Requests counted for each expert before any is seen (as `super::PRIOR`).
const PRIOR: f64 = 0.5;

/// Share of a layer's experts an encoder pass is expected to ask for before one was seen.
const FIRST_PASS_SHARE: f64 = 0.75;

type Layer = (Stack, usize);

#[derive(Debug, Clone)]
pub(super) struct Prompts {
    /// The encoder's sparse layers in pass order, with their experts.
    encoder: Vec<(Layer, usize)>,
    /// The decoder's first sparse layer: a visit is a decoded token.
    first_decoder: Option<Layer>,
    /// Decoded tokens of the recent finished prompts.
    lengths: VecDeque<u32>,
    /// Tokens decoded in this prompt so far.
    tokens: u32,
    /// Per encoder layer, its requests per encoder pass (each pass's count averaged with the
    /// earlier ones' at half weight).
    per_pass: HashMap<Layer, f64>,
    /// This prompt's encoder requests per layer.
    this_pass: HashMap<Layer, u32>,
    /// Per encoder expert, the prompts that asked for it, each weighing
    /// `0.5^(prompts since / PROMPT_HALF_LIFE)`.
    used_by: HashMap<ExpertId, f64>,
    /// Every prompt so far, weighted alike.
    prompts: f64,
}

impl Prompts {
    /// `encoder`: the encoder's sparse layers in pass order with their experts; `first_decoder`:
    /// the decoder's first sparse layer.
    pub(super) fn new(encoder: Vec<(Layer, usize)>, first_decoder: Option<Layer>) -> Self {
        Self {
            encoder,
            first_decoder,
            lengths: VecDeque::new(),
            tokens: 0,
            per_pass: HashMap::new(),
            this_pass: HashMap::new(),
            used_by: HashMap::new(),
            prompts: 0.0,
        }
    }

    /// A demand request for `id`, after `previous` (none: the first of the trace).
    pub(super) fn request(&mut self, id: ExpertId, previous: Option<ExpertId>) {
        let layer = (id.stack, id.block);
        if id.stack == Stack::Encoder && previous.is_none_or(|p| p.stack == Stack::Decoder) {
            if previous.is_some() {
                self.finish();
            }
            let keep = 0.5f64.powf(1.0 / PROMPT_HALF_LIFE);
            for weight in self.used_by.values_mut() {
                *weight *= keep;
            }
            self.prompts = self.prompts * keep + 1.0;
        }
        match id.stack {
            Stack::Encoder => {
                *self.this_pass.entry(layer).or_insert(0) += 1;
                *self.used_by.entry(id).or_insert(0.0) += 1.0;
            }
            Stack::Decoder => {
                if Some(layer) == self.first_decoder {
                    self.tokens += 1;
                }
            }
        }
    }

    /// The prompt before a new one has ended: its decode length and encoder requests count.
    fn finish(&mut self) {
        self.lengths.push_back(self.tokens);
        if self.lengths.len() > KEPT_LENGTHS {
            self.lengths.pop_front();
        }
        for &(layer, _) in &self.encoder {
            let now = f64::from(self.this_pass.get(&layer).copied().unwrap_or(0));
            self.per_pass
                .entry(layer)
                .and_modify(|avg| *avg = 0.5 * *avg + 0.5 * now)
                .or_insert(now);
        }
        self.tokens = 0;
        self.this_pass.clear();
    }

    /// Tokens a whole decode is expected to last.
    pub(super) fn expected_tokens(&self) -> f64 {
        if self.lengths.is_empty() {
            FIRST_DECODE
        } else {
            self.lengths.iter().map(|&l| f64::from(l)).sum::<f64>() / self.lengths.len() as f64
        }
    }

    /// Tokens this prompt's decode is expected to go on for: the mean of what the earlier
    /// decodes that got this far had left (at least 1).
    pub(super) fn remaining_tokens(&self) -> f64 {
        let t = self.tokens;
        let (left, longer) = self
            .lengths
            .iter()
            .filter(|&&l| l > t)
            .fold((0u64, 0u32), |(sum, n), &l| (sum + u64::from(l - t), n + 1));
        if longer > 0 {
            left as f64 / f64::from(longer)
        } else if self.lengths.is_empty() {
            (FIRST_DECODE - f64::from(t)).max(1.0)
        } else {
            1.0
        }
    }

    /// The requests an encoder pass makes before it reaches `layer` (all of them: `None`).
    pub(super) fn encoder_requests(&self, layer: Option<Layer>) -> f64 {
        self.encoder
            .iter()
            .take_while(|&&(l, _)| Some(l) != layer)
            .map(|&(l, experts)| {
                self.per_pass
                    .get(&l)
                    .copied()
                    .unwrap_or(FIRST_PASS_SHARE * experts as f64)
            })
            .sum()
    }

    /// The encoder requests of this prompt so far.
    pub(super) fn encoder_done(&self) -> f64 {
        f64::from(self.this_pass.values().sum::<u32>())
    }

    /// The chance that the next prompt asks for encoder expert `id`: the share of recent
    /// prompts that did (smoothed, at most 1).
    pub(super) fn reuse_chance(&self, id: ExpertId) -> f64 {
        let used = self.used_by.get(&id).copied().unwrap_or(0.0);
        ((used + PRIOR) / (self.prompts + 2.0 * PRIOR)).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(stack: Stack, block: usize, expert: usize) -> ExpertId {
        ExpertId {
            stack,
            block,
            expert,
        }
    }

    #[test]
    fn prompts_are_told_apart_by_the_encoder_coming_back() {
        let enc = |b, e| id(Stack::Encoder, b, e);
        let dec = |b, e| id(Stack::Decoder, b, e);
        let mut p = Prompts::new(
            vec![((Stack::Encoder, 1), 4), ((Stack::Encoder, 3), 4)],
            Some((Stack::Decoder, 1)),
        );
        assert_eq!(p.expected_tokens(), FIRST_DECODE);
        assert_eq!(
            p.encoder_requests(None),
            6.0,
            "3 of 4 per layer before any pass"
        );
        let mut previous = None;
        let mut ask = |p: &mut Prompts, e: ExpertId| {
            p.request(e, previous);
            previous = Some(e);
        };
        // a prompt: 3 + 1 encoder requests, then 5 tokens; another: 2 + 2, then 1 token
        for e in [enc(1, 0), enc(1, 1), enc(1, 2), enc(3, 0)] {
            ask(&mut p, e);
        }
        assert_eq!(p.encoder_done(), 4.0);
        for _ in 0..5 {
            ask(&mut p, dec(1, 0));
            ask(&mut p, dec(3, 2));
        }
        assert_eq!(
            p.remaining_tokens(),
            11.0,
            "16 expected before any prompt ended"
        );
        for e in [enc(1, 0), enc(1, 3), enc(3, 0), enc(3, 1)] {
            ask(&mut p, e);
        }
        assert_eq!(p.expected_tokens(), 5.0);
        assert_eq!(p.encoder_requests(Some((Stack::Encoder, 3))), 3.0);
        assert_eq!(p.encoder_requests(None), 4.0);
        ask(&mut p, dec(1, 1));
        // one token in: the only earlier decode had 4 left
        assert_eq!(p.remaining_tokens(), 4.0);
        // enc(1, 0) in both prompts, enc(1, 2) in the older only, enc(1, 5) in neither
        let (both, older, never) = (
            p.reuse_chance(enc(1, 0)),
            p.reuse_chance(enc(1, 2)),
            p.reuse_chance(enc(1, 5)),
        );
        assert!(both > older && older > never, "{both} {older} {never}");
        assert!(both <= 1.0);
    }
}
