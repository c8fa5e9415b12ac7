//! `manifest.json` as a loader reads it: arbitrary text into `Manifest::from_json`, and, when
//! that accepts it, what the web worker and `ConvertedDir::open` do next with the result
//! (total size, expert and file look-ups, the dense tensor table). Errors are fine; a panic,
//! a hang or an absurd allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchscope_core::formats::converted::dense_shapes;
use switchscope_core::formats::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(manifest) = Manifest::from_json(&text) else {
        return;
    };
    let _ = manifest.total_bytes();
    for e in &manifest.experts {
        assert!(manifest.expert(e.stack, e.block, e.expert).is_some());
        assert!(
            manifest.file(&e.file).is_some(),
            "validated: every expert file is listed"
        );
    }
    let _ = dense_shapes(&manifest);
});
