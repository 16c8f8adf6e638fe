//! A job's final rows ([`Rows`]): which items have one (one bit per item,
//! kept here) and the rows themselves with who produced them, kept by a
//! [`RowStore`] until the dataset is written. [`MemRows`] keeps them in
//! memory (the default: tests, the simulator); the master plugs in a
//! file-backed store (`imgnorm_engine::spill`) through
//! [`Jobs::set_row_stores`](super::Jobs::set_row_stores), so that its
//! memory does not grow with the rows of the jobs it runs.
use crate::record::Record;

use super::{JobKey, Provenance};

/// One kept row: item index, the row, who produced it (`None`: the master
/// made it).
pub type KeptRow = (u64, Record, Option<Provenance>);

/// Where a job's final rows wait for its dataset. Keeping a row cannot fail
/// here: a store that meets an I/O error remembers it and reports it from
/// [`RowStore::error`] (the runtime then fails the job instead of writing
/// a dataset with rows missing).
pub trait RowStore: Send {
    /// Keeps `row` as item `index`'s final row (replacing an earlier one).
    fn put(&mut self, index: u64, row: Record, by: Option<Provenance>);
    /// Item `index`'s row, if one is kept and can be read.
    fn get(&self, index: u64) -> Option<(Record, Option<Provenance>)>;
    /// The first error met keeping or reading rows.
    fn error(&self) -> Option<String>;
    /// Every kept row, in index order (`Err` ends it: a row that cannot be
    /// read back).
    fn rows(&self) -> Box<dyn Iterator<Item = Result<KeptRow, String>> + '_>;
}

/// Makes the row store of a new job of `images` items.
pub type RowStoreFactory = Box<dyn Fn(JobKey, u64) -> Box<dyn RowStore> + Send>;

/// Rows kept in memory.
#[derive(Debug, Default)]
pub struct MemRows {
    rows: Vec<Option<(Record, Option<Provenance>)>>,
}

impl MemRows {
    /// A store for `n` items.
    pub fn new(n: u64) -> MemRows {
        MemRows {
            rows: std::iter::repeat_with(|| None)
                .take(usize::try_from(n).unwrap_or(0))
                .collect(),
        }
    }
}

impl RowStore for MemRows {
    fn put(&mut self, index: u64, row: Record, by: Option<Provenance>) {
        if let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|i| self.rows.get_mut(i))
        {
            *slot = Some((row, by));
        }
    }

    fn get(&self, index: u64) -> Option<(Record, Option<Provenance>)> {
        self.rows.get(usize::try_from(index).ok()?)?.clone()
    }

    fn error(&self) -> Option<String> {
        None
    }

    fn rows(&self) -> Box<dyn Iterator<Item = Result<KeptRow, String>> + '_> {
        Box::new(
            (0u64..)
                .zip(&self.rows)
                .filter_map(|(i, r)| r.as_ref().map(|(r, p)| Ok((i, r.clone(), p.clone())))),
        )
    }
}

/// A job's final rows: a bit per item saying it has one, and the store.
pub struct Rows {
    done: Vec<u64>,
    n: u64,
    filled: u64,
    store: Box<dyn RowStore>,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("n", &self.n)
            .field("filled", &self.filled)
            .finish_non_exhaustive()
    }
}

impl Rows {
    /// No row yet for any of `n` items, kept by `store`.
    pub fn new(n: u64, store: Box<dyn RowStore>) -> Rows {
        Rows {
            done: vec![0; usize::try_from(n.div_ceil(64)).unwrap_or(0)],
            n,
            filled: 0,
            store,
        }
    }

    /// Items covered.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// No item at all.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Items with a final row.
    pub fn filled(&self) -> u64 {
        self.filled
    }

    /// Whether item `index` has its final row.
    pub fn has(&self, index: u64) -> bool {
        let Ok(w) = usize::try_from(index / 64) else {
            return false;
        };
        self.done
            .get(w)
            .is_some_and(|b| b & (1 << (index % 64)) != 0)
    }

    /// Keeps item `index`'s final row (replacing an earlier one). Indexes
    /// past the end are ignored.
    pub fn put(&mut self, index: u64, row: Record, by: Option<Provenance>) {
        if index >= self.n {
            return;
        }
        if !self.has(index) {
            self.filled += 1;
            if let Some(b) = usize::try_from(index / 64)
                .ok()
                .and_then(|w| self.done.get_mut(w))
            {
                *b |= 1 << (index % 64);
            }
        }
        self.store.put(index, row, by);
    }

    /// Item `index`'s row and who produced it.
    pub fn get(&self, index: u64) -> Option<(Record, Option<Provenance>)> {
        if !self.has(index) {
            return None;
        }
        self.store.get(index)
    }

    /// Items without a final row, ascending.
    pub fn missing(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.n).filter(|&i| !self.has(i))
    }

    /// Items with a final row, ascending.
    pub fn present(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.n).filter(|&i| self.has(i))
    }

    /// The store, to read the rows back.
    pub fn store(&self) -> &dyn RowStore {
        self.store.as_ref()
    }

    /// Takes the store out, leaving an empty one for no item.
    pub fn take(&mut self) -> Rows {
        std::mem::replace(self, Rows::new(0, Box::new(MemRows::default())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;

    #[test]
    fn bits_follow_puts_and_rows_come_back_in_index_order() {
        let mut r = Rows::new(130, Box::new(MemRows::new(130)));
        assert_eq!(r.missing().count(), 130);
        r.put(129, Record::bare("z", Status::Ok, None), None);
        r.put(3, Record::bare("a", Status::Failed, Some("x".into())), None);
        r.put(3, Record::bare("a", Status::Skipped, None), None);
        r.put(130, Record::bare("past", Status::Ok, None), None);
        assert_eq!(r.filled(), 2);
        assert!(r.has(3) && r.has(129) && !r.has(4) && !r.has(130));
        assert_eq!(r.present().collect::<Vec<_>>(), vec![3, 129]);
        assert_eq!(r.get(3).map(|(x, _)| x.status), Some(Status::Skipped));
        let kept: Vec<u64> = r.store().rows().map(|k| k.map(|k| k.0).unwrap()).collect();
        assert_eq!(kept, vec![3, 129]);
    }
}
