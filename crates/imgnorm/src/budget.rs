//! A worker's memory budget (`--memory-budget`): a byte semaphore the engine
//! threads take their images' memory from. Before decoding, the engine
//! estimates from the image header what the image will need (see
//! [`crate::engine`]); an image that alone needs more than the budget's
//! capacity fails with a reason, and the others wait until enough of the
//! budget is free, so the images in flight together stay within it.
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
    used: Mutex<u64>,
    freed: Condvar,
}

/// Bytes of a [`MemoryBudget`] held by one image; given back on drop.
#[derive(Debug)]
pub struct Permit {
    budget: Arc<MemoryBudget>,
    bytes: u64,
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
            used: Mutex::new(0),
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
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `bytes`, waiting until that much is free. `None` when `bytes`
    /// exceeds the capacity (it would never be free).
    pub fn acquire(self: &Arc<Self>, bytes: u64) -> Option<Permit> {
        if bytes > self.capacity {
            return None;
        }
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used + bytes > self.capacity {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        Some(Permit {
            budget: Arc::clone(self),
            bytes,
        })
    }

    fn release(&self, bytes: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(bytes);
        self.freed.notify_all();
    }
}

impl Permit {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
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
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
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
