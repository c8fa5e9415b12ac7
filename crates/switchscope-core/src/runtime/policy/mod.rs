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
//!   the future, counted in requests. A decoder expert: the pass's order says when its layer
//!   comes back (as least-stale knows), and how often the layer picked it (its ageing LFU count,
//!   over the layer's) gives the chance `p` that a visit picks it, so its next use is expected
//!   `distance + (1/p − 1) × decoder layers` requests away (plus the next prompt's encoder pass
//!   when that is beyond the decode's expected end). An encoder expert of a layer the pass has
//!   left: the rest of the decode (as long as earlier prompts' decodes that got this far went
//!   on) plus the encoder requests before its layer, divided by the chance that the next prompt
//!   asks for it (the share of recent prompts that did). So an encoder expert outlives a rarely
//!   picked decoder expert when the decode is short or the budget has room, and goes first when
//!   the decoder's experts are all in use ([`prompts`]).
//! - **+ pre-gate pins** (any of the above): an expert that pre-gating predicted for the next
//!   sparse layer, and that has not been asked for since, is not evicted (unless every
//!   candidate is pinned). Only this engine knows those predictions. The store pre-gates for
//!   pins only when it has a budget (without one nothing is evicted).
//!
//! Every policy also keeps what the layer being computed still needs: a sparse layer names all
//! the experts its tokens were routed to before it asks for them one by one
//! ([`Residency::needed`]), and none of those is evicted to make room for another (unless
//! nothing else is left).

mod prompts;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use switchscope_wire::{ExpertId, Stack};

use self::prompts::Prompts;

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

/// The store's default: next-use with pre-gate pins, the best of [`Policy::ALL`] over the
/// session traces `switchscope bench shards` replays (its mean share of the optimum's hits
/// over the models and budgets; docs/BENCHMARKS.md §3).
impl Default for Policy {
    fn default() -> Self {
        Self::NEXT_USE.pinned()
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
    /// A sparse layer's tokens were routed to these experts: it asks for each next, in order.
    Layer(Vec<ExpertId>),
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
    /// The experts the layer being computed has still to ask for.
    needed: HashSet<ExpertId>,
    tick: u64,
    /// The last expert asked for: where the forward pass is.
    at: Option<ExpertId>,
    prompts: Prompts,
    /// Told in advance: how often this prompt's decode asks for each decoder expert (the
    /// yardstick `crate::eval::cache::told`, not a policy).
    told: Option<HashMap<ExpertId, u32>>,
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
        let first_decoder = layers.iter().copied().find(|(s, _)| *s == Stack::Decoder);
        let encoder = layers
            .iter()
            .filter(|(s, _)| *s == Stack::Encoder)
            .map(|&l| (l, layer_experts[&l]))
            .collect();
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
            needed: HashSet::new(),
            tick: 0,
            at: None,
            prompts: Prompts::new(encoder, first_decoder),
            told: None,
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
        self.needed.remove(&id);
        self.prompts.request(id, self.at);
        self.at = Some(id);
    }

    /// Tells the next-use estimate how often the decode of the prompt now beginning will ask
    /// for each decoder expert: what no policy can know, for the yardstick that measures what
    /// knowing it would be worth.
    pub fn tell_decode(&mut self, counts: HashMap<ExpertId, u32>) {
        self.told = Some(counts);
    }

    /// The layer being computed asks for `ids` next (replacing what an earlier layer needed):
    /// none of them is evicted for another until it has been asked for.
    pub fn needed(&mut self, ids: &[ExpertId]) {
        self.needed.clear();
        self.needed.extend(ids.iter().copied());
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

    /// The resident expert to evict next, other than `keep`: one the layer being computed does
    /// not need and (with pins) pre-gating did not predict, else one it does not need, else any.
    pub fn victim(&self, keep: Option<ExpertId>) -> Option<ExpertId> {
        let candidates = || self.resident.iter().copied().filter(|&id| Some(id) != keep);
        let unneeded = || candidates().filter(|id| !self.needed.contains(id));
        let unpinned =
            unneeded().filter(|id| !self.policy.pin_predicted || !self.pinned.contains(id));
        let best = |ids: &mut dyn Iterator<Item = ExpertId>| {
            ids.max_by(|&a, &b| {
                self.badness(a)
                    .partial_cmp(&self.badness(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
                    // a stable order among equals: the lower id goes first
                    .then_with(|| key(b).cmp(&key(a)))
            })
        };
        best(&mut unpinned.into_iter())
            .or_else(|| best(&mut unneeded()))
            .or_else(|| best(&mut candidates()))
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
            Order::NextUse => (self.next_use(id, -rarity), 0.0, age),
        }
    }

    /// How many requests away `id`'s next request is expected (`uses`: its ageing LFU count).
    fn next_use(&self, id: ExpertId, uses: f64) -> f64 {
        let prompts = &self.prompts;
        let per_token = self.decoder_layers.max(1) as f64;
        let rank = |stack, block| self.rank.get(&(stack, block)).copied().unwrap_or(0) as f64;
        // the pass visits the encoder's sparse layers first: the decoder's first has this rank
        let first_decoder = (self.rank.len() - self.decoder_layers) as f64;
        // requests left before the next prompt's encoder pass (while decoding), or before this
        // prompt's decode (while encoding)
        let encoder_left = (prompts.encoder_requests(None) - prompts.encoder_done()).max(0.0);
        let (decoding, rest) = match self.at {
            Some(at) if at.stack == Stack::Decoder => {
                let into_token = rank(at.stack, at.block) - first_decoder + 1.0;
                (
                    true,
                    (prompts.remaining_tokens() * per_token - into_token).max(0.0),
                )
            }
            _ => (false, encoder_left + prompts.expected_tokens() * per_token),
        };
        if id.stack == Stack::Encoder {
            let q = prompts.reuse_chance(id);
            let ahead = !decoding
                && self
                    .at
                    .is_some_and(|at| rank(id.stack, id.block) > rank(at.stack, at.block));
            return if ahead {
                // still to come in this pass
                1.0 / q
            } else {
                (rest + prompts.encoder_requests(Some((id.stack, id.block)))) / q
            };
        }
        let p = self.chance(id, uses);
        let d = if decoding {
            self.distance(id) as f64
        } else {
            encoder_left + rank(id.stack, id.block) - first_decoder + 1.0
        };
        let expected = d + (1.0 / p - 1.0) * per_token;
        if decoding && expected > rest {
            // beyond this decode: the next prompt's encoder pass comes first
            expected + prompts.encoder_requests(None)
        } else {
            expected
        }
    }

    /// The chance that a visit to `id`'s layer picks it: its weighted requests over its layer's
    /// (`uses`, aged to now), smoothed so that an expert never asked for is not impossible.
    fn chance(&self, id: ExpertId, uses: f64) -> f64 {
        let layer = (id.stack, id.block);
        if let Some(told) = self.told.as_ref().filter(|_| id.stack == Stack::Decoder) {
            // its share of its layer's requests in this decode, barely smoothed
            let n = self.layer_experts.get(&layer).copied().unwrap_or(1).max(1) as f64;
            let total: u32 = told
                .iter()
                .filter(|(e, _)| (e.stack, e.block) == layer)
                .map(|(_, c)| c)
                .sum();
            let own = told.get(&id).copied().unwrap_or(0);
            return (f64::from(own) + TOLD_PRIOR / n) / (f64::from(total) + TOLD_PRIOR);
        }
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

/// Requests spread over a layer's experts when the decode's counts are told.
const TOLD_PRIOR: f64 = 0.25;

/// [`Residency::distance`] of a layer that only the next prompt reaches (plus its rank).
const NEXT_PROMPT: usize = 1 << 20;

fn decay(age: u64, half_life: f64) -> f64 {
    0.5f64.powf(age as f64 / half_life)
}

fn key(id: ExpertId) -> (bool, usize, usize) {
    (id.stack == Stack::Decoder, id.block, id.expert)
}

#[cfg(test)]
mod tests;
