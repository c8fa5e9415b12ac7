//! How the next token is picked.

use serde::{Deserialize, Serialize};

/// How the next token is picked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Sampling {
    /// The most probable token (ties → lowest id).
    Greedy,
    /// Sampling after temperature, then top-k, then top-p (nucleus) filtering.
    Sample {
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        seed: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_json_is_tagged_by_mode() {
        let sample = Sampling::Sample {
            temperature: 0.5,
            top_k: Some(5),
            top_p: None,
            seed: 9,
        };
        let json = serde_json::to_string(&sample).unwrap();
        assert_eq!(
            json,
            r#"{"mode":"sample","temperature":0.5,"top_k":5,"top_p":null,"seed":9}"#
        );
        assert_eq!(serde_json::from_str::<Sampling>(&json).unwrap(), sample);
        let greedy = serde_json::to_string(&Sampling::Greedy).unwrap();
        assert_eq!(greedy, r#"{"mode":"greedy"}"#);
    }
}
