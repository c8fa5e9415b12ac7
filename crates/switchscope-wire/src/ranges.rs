//! How a checkpoint read in place names the bytes of one expert or of its dense tensors.
//!
//! A converted model stores each expert in a shard file of its own. A Hugging Face checkpoint
//! read over HTTP has no such files: an expert is one or more byte ranges of the checkpoint's
//! files, and the store names it after them, `{file}/{start}-{end}` (end exclusive), ranges
//! joined by `_`; the dense tensors are `{file}/dense`. The page's shard panel turns the name back
//! into words.

/// The name of the byte ranges `(file, start, end)`, `end` exclusive.
pub fn range_name<'a>(ranges: impl IntoIterator<Item = (&'a str, u64, u64)>) -> String {
    ranges
        .into_iter()
        .map(|(file, start, end)| format!("{file}/{start}-{end}"))
        .collect::<Vec<_>>()
        .join("_")
}

/// The name of a checkpoint's dense tensors, after its first file.
pub fn dense_name(file: &str) -> String {
    format!("{file}/dense")
}

/// The byte ranges a [`range_name`] names, or `None` when `name` is not one (a shard file).
///
/// File names may hold `_` (`pytorch_model.bin`); a range (`digits-digits`) cannot, so the
/// first `_` after a range starts the next file's name.
pub fn parse_range_name(name: &str) -> Option<Vec<(String, u64, u64)>> {
    let mut parts = name.split('/');
    let mut file = parts.next()?.to_owned();
    let mut out = Vec::new();
    let mut rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        return None;
    }
    let last = rest.pop()?;
    let range = |s: &str| -> Option<(u64, u64)> {
        let (a, b) = s.split_once('-')?;
        let (a, b) = (a.parse().ok()?, b.parse().ok()?);
        (a < b).then_some((a, b))
    };
    for part in rest {
        let (r, next) = part.split_once('_')?;
        let (a, b) = range(r)?;
        out.push((file, a, b));
        file = next.to_owned();
    }
    let (a, b) = range(last)?;
    if file.is_empty() {
        return None;
    }
    out.push((file, a, b));
    Some(out)
}

/// Words for a store name: the byte ranges of a checkpoint file ("model.safetensors bytes
/// 100–199"), its dense tensors, or the shard file's name as it is.
pub fn describe(name: &str) -> String {
    if let Some(file) = name.strip_suffix("/dense") {
        return format!("{file}: the dense tensors");
    }
    match parse_range_name(name) {
        Some(ranges) => ranges
            .iter()
            .map(|(file, a, b)| format!("{file} bytes {a}–{}", b - 1))
            .collect::<Vec<_>>()
            .join(", "),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let ranges = [
            ("pytorch_model.bin", 100, 200),
            ("model-00002-of-00002.safetensors", 5, 9),
        ];
        let name = range_name(ranges);
        assert_eq!(
            name,
            "pytorch_model.bin/100-200_model-00002-of-00002.safetensors/5-9"
        );
        let parsed = parse_range_name(&name).unwrap();
        let parsed: Vec<(&str, u64, u64)> = parsed
            .iter()
            .map(|(f, a, b)| (f.as_str(), *a, *b))
            .collect();
        assert_eq!(parsed, ranges);
        assert_eq!(
            describe(&name),
            "pytorch_model.bin bytes 100–199, model-00002-of-00002.safetensors bytes 5–8"
        );
    }

    #[test]
    fn other_names_stay_as_they_are() {
        assert_eq!(
            describe("model.safetensors/dense"),
            "model.safetensors: the dense tensors"
        );
        assert_eq!(
            describe(&dense_name("model.safetensors")),
            "model.safetensors: the dense tensors"
        );
        for shard in [
            "experts/encoder-1-3.bin",
            "dense.bin",
            "a/9-3",
            "a/x-3",
            "a/1-2_",
            "/1-2",
        ] {
            assert_eq!(parse_range_name(shard), None, "{shard}");
            assert_eq!(describe(shard), shard);
        }
    }
}
