//! A worker's memory budget (`--memory-budget`): a byte semaphore the engine
//! threads take their images' memory from. Before decoding, the engine
//! estimates from the image header what the image will need (see
//! `engine.rs`); an image that alone needs more than the budget's
//! capacity fails with a reason, and the others wait until enough of the
//! budget is free, so the images in flight together stay within it.
//!
//! Reading the input is admitted too, before a byte of it is read: the
//! file's size (from its metadata, the master's listing or the object
//! store) is taken with [`MemoryBudget::acquire_input`], and once the header
//! is decoded the same permit grows to the image's whole estimate
//! ([`MemoryBudget::grow`]). An input larger than the capacity fails
//! without being read. Only one engine thread at a time holds such a
//! partial (input-only) permit: the others hold either nothing or a whole
//! image's share, which they give back without waiting for anything, so
//! the growing thread always gets its share eventually and no two threads
//! can each hold an input while waiting for the other's memory.
//!
//! The budget covers the whole process: a fixed [`BASE_RESERVE`] (runtime,
//! gRPC buffers, prefetched leases, queued output chunks) and, per engine
//! thread, [`RETAIN_PER_THREAD`] of buffers an engine keeps between images
//! are set aside first; the rest is the capacity images are admitted against.
use std::sync::{Arc, Condvar, Mutex};

/// Part of the budget set aside for the process itself: the async runtime
/// and gRPC buffers, stream-mode leases held with their inline inputs
/// (`--prefetch` × `limits::LEASE_INLINE_MAX`), and output chunks queued
/// for sending (32 MiB at most).
pub const BASE_RESERVE: u64 = 128 << 20;

/// Buffers an engine keeps from one image to the next (reusing them saves
/// page faults on small images); above this they are freed after the image.
pub const RETAIN_PER_THREAD: u64 = 32 << 20;

/// Default budget in MiB: 256 MiB for the process plus 2 GiB per engine
/// thread. At the default, an 8-bit RGB image of the default `--max-pixels`
/// (100 megapixels) fits one thread; bigger 16-bit or alpha ones need more.
pub fn default_mib(threads: usize) -> u64 {
    256 + 2048 * threads.max(1) as u64
}

/// The smallest budget accepted for `threads` engine threads, in MiB: the
/// reserves plus 64 MiB for images.
pub fn min_mib(threads: usize) -> u64 {
    ((BASE_RESERVE + RETAIN_PER_THREAD * threads.max(1) as u64) >> 20) + 64
}

/// A budget too small for its reserves.
#[derive(Debug, thiserror::Error)]
#[error(
    "--memory-budget {mib} MiB is too small for {threads} engine thread(s): at least {min} MiB"
)]
pub struct BudgetTooSmall {
    /// The budget asked for.
    pub mib: u64,
    /// Engine threads.
    pub threads: usize,
    /// The smallest accepted.
    pub min: u64,
}

/// The byte semaphore. Shared by a worker's engine threads (`Arc`).
#[derive(Debug)]
pub struct MemoryBudget {
    /// The budget as configured, bytes.
    total: u64,
    /// Bytes images are admitted against.
    capacity: u64,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes held by permits.
    used: u64,
    /// A permit holds an input's bytes only (not yet grown to its image's
    /// estimate); at most one does at a time.
    reading: bool,
}

/// Bytes of a [`MemoryBudget`] held by one image; given back on drop.
#[derive(Debug)]
pub struct Permit {
    budget: Arc<MemoryBudget>,
    bytes: u64,
    /// Holds the budget's single input-only slot (see the module docs).
    input: bool,
}

impl MemoryBudget {
    /// A budget of `mib` MiB for a process with `threads` engine threads.
    pub fn new(mib: u64, threads: usize) -> Result<Arc<MemoryBudget>, BudgetTooSmall> {
        let min = min_mib(threads);
        if mib < min {
            return Err(BudgetTooSmall { mib, threads, min });
        }
        let total = mib << 20;
        let reserve = BASE_RESERVE + RETAIN_PER_THREAD * threads.max(1) as u64;
        Ok(Arc::new(MemoryBudget {
            total,
            capacity: total - reserve,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        }))
    }

    /// The budget as configured, in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes images are admitted against (the budget minus the reserves):
    /// an image that needs more fails.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes held by images now.
    pub fn in_use(&self) -> u64 {
        self.lock().used
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, g: std::sync::MutexGuard<'a, State>) -> std::sync::MutexGuard<'a, State> {
        self.freed.wait(g).unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `bytes`, waiting until that much is free. `None` when `bytes`
    /// exceeds the capacity (it would never be free).
    pub fn acquire(self: &Arc<Self>, bytes: u64) -> Option<Permit> {
        if bytes > self.capacity {
            return None;
        }
        let mut st = self.lock();
        while st.used + bytes > self.capacity {
            st = self.wait(st);
        }
        st.used += bytes;
        Some(Permit {
            budget: Arc::clone(self),
            bytes,
            input: false,
        })
    }

    /// Takes `bytes` for an input about to be read, waiting until that much
    /// is free and no other input-only permit is out. `None` when `bytes`
    /// exceeds the capacity. Grow the permit with [`MemoryBudget::grow`]
    /// once the image's estimate is known (or drop it).
    pub fn acquire_input(self: &Arc<Self>, bytes: u64) -> Option<Permit> {
        if bytes > self.capacity {
            return None;
        }
        let mut st = self.lock();
        while st.reading || st.used + bytes > self.capacity {
            st = self.wait(st);
        }
        st.used += bytes;
        st.reading = true;
        Some(Permit {
            budget: Arc::clone(self),
            bytes,
            input: true,
        })
    }

    /// Grows (or shrinks) `permit` to `bytes` in all, waiting until the
    /// difference is free; an input-only permit becomes an image's whole
    /// share. `false` (the permit unchanged) when `bytes` exceeds the
    /// capacity.
    pub fn grow(&self, permit: &mut Permit, bytes: u64) -> bool {
        if bytes > self.capacity {
            return false;
        }
        let mut st = self.lock();
        while st.used - permit.bytes + bytes > self.capacity {
            st = self.wait(st);
        }
        st.used = st.used - permit.bytes + bytes;
        permit.bytes = bytes;
        if permit.input {
            permit.input = false;
            st.reading = false;
        }
        self.freed.notify_all();
        true
    }

    fn release(&self, bytes: u64, input: bool) {
        let mut st = self.lock();
        st.used = st.used.saturating_sub(bytes);
        if input {
            st.reading = false;
        }
        self.freed.notify_all();
    }
}

impl Permit {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True for an input-only permit not yet grown to its image's estimate.
    pub fn is_input(&self) -> bool {
        self.input
    }

    /// Moves up to `bytes` of this permit into a new one (e.g. for an
    /// output that outlives the engine's work on the image, such as an
    /// upload in flight).
    pub fn split(&mut self, bytes: u64) -> Permit {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Permit {
            budget: Arc::clone(&self.budget),
            bytes,
            input: false,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.release(self.bytes, self.input);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn too_small_budgets_are_refused() {
        assert!(MemoryBudget::new(min_mib(2) - 1, 2).is_err());
        let b = MemoryBudget::new(min_mib(2), 2).unwrap();
        assert_eq!(b.capacity(), 64 << 20);
        assert!(default_mib(1) >= min_mib(1));
    }

    #[test]
    fn more_than_the_capacity_is_never_admitted() {
        let b = MemoryBudget::new(512, 1).unwrap();
        assert!(b.acquire(b.capacity() + 1).is_none());
        let p = b.acquire(b.capacity()).unwrap();
        assert_eq!(b.in_use(), b.capacity());
        drop(p);
        assert_eq!(b.in_use(), 0);
    }

    /// Threads admitted together never hold more than the capacity, and a
    /// waiting one proceeds once enough is given back.
    #[test]
    fn concurrent_admissions_stay_within_the_capacity() {
        let b = MemoryBudget::new(min_mib(4), 4).unwrap();
        let cap = b.capacity();
        let peak = Arc::new(Mutex::new(0u64));
        std::thread::scope(|s| {
            for i in 0..4u64 {
                let (b, peak) = (Arc::clone(&b), Arc::clone(&peak));
                s.spawn(move || {
                    for k in 0..20u64 {
                        let want = cap / 3 + (i * 7 + k) % 5 * (cap / 10);
                        let p = b.acquire(want).unwrap();
                        {
                            let mut m = peak.lock().unwrap();
                            *m = (*m).max(b.in_use());
                        }
                        std::thread::sleep(Duration::from_micros(200));
                        drop(p);
                    }
                });
            }
        });
        assert!(*peak.lock().unwrap() <= cap);
        assert_eq!(b.in_use(), 0);
    }

    /// An input is admitted before it is read: one larger than the
    /// capacity is refused, a second input waits while one input-only
    /// permit is out, and growing it to the image's estimate lets it in.
    #[test]
    fn inputs_are_admitted_one_at_a_time_then_grow() {
        let b = MemoryBudget::new(512, 1).unwrap();
        assert!(b.acquire_input(b.capacity() + 1).is_none());
        let mut p = b.acquire_input(1000).unwrap();
        assert!(p.is_input());
        assert!(!b.grow(&mut p, b.capacity() + 1));
        assert_eq!(b.in_use(), 1000);
        let (tx, rx) = std::sync::mpsc::channel();
        let b2 = Arc::clone(&b);
        let t = std::thread::spawn(move || {
            let q = b2.acquire_input(10).unwrap();
            tx.send(()).unwrap();
            drop(q);
        });
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        assert!(b.grow(&mut p, 5000));
        assert!(!p.is_input());
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
        t.join().unwrap();
        assert_eq!(b.in_use(), 5000);
        drop(p);
        assert_eq!(b.in_use(), 0);
        // A dropped input-only permit frees the slot as well.
        drop(b.acquire_input(10).unwrap());
        drop(b.acquire_input(10).unwrap());
    }

    /// Threads that read inputs and grow them to their images' estimates
    /// never deadlock and never overdraw the capacity.
    #[test]
    fn reading_and_growing_threads_never_deadlock() {
        let b = MemoryBudget::new(min_mib(4), 4).unwrap();
        let cap = b.capacity();
        std::thread::scope(|s| {
            for i in 0..4u64 {
                let b = Arc::clone(&b);
                s.spawn(move || {
                    for k in 0..30u64 {
                        let input = cap / 4 + (i + k) % 3 * (cap / 8);
                        let mut p = b.acquire_input(input).unwrap();
                        assert!(b.in_use() <= cap);
                        assert!(b.grow(&mut p, input + (k % 4) * (cap / 8)));
                        assert!(b.in_use() <= cap);
                        drop(p);
                    }
                });
            }
        });
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn split_permits_give_back_their_own_share() {
        let b = MemoryBudget::new(512, 1).unwrap();
        let mut p = b.acquire(1000).unwrap();
        let part = p.split(300);
        assert_eq!((p.bytes(), part.bytes()), (700, 300));
        drop(p);
        assert_eq!(b.in_use(), 300);
        drop(part);
        assert_eq!(b.in_use(), 0);
    }
}
