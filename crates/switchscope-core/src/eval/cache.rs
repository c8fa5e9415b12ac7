//! The expert cache against its limit: a store's request trace ([`Access`], recorded with
//! `StoreOptions::record_trace`) replayed offline under each [`Policy`], under Belady's optimal
//! policy (evict the expert whose next use is farthest away: it needs the future, so it is a
//! bound, not a policy), and with pre-gating prefetch.
//!
//! Budgets are counted in experts (`slots`): every expert of a model has the same shape, so a
//! share of expert bytes is a share of experts. A requested expert is always brought in (the
//! layer computes with it), as in the store.

use std::collections::{HashMap, HashSet};

use switchscope_wire::{ExpertId, Stack};

use crate::runtime::policy::{Access, Policy, Residency, pass_order};

/// How a budget of `slots` experts is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// One budget for every layer's experts.
    Shared(usize),
    /// The slots split evenly over the sparse layers (the first layers in a forward pass's
    /// order take the remainder), each layer evicting only its own experts. Every layer holds
    /// at least the expert it computes with, so with fewer slots than layers the layout uses
    /// more than its budget (`per_layer_fits` says whether it fits).
    PerLayer(usize),
}

/// Demand requests and how many were served by a resident expert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HitCount {
    pub requests: u64,
    pub hits: u64,
}

impl HitCount {
    /// Hits per request (0 when there were none).
    pub fn rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.hits as f64 / self.requests as f64
        }
    }
}

/// What pre-gating prefetch did on a trace under one budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefetchCount {
    /// Demand requests, hits on resident experts, and requests served by a prefetch.
    pub demand: HitCount,
    pub served_by_prefetch: u64,
    /// Experts fetched early (predicted, neither resident nor already fetched early).
    pub prefetched: u64,
    /// Experts fetched early that no request ever used.
    pub wasted: u64,
}

/// The demand requests in `trace`, in order.
pub fn demands(trace: &[Access]) -> Vec<ExpertId> {
    trace
        .iter()
        .filter_map(|a| match a {
            Access::Demand(id) => Some(*id),
            Access::Predicted(_) | Access::Layer(_) => None,
        })
        .collect()
}

fn layers(experts: &[ExpertId]) -> Vec<(Stack, usize)> {
    pass_order(experts.iter().copied())
}

/// Slots per layer when `slots` are split over `layers` (at least one each).
fn split(slots: usize, layers: usize) -> Vec<usize> {
    (0..layers)
        .map(|i| (slots / layers + usize::from(i < slots % layers)).max(1))
        .collect()
}

/// Whether [`Budget::PerLayer`] with `slots` gives every sparse layer of `experts` a slot.
pub fn per_layer_fits(slots: usize, experts: &[ExpertId]) -> bool {
    slots >= layers(experts).len()
}

/// One cache (a shared budget, or one layer's): its residency and its slots.
struct Cache {
    residency: Residency,
    slots: usize,
}

impl Cache {
    /// Brings `id` in, evicting down to the slots.
    fn admit(&mut self, id: ExpertId) {
        while self.residency.len() >= self.slots.max(1) {
            let Some(victim) = self.residency.victim(Some(id)) else {
                break;
            };
            self.residency.remove(victim);
        }
        if self.slots > 0 {
            self.residency.insert(id);
        }
    }
}

/// The caches for `budget`, and which cache each layer uses.
fn caches(
    policy: Policy,
    experts: &[ExpertId],
    budget: Budget,
) -> (Vec<Cache>, HashMap<(Stack, usize), usize>) {
    let layers = layers(experts);
    match budget {
        Budget::Shared(slots) => (
            vec![Cache {
                residency: Residency::new(policy, experts.iter().copied()),
                slots,
            }],
            layers.iter().map(|&l| (l, 0)).collect(),
        ),
        Budget::PerLayer(slots) => {
            let caches = split(slots, layers.len())
                .into_iter()
                .zip(&layers)
                .map(|(slots, &(stack, block))| Cache {
                    residency: Residency::new(
                        policy,
                        experts
                            .iter()
                            .copied()
                            .filter(|e| e.stack == stack && e.block == block),
                    ),
                    slots,
                })
                .collect();
            (
                caches,
                layers.iter().enumerate().map(|(i, &l)| (l, i)).collect(),
            )
        }
    }
}

/// `trace` replayed under `policy` with `budget` over a model whose experts are `experts`:
/// demand requests only (predictions reach the policy, for its pins, but fetch nothing).
pub fn replay(trace: &[Access], experts: &[ExpertId], policy: Policy, budget: Budget) -> HitCount {
    run(trace, experts, policy, budget, false, false).demand
}

/// A yardstick between the policies and the optimum: `trace` replayed under `next-use+pins`
/// told, as each prompt begins, how often its decode will ask for each decoder expert (which no
/// policy can know; the order of those requests stays unknown). What the next-use estimate
/// would hit if it knew each decode's experts.
pub fn told(trace: &[Access], experts: &[ExpertId], budget: Budget) -> HitCount {
    run(
        trace,
        experts,
        Policy::NEXT_USE.pinned(),
        budget,
        false,
        true,
    )
    .demand
}

/// Per demand request of `trace` that begins a prompt (an encoder request after a decoder
/// one, or the first), the counts of that prompt's decoder requests per expert.
fn decodes(trace: &[Access]) -> HashMap<usize, HashMap<ExpertId, u32>> {
    let mut out: HashMap<usize, HashMap<ExpertId, u32>> = HashMap::new();
    let mut start = None;
    let mut previous: Option<ExpertId> = None;
    for (i, id) in demands(trace).into_iter().enumerate() {
        if id.stack == Stack::Encoder && previous.is_none_or(|p| p.stack == Stack::Decoder) {
            start = Some(i);
            out.insert(i, HashMap::new());
        }
        if id.stack == Stack::Decoder
            && let Some(counts) = start.and_then(|s| out.get_mut(&s))
        {
            *counts.entry(id).or_insert(0) += 1;
        }
        previous = Some(id);
    }
    out
}

/// `trace` replayed under `policy` with `budget` and pre-gating prefetch: a predicted expert
/// that is not resident is fetched early and held beside the budget (as the store's source
/// holds it) until a request uses it, which then counts as served by the prefetch.
pub fn replay_prefetch(
    trace: &[Access],
    experts: &[ExpertId],
    policy: Policy,
    budget: Budget,
) -> PrefetchCount {
    run(trace, experts, policy, budget, true, false)
}

fn run(
    trace: &[Access],
    experts: &[ExpertId],
    policy: Policy,
    budget: Budget,
    prefetch: bool,
    tell: bool,
) -> PrefetchCount {
    let (mut caches, of_layer) = caches(policy, experts, budget);
    let mut decodes = if tell { decodes(trace) } else { HashMap::new() };
    let mut demand = 0;
    let mut held: HashSet<ExpertId> = HashSet::new();
    let mut count = PrefetchCount::default();
    for access in trace {
        match access {
            Access::Predicted(ids) => {
                for (c, cache) in caches.iter_mut().enumerate() {
                    let own: Vec<ExpertId> = ids
                        .iter()
                        .copied()
                        .filter(|id| of_layer.get(&(id.stack, id.block)) == Some(&c))
                        .collect();
                    if !own.is_empty() {
                        cache.residency.predicted(&own);
                    }
                }
                if prefetch {
                    for &id in ids {
                        let cache = &caches[of_layer[&(id.stack, id.block)]];
                        if !cache.residency.contains(id) && held.insert(id) {
                            count.prefetched += 1;
                        }
                    }
                }
            }
            Access::Layer(ids) => {
                if let Some(first) = ids.first() {
                    caches[of_layer[&(first.stack, first.block)]]
                        .residency
                        .needed(ids);
                }
            }
            Access::Demand(id) => {
                if let Some(counts) = decodes.remove(&demand) {
                    for cache in &mut caches {
                        cache.residency.tell_decode(counts.clone());
                    }
                }
                demand += 1;
                let cache = &mut caches[of_layer[&(id.stack, id.block)]];
                cache.residency.request(*id);
                count.demand.requests += 1;
                if cache.residency.contains(*id) {
                    count.demand.hits += 1;
                } else {
                    if held.remove(id) {
                        count.served_by_prefetch += 1;
                    }
                    cache.admit(*id);
                }
            }
        }
    }
    count.wasted = held.len() as u64;
    count
}

/// Belady's optimal policy on the demand requests of `trace` with `budget`: on a miss with no
/// room, evict the resident expert whose next request is farthest away (or never comes).
pub fn optimal(trace: &[Access], experts: &[ExpertId], budget: Budget) -> HitCount {
    let demands = demands(trace);
    let layers = layers(experts);
    match budget {
        Budget::Shared(slots) => belady(&demands, slots),
        Budget::PerLayer(slots) => {
            let mut total = HitCount::default();
            for (slots, (stack, block)) in split(slots, layers.len()).into_iter().zip(layers) {
                let own: Vec<ExpertId> = demands
                    .iter()
                    .copied()
                    .filter(|e| e.stack == stack && e.block == block)
                    .collect();
                let count = belady(&own, slots);
                total.requests += count.requests;
                total.hits += count.hits;
            }
            total
        }
    }
}

fn belady(demands: &[ExpertId], slots: usize) -> HitCount {
    // next[i]: the index of the next request for demands[i] after i (usize::MAX: none)
    let mut next = vec![usize::MAX; demands.len()];
    let mut later: HashMap<ExpertId, usize> = HashMap::new();
    for (i, id) in demands.iter().enumerate().rev() {
        next[i] = later.get(id).copied().unwrap_or(usize::MAX);
        later.insert(*id, i);
    }
    let mut resident: HashMap<ExpertId, usize> = HashMap::new();
    let mut count = HitCount::default();
    for (i, id) in demands.iter().enumerate() {
        count.requests += 1;
        if resident.contains_key(id) {
            count.hits += 1;
        } else if slots > 0 && resident.len() >= slots {
            let (&victim, _) = resident
                .iter()
                .max_by_key(|&(e, &n)| {
                    (
                        n,
                        std::cmp::Reverse((e.stack == Stack::Decoder, e.block, e.expert)),
                    )
                })
                .expect("a full cache is not empty");
            resident.remove(&victim);
        }
        if slots > 0 {
            resident.insert(*id, next[i]);
        }
    }
    count
}

/// Of the experts pre-gating predicted for a layer, the share that layer's next requests used:
/// (predicted, used).
pub fn prediction_accuracy(trace: &[Access]) -> (u64, u64) {
    let (mut predicted, mut used) = (0, 0);
    // the open prediction per layer, and which of its experts were asked for so far
    let mut open: HashMap<(Stack, usize), (Vec<ExpertId>, HashSet<ExpertId>)> = HashMap::new();
    let mut close = |entry: (Vec<ExpertId>, HashSet<ExpertId>)| {
        predicted += entry.0.len() as u64;
        used += entry.0.iter().filter(|id| entry.1.contains(id)).count() as u64;
    };
    let mut last_layer: Option<(Stack, usize)> = None;
    for access in trace {
        match access {
            Access::Predicted(ids) => {
                if let Some(first) = ids.first() {
                    let layer = (first.stack, first.block);
                    if let Some(entry) = open.remove(&layer) {
                        close(entry);
                    }
                    open.insert(layer, (ids.clone(), HashSet::new()));
                }
            }
            Access::Demand(id) => {
                let layer = (id.stack, id.block);
                // a prediction covers its layer's next visit only: it closes when the pass moves
                // on from that layer
                if let Some(prev) = last_layer.filter(|&p| p != layer)
                    && open.get(&prev).is_some_and(|(_, seen)| !seen.is_empty())
                    && let Some(entry) = open.remove(&prev)
                {
                    close(entry);
                }
                if let Some((_, seen)) = open.get_mut(&layer) {
                    seen.insert(*id);
                }
                last_layer = Some(layer);
            }
            Access::Layer(_) => {}
        }
    }
    for (_, entry) in open {
        close(entry);
    }
    (predicted, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(block: usize, expert: usize) -> ExpertId {
        ExpertId {
            stack: Stack::Decoder,
            block,
            expert,
        }
    }

    fn model() -> Vec<ExpertId> {
        [1, 3]
            .into_iter()
            .flat_map(|b| (0..4).map(move |e| dec(b, e)))
            .collect()
    }

    fn trace(ids: &[ExpertId]) -> Vec<Access> {
        ids.iter().map(|&id| Access::Demand(id)).collect()
    }

    #[test]
    fn belady_beats_lru_on_a_cycle_and_is_exact() {
        let (a, b, c) = (dec(1, 0), dec(1, 1), dec(1, 2));
        let t = trace(&[a, b, c, a, b, c]);
        let experts = model();
        assert_eq!(
            optimal(&t, &experts, Budget::Shared(2)),
            HitCount {
                requests: 6,
                hits: 2
            }
        );
        assert_eq!(replay(&t, &experts, Policy::LRU, Budget::Shared(2)).hits, 0);
        assert_eq!(optimal(&t, &experts, Budget::Shared(3)).hits, 3);
        assert_eq!(optimal(&t, &experts, Budget::Shared(0)).hits, 0);
    }

    #[test]
    fn no_policy_beats_the_optimum() {
        // a pseudo-random decode over two layers
        let mut x = 7u64;
        let mut ids = Vec::new();
        for _ in 0..200 {
            for block in [1, 3] {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ids.push(dec(block, ((x >> 33) % 4) as usize));
            }
        }
        let t = trace(&ids);
        let experts = model();
        for slots in [1, 2, 4, 6] {
            for budget in [Budget::Shared(slots), Budget::PerLayer(slots.max(2))] {
                let slots = match budget {
                    Budget::Shared(s) | Budget::PerLayer(s) => s,
                };
                let best = optimal(&t, &experts, Budget::Shared(slots)).hits;
                for policy in Policy::ALL {
                    let got = replay(&t, &experts, policy, budget).hits;
                    assert!(got <= best, "{policy} {budget:?}: {got} > {best}");
                }
                let got = told(&t, &experts, budget).hits;
                assert!(got <= best, "told {budget:?}: {got} > {best}");
            }
        }
    }

    #[test]
    fn each_prompts_decode_is_counted_where_it_begins() {
        let enc = ExpertId {
            stack: Stack::Encoder,
            block: 1,
            expert: 0,
        };
        let (a, b) = (dec(1, 0), dec(3, 1));
        let t = trace(&[enc, a, b, a, enc, enc, b]);
        let counts = decodes(&t);
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[&0], HashMap::from([(a, 2), (b, 1)]));
        assert_eq!(
            counts[&4],
            HashMap::from([(b, 1)]),
            "one prompt, two encoder requests"
        );
    }

    #[test]
    fn per_layer_budgets_split_the_slots() {
        assert_eq!(split(6, 4), vec![2, 2, 1, 1]);
        assert_eq!(
            split(3, 4),
            vec![1, 1, 1, 1],
            "a layer holds the expert it runs"
        );
        assert!(!per_layer_fits(1, &model()) && per_layer_fits(2, &model()));
        assert_eq!(split(8, 4), vec![2, 2, 2, 2]);
        // two layers alternating, one expert each: one slot per layer hits every repeat, one
        // shared slot never does
        let t = trace(&[dec(1, 0), dec(3, 0), dec(1, 0), dec(3, 0)]);
        let experts = model();
        assert_eq!(
            replay(&t, &experts, Policy::LRU, Budget::PerLayer(2)).hits,
            2
        );
        assert_eq!(replay(&t, &experts, Policy::LRU, Budget::Shared(1)).hits, 0);
        assert_eq!(optimal(&t, &experts, Budget::PerLayer(2)).hits, 2);
    }

    #[test]
    fn prefetch_is_counted_apart_from_hits() {
        let (a, b) = (dec(3, 0), dec(3, 1));
        let t = vec![
            Access::Demand(dec(1, 0)),
            Access::Predicted(vec![a]),
            Access::Demand(a),
            Access::Demand(dec(1, 0)),
            Access::Predicted(vec![b]),
            Access::Demand(a),
        ];
        let experts = model();
        let count = replay_prefetch(&t, &experts, Policy::LRU, Budget::Shared(4));
        assert_eq!(count.demand.requests, 4);
        assert_eq!(count.demand.hits, 2, "dec(1, 0) and a again");
        assert_eq!(count.served_by_prefetch, 1, "a, the first time");
        assert_eq!((count.prefetched, count.wasted), (2, 1), "b never used");
        assert_eq!(replay(&t, &experts, Policy::LRU, Budget::Shared(4)).hits, 2);
        // a was predicted and used; b was predicted and the layer's next visit used a
        assert_eq!(prediction_accuracy(&t), (2, 1));
    }
}
