//! A zip reader for uploads that never holds the central directory in
//! memory: the end record is read from the file's tail, then the central
//! directory is streamed one fixed-size header at a time, and each entry is
//! handed to the caller (who checks its name, type and size, and counts it
//! against the upload's limits) before the next header is read. An entry's
//! data is read from its local header through a second file handle,
//! stored or deflated, with its size and CRC-32 checked. Memory per archive
//! is a few buffers, whatever the number of entries (a general-purpose zip
//! library parses the whole directory first: 400k empty entries took ~85 MB
//! before any limit applied).
//!
//! Supported: stored and deflated entries, ZIP64 sizes and offsets, data
//! descriptors. Refused: encrypted entries, other compression methods,
//! multi-disk archives.
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;
/// The end record's fixed part; a comment of up to 64 KiB may follow it.
const EOCD_LEN: u64 = 22;
const MAX_COMMENT: u64 = 0xFFFF;

/// Why an archive cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    /// Not a zip archive, or a damaged one.
    #[error("{0}")]
    Invalid(String),
    /// A feature this reader does not support.
    #[error("{0}")]
    Unsupported(String),
    /// Reading the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn invalid(s: impl Into<String>) -> ZipError {
    ZipError::Invalid(s.into())
}

/// One central-directory entry, as the caller sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name as stored (UTF-8, or lossily converted).
    pub name: String,
    /// Uncompressed size, as declared.
    pub size: u64,
    /// Unix mode bits, when the archive was made on Unix.
    pub unix_mode: Option<u32>,
    /// A folder (name ends in `/`, or the DOS folder attribute).
    pub is_dir: bool,
    compressed: u64,
    method: u16,
    flags: u16,
    crc: u32,
    local_offset: u64,
}

/// Where the central directory is and how many entries it declares.
#[derive(Debug, Clone, Copy)]
pub struct Directory {
    /// Entries the end record declares (checked against the limits before
    /// any is read; the stream stops there too).
    pub declared: u64,
    offset: u64,
    size: u64,
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// Finds the end record in the file's last 64 KiB + 22 bytes and, for
/// ZIP64, the ZIP64 end record it points to.
pub fn directory(f: &mut File) -> Result<Directory, ZipError> {
    let len = f.metadata()?.len();
    if len < EOCD_LEN {
        return Err(invalid("too short for a zip archive"));
    }
    let tail_len = len.min(EOCD_LEN + MAX_COMMENT);
    let start = len - tail_len;
    f.seek(SeekFrom::Start(start))?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail)?;
    let at = (0..=tail.len() - EOCD_LEN as usize)
        .rev()
        .find(|&i| u32_at(&tail, i) == EOCD_SIG)
        .ok_or_else(|| invalid("no end-of-central-directory record"))?;
    let e = &tail[at..];
    if u16_at(e, 4) != 0 || u16_at(e, 6) != 0 {
        return Err(ZipError::Unsupported(
            "multi-disk archives are not supported".into(),
        ));
    }
    let mut dir = Directory {
        declared: u64::from(u16_at(e, 10)),
        size: u64::from(u32_at(e, 12)),
        offset: u64::from(u32_at(e, 16)),
    };
    let eocd_pos = start + at as u64;
    let zip64 = dir.declared == 0xFFFF || dir.size == 0xFFFF_FFFF || dir.offset == 0xFFFF_FFFF;
    if zip64 && eocd_pos >= 20 {
        let mut loc = [0u8; 20];
        f.seek(SeekFrom::Start(eocd_pos - 20))?;
        f.read_exact(&mut loc)?;
        if u32_at(&loc, 0) == ZIP64_LOCATOR_SIG {
            let mut rec = [0u8; 56];
            f.seek(SeekFrom::Start(u64_at(&loc, 8)))?;
            f.read_exact(&mut rec)?;
            if u32_at(&rec, 0) != ZIP64_EOCD_SIG {
                return Err(invalid("bad ZIP64 end-of-central-directory record"));
            }
            dir.declared = u64_at(&rec, 32);
            dir.size = u64_at(&rec, 40);
            dir.offset = u64_at(&rec, 48);
        }
    }
    if dir
        .offset
        .checked_add(dir.size)
        .is_none_or(|end| end > eocd_pos)
    {
        return Err(invalid("the central directory lies outside the file"));
    }
    Ok(dir)
}

/// Streams the central directory of `path`: `each` gets every entry in
/// order, with a reader of its data (`None` for folders), and may stop the
/// walk with an error. `before` sees the declared entry count first.
pub fn for_each_entry<E: From<ZipError>>(
    path: &Path,
    before: impl FnOnce(&Directory) -> Result<(), E>,
    mut each: impl FnMut(&Entry, Option<&mut dyn Read>) -> Result<(), E>,
) -> Result<(), E> {
    let mut f = File::open(path).map_err(ZipError::from)?;
    let dir = directory(&mut f)?;
    before(&dir)?;
    let mut data = File::open(path).map_err(ZipError::from)?;
    f.seek(SeekFrom::Start(dir.offset))
        .map_err(ZipError::from)?;
    let mut cd = BufReader::with_capacity(64 << 10, f.take(dir.size));
    let mut name = Vec::new();
    let mut extra = Vec::new();
    for _ in 0..dir.declared {
        let e = read_central(&mut cd, &mut name, &mut extra)?;
        if e.is_dir {
            each(&e, None)?;
            continue;
        }
        let mut r = open_entry(&mut data, &e)?;
        each(&e, Some(&mut r as &mut dyn Read))?;
        r.finish()?;
    }
    Ok(())
}

/// Reads one central-directory header (46 bytes, name, extra, comment).
fn read_central(
    cd: &mut impl Read,
    name: &mut Vec<u8>,
    extra: &mut Vec<u8>,
) -> Result<Entry, ZipError> {
    let mut h = [0u8; 46];
    cd.read_exact(&mut h)
        .map_err(|_| invalid("the central directory ends early"))?;
    if u32_at(&h, 0) != CENTRAL_SIG {
        return Err(invalid("bad central-directory header"));
    }
    let (n, m, k) = (
        usize::from(u16_at(&h, 28)),
        usize::from(u16_at(&h, 30)),
        u64::from(u16_at(&h, 32)),
    );
    name.resize(n, 0);
    cd.read_exact(name)
        .map_err(|_| invalid("the central directory ends early"))?;
    extra.resize(m, 0);
    cd.read_exact(extra)
        .map_err(|_| invalid("the central directory ends early"))?;
    std::io::copy(&mut Read::take(&mut *cd, k), &mut std::io::sink())?;
    let mut compressed = u64::from(u32_at(&h, 20));
    let mut size = u64::from(u32_at(&h, 24));
    let mut local_offset = u64::from(u32_at(&h, 42));
    zip64_fields(extra, &mut size, &mut compressed, &mut local_offset)?;
    let made_on_unix = h[5] == 3;
    let external = u32_at(&h, 38);
    let name = String::from_utf8_lossy(name).into_owned();
    Ok(Entry {
        is_dir: name.ends_with('/') || external & 0x10 != 0,
        name,
        size,
        unix_mode: made_on_unix.then_some(external >> 16),
        compressed,
        method: u16_at(&h, 10),
        flags: u16_at(&h, 8),
        crc: u32_at(&h, 16),
        local_offset,
    })
}

/// Applies the ZIP64 extended-information field: the 64-bit values of
/// those fields that hold 0xFFFFFFFF, in the order size, compressed size,
/// local header offset.
fn zip64_fields(
    extra: &[u8],
    size: &mut u64,
    compressed: &mut u64,
    offset: &mut u64,
) -> Result<(), ZipError> {
    let mut i = 0;
    while i + 4 <= extra.len() {
        let (id, len) = (u16_at(extra, i), usize::from(u16_at(extra, i + 2)));
        let body = extra
            .get(i + 4..i + 4 + len)
            .ok_or_else(|| invalid("bad extra field"))?;
        if id == 1 {
            let mut j = 0;
            for v in [size, compressed, offset] {
                if *v == 0xFFFF_FFFF {
                    let b = body
                        .get(j..j + 8)
                        .ok_or_else(|| invalid("bad ZIP64 extra field"))?;
                    *v = u64_at(b, 0);
                    j += 8;
                }
            }
            return Ok(());
        }
        i += 4 + len;
    }
    Ok(())
}

/// An entry's data: decompressed, at most its declared size, checked
/// against its size and CRC-32 once the caller is done with it (`finish`).
pub struct EntryReader<'a> {
    inner: Box<dyn Read + 'a>,
    crc: flate2::Crc,
    read: u64,
    size: u64,
    want_crc: u32,
    name: String,
    /// The stream went on past the declared size (sticky).
    overlong: bool,
}

impl Read for EntryReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Never more than the declared size; at the end, one probe byte
        // tells a longer stream (an error, never data) from the real end.
        let room = usize::try_from(self.size - self.read).unwrap_or(usize::MAX);
        if room == 0 && !buf.is_empty() {
            let mut probe = [0u8; 1];
            if !self.overlong && self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.overlong = true;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "entry {:?} is longer than its declared size of {} bytes",
                    self.name, self.size
                ),
            ));
        }
        let cap = buf.len().min(room);
        let n = self.inner.read(&mut buf[..cap])?;
        self.crc.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

impl EntryReader<'_> {
    /// Reads what the caller left and checks size and CRC-32.
    fn finish(&mut self) -> Result<(), ZipError> {
        match std::io::copy(self, &mut std::io::sink()) {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(invalid(e.to_string()));
            }
            r => r?,
        };
        if self.read != self.size || self.crc.sum() != self.want_crc {
            return Err(invalid(format!(
                "entry {:?} is damaged (size or CRC-32 differs from the directory)",
                self.name
            )));
        }
        Ok(())
    }
}

fn open_entry<'a>(data: &'a mut File, e: &Entry) -> Result<EntryReader<'a>, ZipError> {
    if e.flags & 1 != 0 {
        return Err(ZipError::Unsupported(format!(
            "entry {:?} is encrypted",
            e.name
        )));
    }
    let mut h = [0u8; 30];
    data.seek(SeekFrom::Start(e.local_offset))?;
    data.read_exact(&mut h)
        .map_err(|_| invalid(format!("entry {:?}: local header outside the file", e.name)))?;
    if u32_at(&h, 0) != LOCAL_SIG {
        return Err(invalid(format!("entry {:?}: bad local header", e.name)));
    }
    let skip = u64::from(u16_at(&h, 26)) + u64::from(u16_at(&h, 28));
    data.seek(SeekFrom::Current(skip as i64))?;
    let raw = Read::take(&mut *data, e.compressed);
    // One byte past the declared size is read, so that a longer stream is
    // caught as damaged instead of cut silently.
    let inner: Box<dyn Read + 'a> = match e.method {
        0 => Box::new(raw.take(e.size.saturating_add(1))),
        8 => Box::new(flate2::read::DeflateDecoder::new(raw).take(e.size.saturating_add(1))),
        m => {
            return Err(ZipError::Unsupported(format!(
                "entry {:?}: compression method {m} is not supported (stored or deflate only)",
                e.name
            )));
        }
    };
    Ok(EntryReader {
        inner,
        crc: flate2::Crc::new(),
        read: 0,
        size: e.size,
        want_crc: e.crc,
        name: e.name.clone(),
        overlong: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn zip_of(entries: &[(&str, &[u8])], method: zip::CompressionMethod) -> Vec<u8> {
        let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(method)
            .unix_permissions(0o644);
        for (name, data) in entries {
            if name.ends_with('/') {
                z.add_directory(*name, opts).unwrap();
            } else {
                z.start_file(*name, opts).unwrap();
                z.write_all(data).unwrap();
            }
        }
        z.finish().unwrap().into_inner()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(String, bool, Vec<u8>)>, ZipError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.zip");
        std::fs::write(&p, bytes).unwrap();
        let mut out = Vec::new();
        for_each_entry::<ZipError>(
            &p,
            |_| Ok(()),
            |e, r| {
                let mut v = Vec::new();
                if let Some(r) = r {
                    r.read_to_end(&mut v)?;
                }
                out.push((e.name.clone(), e.is_dir, v));
                Ok(())
            },
        )?;
        Ok(out)
    }

    #[test]
    fn stored_and_deflated_entries_read_back() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for m in [
            zip::CompressionMethod::Stored,
            zip::CompressionMethod::Deflated,
        ] {
            let z = zip_of(&[("d/", b""), ("d/a.bin", &big), ("e.txt", b"")], m);
            let got = read_all(&z).unwrap();
            assert_eq!(got.len(), 3);
            assert_eq!(got[0].0, "d/");
            assert!(got[0].1);
            assert_eq!(got[1].2, big);
            assert_eq!((got[2].0.as_str(), got[2].2.len()), ("e.txt", 0));
        }
    }

    #[test]
    fn an_entry_longer_than_declared_hands_out_no_extra_byte() {
        // Found by the zip_read fuzz target: the reader let the caller read
        // one byte past the declared size (the byte it reads to detect a
        // longer stream) before the entry was refused.
        let z = zip_of(&[("a.bin", &[7u8; 100])], zip::CompressionMethod::Stored);
        let cd = (0..z.len() - 4)
            .find(|&i| u32_at(&z, i) == CENTRAL_SIG)
            .unwrap();
        let mut short = z.clone();
        short[cd + 24..cd + 28].copy_from_slice(&99u32.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.zip");
        std::fs::write(&p, &short).unwrap();
        let mut handed = 0usize;
        let r = for_each_entry::<ZipError>(
            &p,
            |_| Ok(()),
            |_, r| {
                let mut buf = [0u8; 16];
                let r = r.unwrap();
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    handed += n;
                }
                Ok(())
            },
        );
        assert_eq!(handed, 99);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("longer than its declared size"), "{e}");
    }

    #[test]
    fn damaged_archives_are_errors_not_panics() {
        let z = zip_of(&[("a.bin", &[1u8; 1000])], zip::CompressionMethod::Stored);
        // A flipped data byte fails the CRC.
        let mut bad = z.clone();
        bad[40] ^= 0xff;
        assert!(read_all(&bad).is_err());
        // Every truncation and every single-byte corruption is an error or
        // a clean read, never a panic.
        for cut in 0..z.len() {
            let _ = read_all(&z[..cut]);
        }
        for i in 0..z.len() {
            let mut c = z.clone();
            c[i] = c[i].wrapping_add(0x5a);
            let _ = read_all(&c);
        }
        assert!(read_all(b"not a zip").is_err());
    }
}
