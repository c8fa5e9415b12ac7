//! What a computation asked of the device: the counts behind the "host waits per token" figure.

use serde::{Deserialize, Serialize};

/// Work asked of the device over some span of a run (a generation's decode steps).
///
/// - A **dispatch** is one kernel launched (burn's and ours, zero fills and copies included);
///   none on the CPU backend.
/// - An **upload** is one host → device buffer created or written (weights, ids, masks).
/// - A **read-back** is one device → host read.
/// - A **host wait** is a read-back the host awaits before it can queue the next work: the
///   device idles until the host answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCounts {
    pub dispatches: u64,
    pub uploads: u64,
    pub upload_bytes: u64,
    pub readbacks: u64,
    pub host_waits: u64,
}

impl DeviceCounts {
    /// Each count divided by `steps` (0 for no steps).
    pub fn per(&self, steps: usize) -> PerStep {
        let per = |n: u64| {
            if steps == 0 {
                0.0
            } else {
                n as f64 / steps as f64
            }
        };
        PerStep {
            dispatches: per(self.dispatches),
            uploads: per(self.uploads),
            upload_bytes: per(self.upload_bytes),
            readbacks: per(self.readbacks),
            host_waits: per(self.host_waits),
        }
    }
}

/// [`DeviceCounts`] per step (per generated token).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PerStep {
    pub dispatches: f64,
    pub uploads: f64,
    pub upload_bytes: f64,
    pub readbacks: f64,
    pub host_waits: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_step_divides_and_survives_no_steps() {
        let c = DeviceCounts {
            dispatches: 90,
            uploads: 9,
            upload_bytes: 36,
            readbacks: 6,
            host_waits: 3,
        };
        let p = c.per(3);
        assert_eq!((p.dispatches, p.uploads, p.host_waits), (30.0, 3.0, 1.0));
        assert_eq!(c.per(0), PerStep::default());
    }
}
