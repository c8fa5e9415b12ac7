//! Input limits shared by every front end.

/// The longest input the front ends pass to the model, in tokens: what switch-base was trained
/// on (relative position buckets do not limit the length, but attention cost grows with its
/// square and nothing longer was ever seen in training).
pub const MAX_INPUT_TOKENS: usize = 512;

/// Cuts `ids` to at most `max` tokens, keeping a final `eos` where the input ended with one.
/// Returns the original length when it cut.
pub fn fit_input(ids: &mut Vec<u32>, max: usize, eos: u32) -> Option<usize> {
    let before = ids.len();
    if before <= max || max == 0 {
        return None;
    }
    let ends_with_eos = ids.last() == Some(&eos);
    ids.truncate(max);
    if ends_with_eos {
        ids[max - 1] = eos;
    }
    Some(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_inputs_are_cut_keeping_the_end_of_sequence() {
        let mut ids: Vec<u32> = (2..10).chain([1]).collect();
        assert_eq!(fit_input(&mut ids, 4, 1), Some(9));
        assert_eq!(ids, [2, 3, 4, 1]);
        let mut ids = vec![5, 6, 7];
        assert_eq!(fit_input(&mut ids, 2, 1), Some(3));
        assert_eq!(ids, [5, 6], "no end-of-sequence is invented");
        let mut ids = vec![5, 1];
        assert_eq!(fit_input(&mut ids, 2, 1), None);
        assert_eq!(ids, [5, 1]);
    }
}
