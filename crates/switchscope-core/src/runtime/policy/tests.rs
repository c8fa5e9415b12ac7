//! The policies' choices on small hand-made traces.

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
fn a_layer_keeps_what_it_still_needs() {
    let (a, b, c, new) = (
        id(Stack::Encoder, 1, 0),
        id(Stack::Encoder, 1, 1),
        id(Stack::Encoder, 1, 2),
        id(Stack::Encoder, 1, 3),
    );
    // a is the least recent, but the layer asks for it after `new`
    let mut r = residency(Policy::LRU, &[a, b, c]);
    r.needed(&[new, a]);
    r.request(new);
    assert_eq!(r.victim(Some(new)), Some(b));
    let mut unaware = residency(Policy::LRU, &[a, b, c]);
    unaware.request(new);
    assert_eq!(unaware.victim(Some(new)), Some(a));
    r.remove(b);
    r.insert(new);
    r.needed(&[a, c]);
    assert_eq!(r.victim(None), Some(new), "the only one not needed");
    r.request(a);
    r.remove(new);
    assert_eq!(r.victim(None), Some(a), "asked for: no longer kept");
    r.insert(new);
    r.needed(&[a, c, new]);
    assert_eq!(
        r.victim(None),
        Some(c),
        "everything needed: the order decides"
    );
}

#[test]
fn next_use_keeps_an_encoder_expert_through_a_short_decode() {
    let (e1, e3) = (id(Stack::Encoder, 1, 0), id(Stack::Encoder, 3, 0));
    let (d1, d1_rare, d3) = (
        id(Stack::Decoder, 1, 0),
        id(Stack::Decoder, 1, 1),
        id(Stack::Decoder, 3, 0),
    );
    // four prompts asking for the same two encoder experts, whose decodes last 3, 2, 2
    // tokens; the first once picked d1_rare; the fourth has decoded one token
    let mut trace = vec![e1, e3, d1, d3, d1, d3, d1_rare, d3];
    for _ in 0..2 {
        trace.extend([e1, e3, d1, d3, d1, d3]);
    }
    trace.extend([e1, e3, d1, d3]);
    let order = |policy| residency(policy, &trace).eviction_order();
    let next_use = order(Policy::NEXT_USE);
    assert_eq!(next_use[0], d1_rare);
    // the decode is nearly over: the decoder's experts go before the encoder's, which the
    // next prompt asks for in a request or two
    assert_eq!(&next_use[3..], &[e3, e1]);
    // stale-then-LFU gives the encoder's up first
    assert_eq!(order(Policy::STALE_LFU)[0].stack, Stack::Encoder);
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
