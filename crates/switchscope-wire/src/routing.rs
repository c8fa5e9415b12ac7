//! What the routers did: per sparse layer and sequence, the expert each token went to.

use serde::{Deserialize, Serialize};

/// Which stack a block belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stack {
    Encoder,
    Decoder,
}

impl Stack {
    /// `encoder` or `decoder`, as in the checkpoint keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Encoder => "encoder",
            Self::Decoder => "decoder",
        }
    }
}

/// One expert of one sparse layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExpertId {
    pub stack: Stack,
    pub block: usize,
    pub expert: usize,
}

/// What the router did with one sequence in one sparse layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRouting {
    pub stack: Stack,
    pub block: usize,
    /// Per token: the expert that processed it, or −1 when capacity dropped it.
    pub expert: Vec<i32>,
    /// Per token: the expert the router chose (argmax), dropped or not.
    pub chosen: Vec<u32>,
    /// Per token: the router probability of the chosen expert (the output's scale).
    pub weight: Vec<f32>,
    /// Per token: the router's probabilities over all experts.
    pub probs: Vec<Vec<f32>>,
    /// Tokens each expert could take in this sequence.
    pub capacity: usize,
}

impl LayerRouting {
    /// Whether token `t` was dropped by expert capacity.
    pub fn dropped(&self, t: usize) -> bool {
        self.expert[t] < 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_json_names_the_stack_in_lowercase_and_keeps_every_field() {
        let r = LayerRouting {
            stack: Stack::Decoder,
            block: 3,
            expert: vec![1, -1],
            chosen: vec![1, 1],
            weight: vec![0.5, 0.75],
            probs: vec![vec![0.5, 0.5], vec![0.25, 0.75]],
            capacity: 1,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"stack":"decoder","block":3,"expert":[1,-1],"chosen":[1,1],"weight":[0.5,0.75],"probs":[[0.5,0.5],[0.25,0.75]],"capacity":1}"#
        );
        assert_eq!(serde_json::from_str::<LayerRouting>(&json).unwrap(), r);
        assert!(r.dropped(1) && !r.dropped(0));
    }
}
