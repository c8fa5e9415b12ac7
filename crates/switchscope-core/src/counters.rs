//! What a computation asks of the device, counted on the thread that asks: kernel dispatches,
//! uploads, read-backs and host waits ([`Counts`] defines them).
//!
//! A [`Tally`] counts from [`Tally::start`] to [`Tally::finish`]; tallies nest (each event
//! counts in every open tally of its thread) and threads do not mix (parallel tests, a worker
//! thread). The events are reported where they happen: [`crate::backend::read_f32`] (a
//! read-back the host awaits), the model's uploads, and, on a GPU, every kernel launch through
//! CubeCL's launch observer (installed once per process by [`crate::backend::gpu_device`]).
//! Outside a tally an event costs one thread-local lookup.
//!
//! On wasm the worker has one thread: a tally open across an `await` also counts what other
//! tasks of that thread ask of the device meanwhile (the worker runs one request at a time).

use std::cell::RefCell;

pub use switchscope_wire::DeviceCounts as Counts;

thread_local! {
    /// The open tallies of this thread: (id, counts so far).
    static OPEN: RefCell<Vec<(u64, Counts)>> = const { RefCell::new(Vec::new()) };
    static NEXT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts device work on this thread until [`finish`](Self::finish) (or drop).
#[derive(Debug)]
#[must_use = "a tally counts until it is finished"]
pub struct Tally {
    id: u64,
}

impl Tally {
    /// Starts counting.
    pub fn start() -> Self {
        let id = NEXT.with(|n| {
            let id = n.get();
            n.set(id + 1);
            id
        });
        OPEN.with(|open| open.borrow_mut().push((id, Counts::default())));
        Self { id }
    }

    /// What was counted so far, without stopping.
    pub fn peek(&self) -> Counts {
        OPEN.with(|open| {
            open.borrow()
                .iter()
                .find(|(id, _)| *id == self.id)
                .map(|(_, c)| *c)
                .unwrap_or_default()
        })
    }

    /// Stops counting and returns the counts (zero if this thread never saw the tally open).
    pub fn finish(self) -> Counts {
        let counts = self.peek();
        drop(self);
        counts
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let _ = OPEN.try_with(|open| open.borrow_mut().retain(|(id, _)| *id != self.id));
    }
}

fn count(add: impl Fn(&mut Counts)) {
    let _ = OPEN.try_with(|open| {
        if let Ok(mut open) = open.try_borrow_mut() {
            open.iter_mut().for_each(|(_, c)| add(c));
        }
    });
}

/// One kernel launched.
pub fn dispatch() {
    count(|c| c.dispatches += 1);
}

/// One kernel launched, by name (as the kernel names itself): counted like [`dispatch`], and by
/// name while [`Kernels`] is collecting on this thread.
pub fn dispatch_named(kernel: &'static str) {
    dispatch();
    let _ = KERNELS.try_with(|k| {
        if let Ok(mut k) = k.try_borrow_mut()
            && let Some(names) = k.as_mut()
        {
            *names.entry(kernel).or_default() += 1;
        }
    });
}

thread_local! {
    /// Kernels launched by name, while a [`Kernels`] collects.
    static KERNELS: RefCell<Option<std::collections::BTreeMap<&'static str, u64>>> =
        const { RefCell::new(None) };
}

/// Collects the kernels launched on this thread by name, until [`Kernels::finish`] (to see where
/// a step's dispatches go). One at a time per thread.
#[derive(Debug)]
#[must_use = "kernels are collected until finished"]
pub struct Kernels(());

impl Kernels {
    /// Starts collecting (a collection already running on this thread starts over).
    pub fn start() -> Self {
        KERNELS.with(|k| *k.borrow_mut() = Some(std::collections::BTreeMap::new()));
        Self(())
    }

    /// Stops and returns each kernel's launches, most launched first.
    pub fn finish(self) -> Vec<(&'static str, u64)> {
        let names = KERNELS.with(|k| k.borrow_mut().take()).unwrap_or_default();
        let mut names: Vec<_> = names.into_iter().collect();
        names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        names
    }
}

/// One buffer of `bytes` created or written from the host.
pub fn upload(bytes: usize) {
    count(|c| {
        c.uploads += 1;
        c.upload_bytes += bytes as u64;
    });
}

/// One read-back the host does not wait for (its result is consumed while the device has more
/// work queued).
pub fn readback() {
    count(|c| c.readbacks += 1);
}

/// One read-back the host waits for before it can queue more work.
pub fn host_wait() {
    count(|c| {
        c.readbacks += 1;
        c.host_waits += 1;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_nest_and_count_only_while_open() {
        dispatch();
        let outer = Tally::start();
        dispatch();
        let inner = Tally::start();
        upload(12);
        host_wait();
        let inner = inner.finish();
        readback();
        let outer = outer.finish();
        dispatch();
        assert_eq!(
            inner,
            Counts {
                uploads: 1,
                upload_bytes: 12,
                readbacks: 1,
                host_waits: 1,
                ..Counts::default()
            }
        );
        assert_eq!(
            outer,
            Counts {
                dispatches: 1,
                uploads: 1,
                upload_bytes: 12,
                readbacks: 2,
                host_waits: 1,
            }
        );
    }

    #[test]
    fn threads_do_not_mix() {
        let tally = Tally::start();
        std::thread::spawn(|| {
            let other = Tally::start();
            dispatch();
            host_wait();
            assert_eq!(other.finish().dispatches, 1);
        })
        .join()
        .unwrap();
        dispatch();
        let counts = tally.finish();
        assert_eq!((counts.dispatches, counts.host_waits), (1, 0));
    }

    #[test]
    fn kernels_are_collected_by_name_only_while_asked() {
        dispatch_named("before");
        let tally = Tally::start();
        let kernels = Kernels::start();
        dispatch_named("matmul");
        dispatch_named("add");
        dispatch_named("matmul");
        let names = kernels.finish();
        dispatch_named("after");
        assert_eq!(names, [("matmul", 2), ("add", 1)]);
        assert_eq!(tally.finish().dispatches, 4);
    }

    #[test]
    fn a_dropped_tally_stops_counting() {
        let kept = Tally::start();
        drop(Tally::start());
        upload(4);
        assert_eq!(kept.finish().uploads, 1);
        OPEN.with(|open| assert!(open.borrow().is_empty()));
    }
}
