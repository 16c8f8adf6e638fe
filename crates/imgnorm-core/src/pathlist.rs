//! A job's sorted file list, compressed in memory ([`PathList`]): sorted
//! paths share long prefixes (`train/n01440764/n01440764_10026.JPEG`,
//! then `..._10027.JPEG`), so each is kept as the length of the prefix it
//! shares with the one before and the rest (front coding), in blocks of
//! [`BLOCK`] whose first path is whole, so item `i` is decoded from the
//! start of its block. Numbered names (`d00/img_00001.png`) take under 10
//! bytes each instead of the ~56 of a `Vec<String>`. [`PathListBuilder`] sorts and
//! deduplicates without holding every name uncompressed: names are sorted
//! in chunks into compressed runs, then the runs are merged.
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Paths per block (item `i` costs decoding at most this many).
pub const BLOCK: usize = 16;
/// Names sorted at once by [`PathListBuilder`] before they are compressed.
const CHUNK: usize = 1 << 18;

/// Sorted, deduplicated relative paths, compressed. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathList {
    data: Vec<u8>,
    /// Offset in `data` of each block.
    blocks: Vec<u64>,
    len: u64,
    /// The last path pushed (to front-code the next one).
    last: String,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = *data.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// Length of the common prefix of `a` and `b`, on a character boundary.
fn shared(a: &str, b: &str) -> usize {
    let mut n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !b.is_char_boundary(n) {
        n -= 1;
    }
    n
}

impl PathList {
    /// No path.
    pub fn new() -> PathList {
        PathList::default()
    }

    /// From paths already sorted and deduplicated (`None` if they are not).
    pub fn from_sorted<S: AsRef<str>>(paths: impl IntoIterator<Item = S>) -> Option<PathList> {
        let mut l = PathList::new();
        for p in paths {
            let p = p.as_ref();
            if l.len > 0 && l.last.as_str() >= p {
                return None;
            }
            l.push(p);
        }
        Some(l.shrink())
    }

    /// Appends `p`, which sorts after every path already in.
    fn push(&mut self, p: &str) {
        let start = (self.len as usize).is_multiple_of(BLOCK);
        let keep = if start {
            self.blocks.push(self.data.len() as u64);
            0
        } else {
            shared(&self.last, p)
        };
        put_varint(&mut self.data, keep as u64);
        put_varint(&mut self.data, (p.len() - keep) as u64);
        self.data.extend_from_slice(&p.as_bytes()[keep..]);
        self.last.truncate(keep);
        self.last.push_str(&p[keep..]);
        self.len += 1;
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// No path at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Path `i`.
    pub fn get(&self, i: usize) -> Option<String> {
        if i as u64 >= self.len {
            return None;
        }
        let mut at = usize::try_from(*self.blocks.get(i / BLOCK)?).ok()?;
        let mut cur = String::new();
        for _ in 0..=(i % BLOCK) {
            self.decode(&mut at, &mut cur)?;
        }
        Some(cur)
    }

    /// Decodes the entry at `at` onto `cur` (the entry before it).
    fn decode(&self, at: &mut usize, cur: &mut String) -> Option<()> {
        let keep = usize::try_from(get_varint(&self.data, at)?).ok()?;
        let more = usize::try_from(get_varint(&self.data, at)?).ok()?;
        let bytes = self.data.get(*at..*at + more)?;
        *at += more;
        if keep > cur.len() || !cur.is_char_boundary(keep) {
            return None;
        }
        cur.truncate(keep);
        cur.push_str(std::str::from_utf8(bytes).ok()?);
        Some(())
    }

    /// Every path, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            list: self,
            at: 0,
            next: 0,
            cur: String::new(),
        }
    }

    /// Every path, uncompressed (for the layouts that need them all).
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().collect()
    }

    /// Bytes this list holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.data.capacity() + self.blocks.capacity() * 8 + self.last.capacity()
    }

    fn shrink(mut self) -> PathList {
        self.data.shrink_to_fit();
        self.blocks.shrink_to_fit();
        self
    }
}

impl<S: AsRef<str>> FromIterator<S> for PathList {
    /// Any paths: sorted and deduplicated (see [`PathListBuilder`]).
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> PathList {
        let mut b = PathListBuilder::new();
        for p in iter {
            b.push(p.as_ref().to_string());
        }
        b.finish()
    }
}

/// The paths of a [`PathList`], in order.
pub struct Iter<'a> {
    list: &'a PathList,
    at: usize,
    next: u64,
    cur: String,
}

impl Iterator for Iter<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.next >= self.list.len {
            return None;
        }
        if (self.next as usize).is_multiple_of(BLOCK) {
            self.cur.clear();
        }
        self.list.decode(&mut self.at, &mut self.cur)?;
        self.next += 1;
        Some(self.cur.clone())
    }
}

/// Builds a [`PathList`] from paths in any order, with duplicates: chunks
/// of `CHUNK` names are sorted into compressed runs, merged at the end.
#[derive(Debug, Default)]
pub struct PathListBuilder {
    chunk: Vec<String>,
    runs: Vec<PathList>,
}

impl PathListBuilder {
    /// Nothing yet.
    pub fn new() -> PathListBuilder {
        PathListBuilder::default()
    }

    /// Adds a path.
    pub fn push(&mut self, p: String) {
        self.chunk.push(p);
        if self.chunk.len() >= CHUNK {
            self.spill();
        }
    }

    fn spill(&mut self) {
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.sort_unstable();
        chunk.dedup();
        let mut run = PathList::new();
        for p in &chunk {
            run.push(p);
        }
        self.runs.push(run.shrink());
    }

    /// The sorted, deduplicated list.
    pub fn finish(mut self) -> PathList {
        if !self.chunk.is_empty() || self.runs.is_empty() {
            self.spill();
        }
        if self.runs.len() == 1 {
            return self.runs.pop().unwrap_or_default();
        }
        /// A run's next path, ordered for a min-heap.
        struct Head {
            path: String,
            run: usize,
        }
        impl PartialEq for Head {
            fn eq(&self, o: &Head) -> bool {
                self.cmp(o) == Ordering::Equal
            }
        }
        impl Eq for Head {}
        impl PartialOrd for Head {
            fn partial_cmp(&self, o: &Head) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Head {
            fn cmp(&self, o: &Head) -> Ordering {
                o.path.cmp(&self.path).then(o.run.cmp(&self.run))
            }
        }
        let mut iters: Vec<Iter<'_>> = self.runs.iter().map(PathList::iter).collect();
        let mut heap = BinaryHeap::new();
        for (run, it) in iters.iter_mut().enumerate() {
            if let Some(path) = it.next() {
                heap.push(Head { path, run });
            }
        }
        // The merged list is about the size of the runs together: reserved
        // once, not grown by doubling (which could hold twice that).
        let mut out = PathList::new();
        out.data
            .reserve(self.runs.iter().map(|r| r.data.len()).sum::<usize>());
        out.blocks
            .reserve(self.runs.iter().map(|r| r.blocks.len()).sum::<usize>());
        while let Some(Head { path, run }) = heap.pop() {
            if out.is_empty() || out.last != path {
                out.push(&path);
            }
            if let Some(path) = iters[run].next() {
                heap.push(Head { path, run });
            }
        }
        out.shrink()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_come_back_by_index_and_in_order() {
        let names: Vec<String> = (0..1000)
            .map(|i| format!("d{:02}/img_{i:05}.png", i / 100))
            .chain(["z".to_string(), "é/ü".to_string(), "é/üx".to_string()])
            .collect();
        let l = PathList::from_sorted(&names).expect("sorted");
        assert_eq!(l.len(), names.len());
        for (i, n) in names.iter().enumerate() {
            assert_eq!(l.get(i).as_deref(), Some(n.as_str()), "{i}");
        }
        assert_eq!(l.get(names.len()), None);
        assert_eq!(l.to_vec(), names);
        assert!(l.heap_bytes() < names.len() * 10, "{}", l.heap_bytes());
        assert!(PathList::from_sorted(["b", "a"]).is_none());
        assert!(PathList::from_sorted(["a", "a"]).is_none());
    }

    #[test]
    fn the_builder_sorts_and_deduplicates_across_runs() {
        // Byte order, as `sort` on `String` and the folder walk use.
        let n = CHUNK * 2 + 77;
        let mut b = PathListBuilder::new();
        for i in (0..n).rev() {
            b.push(format!("{}/{i}", i % 7));
            if i % 1000 == 0 {
                b.push(format!("{}/{i}", i % 7));
            }
        }
        let l = b.finish();
        let mut want: Vec<String> = (0..n).map(|i| format!("{}/{i}", i % 7)).collect();
        want.sort_unstable();
        assert_eq!(l.len(), want.len());
        assert!(l.iter().eq(want.iter().cloned()));
        assert_eq!(PathListBuilder::new().finish().len(), 0);
    }
}
