//! Which resident expert to evict when a new one does not fit.
//!
//! [`Residency`] keeps what every policy needs (when each expert was last asked for, how often,
//! where the forward pass is, what pre-gating just predicted) and names the victim. The live
//! store ([`super::store::ExpertStore`]) and the offline replay of a recorded trace
//! (`crate::eval::cache`, which also computes the optimum) use the same code.
//!
//! The policies:
//! - **LRU**: the expert asked for least recently.
//! - **LFU with ageing**: the expert asked for least often, each request's weight halving every
//!   [`Residency::half_life`] requests (so that a phase of the session that has passed stops
//!   protecting its experts); ties go to the least recent.
//! - **Least-stale** (after SpecMD's policy of that name, as we read it): a forward pass visits
//!   the sparse layers in a fixed order (encoder, then decoder once per token), so an expert of a
//!   layer the pass has just left is not needed until the pass comes back to that layer. The
//!   victim is the expert whose layer the pass reaches last from where it is now (the encoder's
//!   experts, during decoding, only at the next prompt); ties go to the least recent.
//! - **Stale, then LFU**: least-stale's knowledge of the pass where it is sure (an expert whose
//!   layer comes back only at the next prompt goes first), LFU with ageing among the rest (which
//!   expert a layer picks next is a matter of how often it picked it, not of the layer's place
//!   in the pass); ties go to the least recent.
//! - **Next use**: an estimate of Belady's choice, which evicts the expert asked for farthest in
//!   the future. The pass's order says when the expert's layer comes back (as least-stale
//!   knows); how often the layer picked the expert (its ageing LFU count, over the layer's)
//!   gives the chance `p` that a visit picks it, so its next use is expected
//!   `distance + (1/p − 1) × decoder layers` requests away while decoding; an expert whose layer
//!   only the next prompt reaches goes first, the least likely of them first.
//! - **+ pre-gate pins** (any of the above): an expert that pre-gating predicted for the next
//!   sparse layer, and that has not been asked for since, is not evicted (unless every
//!   candidate is pinned). Only this engine knows those predictions. The store pre-gates for
//!   pins only when it has a budget (without one nothing is evicted).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use switchscope_wire::{ExpertId, Stack};

/// The order in which a policy gives experts up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    Lru,
    Lfu,
    LeastStale,
    StaleLfu,
    NextUse,
}

/// An eviction policy: an [`Order`], optionally with pre-gate pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy {
    pub order: Order,
    /// Never evict an expert that pre-gating just predicted and that is still to be asked for.
    pub pin_predicted: bool,
}

impl Policy {
    pub const LRU: Self = Self {
        order: Order::Lru,
        pin_predicted: false,
    };
    pub const LFU: Self = Self {
        order: Order::Lfu,
        pin_predicted: false,
    };
    pub const LEAST_STALE: Self = Self {
        order: Order::LeastStale,
        pin_predicted: false,
    };
    pub const STALE_LFU: Self = Self {
        order: Order::StaleLfu,
        pin_predicted: false,
    };
    pub const NEXT_USE: Self = Self {
        order: Order::NextUse,
        pin_predicted: false,
    };

    /// Every policy the benchmark compares, in its table's order.
    pub const ALL: [Self; 10] = [
        Self::LRU,
        Self::LFU,
        Self::LEAST_STALE,
        Self::STALE_LFU,
        Self::NEXT_USE,
        Self::LRU.pinned(),
        Self::LFU.pinned(),
        Self::LEAST_STALE.pinned(),
        Self::STALE_LFU.pinned(),
        Self::NEXT_USE.pinned(),
    ];

    /// The same order with pre-gate pins.
    pub const fn pinned(self) -> Self {
        Self {
            order: self.order,
            pin_predicted: true,
        }
    }
}

/// The store's default: stale-then-LFU with pre-gate pins, the best of [`Policy::ALL`] on the
/// default model's session trace at 10 and 25 % budgets (next-use with pins is at 50 %;
/// `switchscope bench shards`, docs/BENCHMARKS.md §3).
impl Default for Policy {
    fn default() -> Self {
        Self::STALE_LFU.pinned()
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = match self.order {
            Order::Lru => "lru",
            Order::Lfu => "lfu",
            Order::LeastStale => "least-stale",
            Order::StaleLfu => "stale-lfu",
            Order::NextUse => "next-use",
        };
        f.write_str(order)?;
        if self.pin_predicted {
            f.write_str("+pins")?;
        }
        Ok(())
    }
}

impl FromStr for Policy {
    type Err = String;

    /// `lru`, `lfu`, `least-stale`, `stale-lfu`, `next-use`, each optionally followed by `+pins`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (order, pin_predicted) = match s.strip_suffix("+pins") {
            Some(order) => (order, true),
            None => (s, false),
        };
        let order = match order {
            "lru" => Order::Lru,
            "lfu" => Order::Lfu,
            "least-stale" => Order::LeastStale,
            "stale-lfu" => Order::StaleLfu,
            "next-use" => Order::NextUse,
            _ => {
                return Err(format!(
                    "unknown cache policy {s:?}: expected lru, lfu, least-stale, stale-lfu or next-use, \
                     optionally followed by +pins"
                ));
            }
        };
        Ok(Self {
            order,
            pin_predicted,
        })
    }
}

/// One step of a store's request trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A sparse layer needs this expert now.
    Demand(ExpertId),
    /// Pre-gating predicted these experts for the next sparse layer.
    Predicted(Vec<ExpertId>),
}

/// What a policy knows about one expert.
#[derive(Debug, Clone, Copy)]
struct Seen {
    last_use: u64,
    /// Requests, each weighted `0.5^(age / half_life)`, as of `last_use`.
    uses: f64,
}

/// The bookkeeping behind eviction: which experts are resident and what each policy needs to
/// rank them.
#[derive(Debug, Clone)]
pub struct Residency {
    policy: Policy,
    /// Rank of each sparse layer in a forward pass's order (encoder first, by block).
    rank: HashMap<(Stack, usize), usize>,
    /// How many sparse layers the decoder has.
    decoder_layers: usize,
    half_life: f64,
    seen: HashMap<ExpertId, Seen>,
    /// Per sparse layer, its requests weighted as in [`Seen::uses`].
    layer_uses: HashMap<(Stack, usize), Seen>,
    /// Experts per sparse layer.
    layer_experts: HashMap<(Stack, usize), usize>,
    resident: HashSet<ExpertId>,
    pinned: HashSet<ExpertId>,
    tick: u64,
    /// The last expert asked for: where the forward pass is.
    at: Option<ExpertId>,
}

impl Residency {
    /// Bookkeeping for `policy` over a model whose experts are `experts` (any order; the sparse
    /// layers are read from them).
    pub fn new(policy: Policy, experts: impl IntoIterator<Item = ExpertId>) -> Self {
        let experts: Vec<ExpertId> = experts.into_iter().collect();
        let mut layer_experts = HashMap::new();
        for e in &experts {
            *layer_experts.entry((e.stack, e.block)).or_insert(0) += 1;
        }
        let layers = pass_order(experts);
        let decoder_layers = layers.iter().filter(|(s, _)| *s == Stack::Decoder).count();
        let rank: HashMap<_, _> = layers
            .into_iter()
            .enumerate()
            .map(|(i, l)| (l, i))
            .collect();
        Self {
            policy,
            half_life: (4 * rank.len().max(1)) as f64,
            rank,
            decoder_layers,
            seen: HashMap::new(),
            layer_uses: HashMap::new(),
            layer_experts,
            resident: HashSet::new(),
            pinned: HashSet::new(),
            tick: 0,
            at: None,
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Requests after which an earlier request counts half in LFU (four forward passes' worth
    /// of sparse layers).
    pub fn half_life(&self) -> f64 {
        self.half_life
    }

    pub fn contains(&self, id: ExpertId) -> bool {
        self.resident.contains(&id)
    }

    pub fn len(&self) -> usize {
        self.resident.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resident.is_empty()
    }

    /// A demand request for `id` (resident or not): the pass is now at its layer.
    pub fn request(&mut self, id: ExpertId) {
        self.tick += 1;
        let tick = self.tick;
        let half_life = self.half_life;
        let seen = self.seen.entry(id).or_insert(Seen {
            last_use: tick,
            uses: 0.0,
        });
        seen.uses = seen.uses * decay(tick - seen.last_use, half_life) + 1.0;
        seen.last_use = tick;
        let layer = self.layer_uses.entry((id.stack, id.block)).or_insert(Seen {
            last_use: tick,
            uses: 0.0,
        });
        layer.uses = layer.uses * decay(tick - layer.last_use, half_life) + 1.0;
        layer.last_use = tick;
        self.pinned.remove(&id);
        self.at = Some(id);
    }

    /// Pre-gating's prediction for the next sparse layer: these are pinned (replacing the
    /// previous prediction's pins).
    pub fn predicted(&mut self, ids: &[ExpertId]) {
        self.pinned.clear();
        self.pinned.extend(ids.iter().copied());
    }

    /// `id` is now resident.
    pub fn insert(&mut self, id: ExpertId) {
        self.resident.insert(id);
    }

    /// `id` is no longer resident.
    pub fn remove(&mut self, id: ExpertId) {
        self.resident.remove(&id);
    }

    /// Every resident expert leaves (the history stays).
    pub fn clear(&mut self) {
        self.resident.clear();
    }

    /// The resident expert to evict next, other than `keep`.
    pub fn victim(&self, keep: Option<ExpertId>) -> Option<ExpertId> {
        let candidates = || self.resident.iter().copied().filter(|&id| Some(id) != keep);
        let unpinned =
            candidates().filter(|id| !self.policy.pin_predicted || !self.pinned.contains(id));
        let best = |ids: &mut dyn Iterator<Item = ExpertId>| {
            ids.max_by(|&a, &b| {
                self.badness(a)
                    .partial_cmp(&self.badness(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
                    // a stable order among equals: the lower id goes first
                    .then_with(|| key(b).cmp(&key(a)))
            })
        };
        best(&mut unpinned.into_iter()).or_else(|| best(&mut candidates()))
    }

    /// Every resident expert, in the order the policy would give them up.
    pub fn eviction_order(&self) -> Vec<ExpertId> {
        let mut left = self.clone();
        let mut order = Vec::with_capacity(self.resident.len());
        while let Some(victim) = left.victim(None) {
            left.remove(victim);
            order.push(victim);
        }
        order
    }

    /// How much the policy wants `id` gone: (primary, secondary, age), larger first.
    fn badness(&self, id: ExpertId) -> (f64, f64, f64) {
        let seen = self.seen.get(&id).copied().unwrap_or(Seen {
            last_use: 0,
            uses: 0.0,
        });
        let age = self.tick - seen.last_use.min(self.tick);
        let rarity = -(seen.uses * decay(age, self.half_life));
        let age = age as f64;
        match self.policy.order {
            Order::Lru => (age, 0.0, age),
            Order::Lfu => (rarity, 0.0, age),
            Order::LeastStale => (self.distance(id) as f64, 0.0, age),
            Order::StaleLfu => {
                let stale = if self.distance(id) >= NEXT_PROMPT {
                    1.0
                } else {
                    0.0
                };
                (stale, rarity, age)
            }
            Order::NextUse => {
                let p = self.chance(id, -rarity);
                let d = self.distance(id);
                let expected = if d >= NEXT_PROMPT {
                    NEXT_PROMPT as f64 / p
                } else {
                    d as f64 + (1.0 / p - 1.0) * self.decoder_layers.max(1) as f64
                };
                (expected, 0.0, age)
            }
        }
    }

    /// The chance that a visit to `id`'s layer picks it: its weighted requests over its layer's
    /// (`uses`, aged to now), smoothed so that an expert never asked for is not impossible.
    fn chance(&self, id: ExpertId, uses: f64) -> f64 {
        let layer = (id.stack, id.block);
        let total = self.layer_uses.get(&layer).map_or(0.0, |s| {
            s.uses * decay(self.tick - s.last_use.min(self.tick), self.half_life)
        });
        let n = self.layer_experts.get(&layer).copied().unwrap_or(1).max(1) as f64;
        (uses + PRIOR) / (total + PRIOR * n)
    }

    /// How many sparse layers the pass visits, from where it is, before it next reaches `id`'s
    /// layer (a large number when only the next prompt does).
    fn distance(&self, id: ExpertId) -> usize {
        let k = self.rank.get(&(id.stack, id.block)).copied().unwrap_or(0);
        let Some(at) = self.at else {
            return k;
        };
        let r = self.rank.get(&(at.stack, at.block)).copied().unwrap_or(0);
        match (at.stack, id.stack) {
            // a layer still ahead in this pass
            (_, _) if k > r => k - r,
            // the decoder comes back to its layers once per token
            (Stack::Decoder, Stack::Decoder) => k + self.decoder_layers - r,
            // the encoder's layers (and, from the encoder, the layers it has passed) wait for
            // the next prompt
            _ => NEXT_PROMPT + k,
        }
    }
}

/// The sparse layers `experts` belong to, in a forward pass's order (encoder first, by block).
pub fn pass_order(experts: impl IntoIterator<Item = ExpertId>) -> Vec<(Stack, usize)> {
    let mut layers: Vec<(Stack, usize)> = experts.into_iter().map(|e| (e.stack, e.block)).collect();
    layers.sort_by_key(|&(stack, block)| (stack == Stack::Decoder, block));
    layers.dedup();
    layers
}

/// Requests [`Residency::chance`] counts for each expert before any is seen.
const PRIOR: f64 = 0.5;

/// [`Residency::distance`] of a layer that only the next prompt reaches (plus its rank).
const NEXT_PROMPT: usize = 1 << 20;

fn decay(age: u64, half_life: f64) -> f64 {
    0.5f64.powf(age as f64 / half_life)
}

fn key(id: ExpertId) -> (bool, usize, usize) {
    (id.stack == Stack::Decoder, id.block, id.expert)
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

    fn model() -> Vec<ExpertId> {
        let mut all = Vec::new();
        for stack in [Stack::Encoder, Stack::Decoder] {
            for block in [1, 3] {
                for e in 0..4 {
                    all.push(id(stack, block, e));
                }
            }
        }
        all
    }

    fn residency(policy: Policy, resident: &[ExpertId]) -> Residency {
        let mut r = Residency::new(policy, model());
        for &e in resident {
            r.request(e);
            r.insert(e);
        }
        r
    }

    #[test]
    fn lru_gives_up_the_least_recent() {
        let (a, b, c) = (
            id(Stack::Decoder, 1, 0),
            id(Stack::Decoder, 1, 1),
            id(Stack::Decoder, 3, 2),
        );
        let mut r = residency(Policy::LRU, &[a, b, c]);
        assert_eq!(r.victim(None), Some(a));
        r.request(a);
        assert_eq!(r.victim(None), Some(b));
        assert_eq!(r.victim(Some(b)), Some(c));
    }

    #[test]
    fn lfu_keeps_the_often_used_until_it_ages() {
        let (a, b) = (id(Stack::Decoder, 1, 0), id(Stack::Decoder, 3, 1));
        let mut r = residency(Policy::LFU, &[a, a, a, b]);
        assert_eq!(r.victim(None), Some(b), "a was asked for three times");
        // many requests later b is used again twice: a's three old uses have aged below b's
        let other = id(Stack::Decoder, 1, 3);
        for _ in 0..(4.0 * r.half_life()) as usize {
            r.request(other);
        }
        r.request(b);
        r.request(b);
        assert_eq!(r.victim(Some(other)), Some(a));
    }

    #[test]
    fn least_stale_gives_up_the_layer_the_pass_reaches_last() {
        let enc = id(Stack::Encoder, 1, 0);
        let (d1, d3) = (id(Stack::Decoder, 1, 0), id(Stack::Decoder, 3, 1));
        // decoding, the pass at decoder block 1: block 3 comes next, block 1 a token later, the
        // encoder only at the next prompt
        let mut r = residency(Policy::LEAST_STALE, &[d3, enc, d1]);
        assert_eq!(r.victim(None), Some(enc));
        r.remove(enc);
        assert_eq!(r.victim(None), Some(d1), "d1's layer comes back after d3's");
        r.request(d3);
        assert_eq!(r.victim(None), Some(d3), "now the pass is at block 3");
        // LRU would have evicted the other way
        let lru = residency(Policy::LRU, &[d3, d1]);
        assert_eq!(lru.victim(None), Some(d3));
    }

    #[test]
    fn stale_lfu_gives_up_the_next_prompts_experts_then_the_rarely_used() {
        let enc = id(Stack::Encoder, 1, 0);
        let (often, rare) = (id(Stack::Decoder, 1, 0), id(Stack::Decoder, 3, 1));
        // decoding at block 3: the encoder's expert goes first even though it is the most
        // recent of the three, then the decoder's rarely used one whatever the layer order
        let mut r = residency(Policy::STALE_LFU, &[often, often, often, rare, enc]);
        r.request(id(Stack::Decoder, 3, 3));
        assert_eq!(r.victim(None), Some(enc));
        r.remove(enc);
        assert_eq!(r.victim(None), Some(rare));
        // least-stale would give up `often`, whose layer the pass has just left
        let mut stale = residency(Policy::LEAST_STALE, &[often, often, often, rare]);
        stale.request(id(Stack::Decoder, 1, 3));
        assert_eq!(stale.victim(None), Some(often));
    }

    #[test]
    fn pins_protect_the_predicted_expert_until_it_is_asked_for() {
        let (a, b, next) = (
            id(Stack::Decoder, 1, 0),
            id(Stack::Decoder, 1, 1),
            id(Stack::Decoder, 3, 2),
        );
        let mut r = residency(Policy::LRU.pinned(), &[next, a, b]);
        r.predicted(&[next]);
        assert_eq!(r.victim(None), Some(a), "next is pinned");
        let mut unpinned = residency(Policy::LRU, &[next, a, b]);
        unpinned.predicted(&[next]);
        assert_eq!(unpinned.victim(None), Some(next));
        r.request(next);
        assert_eq!(r.victim(None), Some(a));
        // everything pinned: the order decides anyway
        r.predicted(&[a, b, next]);
        assert_eq!(r.victim(None), Some(a));
    }

    #[test]
    fn next_use_weighs_when_the_layer_comes_back_against_how_often_it_picks_the_expert() {
        let enc = id(Stack::Encoder, 1, 0);
        let (d1a, d1b, d3) = (
            id(Stack::Decoder, 1, 0),
            id(Stack::Decoder, 1, 1),
            id(Stack::Decoder, 3, 2),
        );
        // decoder block 1 picked a three times and b once; block 3 always picks d3
        let mut r = residency(Policy::NEXT_USE, &[enc, d1a, d3, d1a, d3, d1a, d3, d1b, d3]);
        r.request(d1a);
        // at decoder block 1: the encoder's expert waits for the next prompt
        assert_eq!(r.victim(None), Some(enc));
        r.remove(enc);
        // block 3 comes next and always picks d3; of block 1's, b is the less likely
        assert_eq!(r.victim(None), Some(d1b));
        r.remove(d1b);
        assert_eq!(r.victim(None), Some(d1a));
    }

    #[test]
    fn names_round_trip() {
        for policy in Policy::ALL {
            assert_eq!(policy.to_string().parse::<Policy>(), Ok(policy));
        }
        assert!(
            "mru"
                .parse::<Policy>()
                .unwrap_err()
                .contains("unknown cache policy")
        );
    }
}
