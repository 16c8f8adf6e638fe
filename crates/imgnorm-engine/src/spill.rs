//! A job's final rows kept on disk until its dataset is written
//! ([`RowSpill`], the master's [`RowStore`]), so that the master's memory
//! is bounded by the work in flight rather than by the job's size.
//!
//! Two files in a folder private to the job: `rows.dat`, where each row
//! (JSON of the record and who produced it) is appended, and `rows.idx`,
//! one 16-byte slot per item at `16 * index` (offset + 1 and length of the
//! item's latest row; zero: no row yet), created sparse. Rows and their
//! slots are buffered (1 MiB) and written in runs, so keeping a row costs
//! no system call of its own. Reading back in index order walks the slots
//! and reads the data through a window, as rows arrive nearly in index
//! order. The folder is removed when the store is dropped, and
//! [`sweep_stale`] removes those of processes that were killed.
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use imgnorm_core::jobs::{KeptRow, Provenance, RowStore};
use imgnorm_core::record::Record;
use serde::{Deserialize, Serialize};

/// Bytes of rows (and their slots) held before they are written.
const BUFFER: usize = 1 << 20;
/// Bytes of `rows.dat` read at once when reading rows back.
const WINDOW: usize = 1 << 20;
/// Bytes of a slot in `rows.idx`.
const SLOT: u64 = 16;
/// Prefix of the folders [`spill_dir`] names.
const PREFIX: &str = "imgnorm-rows-";

/// One row as stored.
#[derive(Serialize, Deserialize)]
struct Stored {
    r: Record,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<Provenance>,
}

/// A job's rows on disk. See the module docs.
pub struct RowSpill {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    data: File,
    idx: File,
    n: u64,
    /// Bytes written to `rows.dat` (the buffer starts there).
    written: u64,
    /// Rows not written yet.
    buf: Vec<u8>,
    /// Slots not written yet: (index, offset, length), in arrival order.
    slots: Vec<(u64, u64, u64)>,
    error: Option<String>,
}

impl RowSpill {
    /// A store for `n` items in the new folder `dir` (its parent must
    /// exist; `dir` must not).
    pub fn create(dir: &Path, n: u64) -> io::Result<RowSpill> {
        std::fs::create_dir(dir)?;
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(dir.join(name))
        };
        let made = (|| {
            let data = open("rows.dat")?;
            let idx = open("rows.idx")?;
            idx.set_len(n.saturating_mul(SLOT))?;
            Ok(Inner {
                data,
                idx,
                n,
                written: 0,
                buf: Vec::with_capacity(BUFFER),
                slots: Vec::new(),
                error: None,
            })
        })();
        match made {
            Ok(inner) => Ok(RowSpill {
                dir: dir.to_path_buf(),
                inner: Mutex::new(inner),
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(dir);
                Err(e)
            }
        }
    }

    /// The folder holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for RowSpill {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Inner {
    fn put(&mut self, index: u64, row: Record, by: Option<Provenance>) -> io::Result<()> {
        if index >= self.n {
            return Ok(());
        }
        let start = self.buf.len();
        serde_json::to_writer(&mut self.buf, &Stored { r: row, p: by })
            .map_err(io::Error::other)?;
        let len = (self.buf.len() - start) as u64;
        self.slots.push((index, self.written + start as u64, len));
        if self.buf.len() >= BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered rows, then their slots in runs of consecutive
    /// items (the latest row of an item kept twice wins).
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.data.write_all_at(&self.buf, self.written)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        let mut slots = std::mem::take(&mut self.slots);
        // Stable: of two rows of one item, the later stays last.
        slots.sort_by_key(|s| s.0);
        let mut run: Vec<u8> = Vec::new();
        let mut first = 0u64;
        let mut last: Option<u64> = None;
        for (index, off, len) in slots {
            match last {
                Some(l) if l == index => {
                    let at = run.len() - SLOT as usize;
                    run.truncate(at);
                }
                Some(l) if l + 1 == index => {}
                _ => {
                    if !run.is_empty() {
                        self.idx.write_all_at(&run, first * SLOT)?;
                        run.clear();
                    }
                    first = index;
                }
            }
            run.extend_from_slice(&(off + 1).to_le_bytes());
            run.extend_from_slice(&len.to_le_bytes());
            last = Some(index);
        }
        if !run.is_empty() {
            self.idx.write_all_at(&run, first * SLOT)?;
        }
        Ok(())
    }

    fn read_row(&self, off: u64, len: u64) -> io::Result<Stored> {
        let mut b = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
        self.data.read_exact_at(&mut b, off)?;
        serde_json::from_slice(&b).map_err(io::Error::other)
    }

    fn slot(&self, index: u64) -> io::Result<Option<(u64, u64)>> {
        let mut s = [0u8; SLOT as usize];
        self.idx.read_exact_at(&mut s, index * SLOT)?;
        Ok(decode_slot(&s))
    }

    fn fail(&mut self, e: &io::Error) {
        if self.error.is_none() {
            self.error = Some(format!("cannot keep the job's rows on disk: {e}"));
        }
    }
}

/// A slot's (offset, length), `None` when empty.
fn decode_slot(s: &[u8]) -> Option<(u64, u64)> {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(s.get(..8)?);
    b.copy_from_slice(s.get(8..16)?);
    let off = u64::from_le_bytes(a);
    (off != 0).then(|| (off - 1, u64::from_le_bytes(b)))
}

impl RowStore for RowSpill {
    fn put(&mut self, index: u64, row: Record, by: Option<Provenance>) {
        let mut g = self.lock();
        if g.error.is_some() {
            return;
        }
        if let Err(e) = g.put(index, row, by) {
            g.fail(&e);
        }
    }

    fn get(&self, index: u64) -> Option<(Record, Option<Provenance>)> {
        let mut g = self.lock();
        if index >= g.n {
            return None;
        }
        if let Err(e) = g.flush() {
            g.fail(&e);
            return None;
        }
        let read = g
            .slot(index)
            .and_then(|s| s.map(|(off, len)| g.read_row(off, len)).transpose());
        match read {
            Ok(s) => s.map(|s| (s.r, s.p)),
            Err(e) => {
                g.fail(&e);
                None
            }
        }
    }

    fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    fn rows(&self) -> Box<dyn Iterator<Item = Result<KeptRow, String>> + '_> {
        let mut g = self.lock();
        if let Err(e) = g.flush() {
            g.fail(&e);
        }
        if let Some(e) = g.error.clone() {
            return Box::new(std::iter::once(Err(e)));
        }
        Box::new(Reader {
            g,
            next: 0,
            slots: Vec::new(),
            slots_from: 0,
            window: Vec::new(),
            window_at: 0,
            done: false,
        })
    }
}

/// Reads rows back in index order (see [`RowStore::rows`]).
struct Reader<'a> {
    g: MutexGuard<'a, Inner>,
    next: u64,
    /// Slots of items `slots_from..`, read in chunks.
    slots: Vec<u8>,
    slots_from: u64,
    /// Bytes of `rows.dat` from `window_at`.
    window: Vec<u8>,
    window_at: u64,
    done: bool,
}

impl Reader<'_> {
    fn slot(&mut self, index: u64) -> io::Result<Option<(u64, u64)>> {
        let have = self.slots.len() as u64 / SLOT;
        if index < self.slots_from || index >= self.slots_from + have {
            let count = (self.g.n - index).min(65_536);
            self.slots = vec![0u8; (count * SLOT) as usize];
            self.g.idx.read_exact_at(&mut self.slots, index * SLOT)?;
            self.slots_from = index;
        }
        let at = ((index - self.slots_from) * SLOT) as usize;
        Ok(decode_slot(&self.slots[at..at + SLOT as usize]))
    }

    fn row(&mut self, off: u64, len: u64) -> io::Result<Stored> {
        let end = off + len;
        let inside = off >= self.window_at && end <= self.window_at + self.window.len() as u64;
        if !inside {
            if len as usize > WINDOW {
                return self.g.read_row(off, len);
            }
            let size = (self.g.written - off).min(WINDOW as u64) as usize;
            self.window.resize(size, 0);
            self.g.data.read_exact_at(&mut self.window, off)?;
            self.window_at = off;
        }
        let a = (off - self.window_at) as usize;
        serde_json::from_slice(&self.window[a..a + len as usize]).map_err(io::Error::other)
    }

    fn step(&mut self) -> io::Result<Option<KeptRow>> {
        while self.next < self.g.n {
            let index = self.next;
            self.next += 1;
            if let Some((off, len)) = self.slot(index)? {
                let s = self.row(off, len)?;
                return Ok(Some((index, s.r, s.p)));
            }
        }
        Ok(None)
    }
}

impl Iterator for Reader<'_> {
    type Item = Result<KeptRow, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                self.g.fail(&e);
                Some(Err(format!("cannot read the job's rows back: {e}")))
            }
        }
    }
}

/// The folder of job `job`'s rows under `base`, named after this process
/// (see [`sweep_stale`]).
pub fn spill_dir(base: &Path, job: u64) -> PathBuf {
    base.join(format!("{PREFIX}{}-job-{job}", std::process::id()))
}

/// Removes the row folders under `base` left by processes that are gone
/// (a master killed before its jobs ended), and those named after this
/// process (an earlier process with the same pid, as in containers, where
/// every master is pid 1): call it before this process makes any. Returns
/// how many were removed.
pub fn sweep_stale(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let stale = pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists();
        if stale && std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgnorm_core::record::Status;

    fn row(i: u64, s: Status) -> Record {
        let mut r = Record::bare(format!("d/{i:07}.png"), s, Some("why".into()));
        r.min = vec![1.0, 2.0];
        r
    }

    fn by(i: u64) -> Option<Provenance> {
        i.is_multiple_of(2).then(|| Provenance {
            worker: format!("w{i}"),
            worker_id: i,
            lease: i * 3,
            attempt: 1,
        })
    }

    #[test]
    fn rows_come_back_in_index_order_latest_wins_and_the_folder_goes_with_the_store() {
        let base = tempfile::tempdir().expect("tmp");
        let dir = base.path().join("j");
        let n = 50_000u64;
        let mut s = RowSpill::create(&dir, n).expect("create");
        // Interleaved as leases of several workers arrive, one item kept
        // twice (a stream-mode write failure), one never.
        for chunk in (0..n).collect::<Vec<_>>().chunks(256).rev() {
            for &i in chunk {
                if i != 777 {
                    s.put(i, row(i, Status::Ok), by(i));
                }
            }
        }
        s.put(5, row(5, Status::Failed), by(5));
        s.put(n, row(n, Status::Ok), None);
        assert_eq!(s.get(5).map(|(r, _)| r.status), Some(Status::Failed));
        assert_eq!(s.get(777), None);
        let mut count = 0;
        let mut prev = None;
        for r in s.rows() {
            let (i, rec, p) = r.expect("readable");
            assert!(prev.is_none_or(|x| x < i));
            prev = Some(i);
            let want = if i == 5 { Status::Failed } else { Status::Ok };
            assert_eq!(rec, row(i, want));
            assert_eq!(p, by(i));
            count += 1;
        }
        assert_eq!(count, n - 1);
        assert!(s.error().is_none());
        assert!(dir.is_dir());
        drop(s);
        assert!(!dir.exists(), "removed with the store");
    }

    /// Float extremes (32-bit float samples) come back bit for bit: the
    /// manifest a master writes from the spill must equal centralized's.
    #[test]
    fn float_extremes_round_trip_exactly() {
        let base = tempfile::tempdir().expect("tmp");
        let mut s = RowSpill::create(&base.path().join("j"), 2).expect("create");
        let mut r = row(0, Status::Ok);
        r.min = vec![-21.778606414794922, f64::from(f32::MIN_POSITIVE), 1e-300];
        r.max = vec![18.592432022094727, 0.1 + 0.2, f64::MAX];
        s.put(0, r.clone(), None);
        let back = s.get(0).map(|(b, _)| b).expect("stored");
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.min), bits(&r.min));
        assert_eq!(bits(&back.max), bits(&r.max));
    }

    #[test]
    fn a_read_error_is_reported_not_hidden() {
        let base = tempfile::tempdir().expect("tmp");
        let dir = base.path().join("j");
        let mut s = RowSpill::create(&dir, 3).expect("create");
        s.put(0, row(0, Status::Ok), None);
        s.put(1, row(1, Status::Ok), None);
        let _ = s.get(0);
        // Something truncates the data file behind the store's back.
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("rows.dat"))
            .expect("open")
            .set_len(3)
            .expect("truncate");
        let got: Vec<_> = s.rows().collect();
        assert!(got.iter().any(Result::is_err), "{}", got.len());
        assert!(s.error().is_some());
    }

    #[test]
    fn stale_folders_of_dead_processes_are_swept_live_ones_kept() {
        let base = tempfile::tempdir().expect("tmp");
        let mine = spill_dir(base.path(), 1);
        std::fs::create_dir(&mine).expect("mkdir");
        // Pid numbers above the kernel's maximum are never alive.
        let dead = base.path().join(format!("{PREFIX}4294967295-job-1"));
        std::fs::create_dir(&dead).expect("mkdir");
        // The parent of this test process is alive.
        let live = base.path().join(format!(
            "{PREFIX}{}-job-2",
            std::os::unix::process::parent_id()
        ));
        std::fs::create_dir(&live).expect("mkdir");
        std::fs::create_dir(base.path().join("other")).expect("mkdir");
        assert_eq!(sweep_stale(base.path()), 2);
        assert!(!mine.exists() && !dead.exists());
        assert!(live.is_dir() && base.path().join("other").is_dir());
    }
}
