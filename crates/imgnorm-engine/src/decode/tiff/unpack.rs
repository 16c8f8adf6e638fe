//! Compressions the `tiff` crate reads wrongly or not at all, decompressed
//! here as libtiff does before the crate reads the page: each strip or tile
//! is decompressed whole to the size its tags give, and the crate is given a
//! copy of the file whose page says `Compression=1` with offsets and byte
//! counts pointing at the decompressed chunks (the predictor, byte order,
//! padding, FillOrder and WhiteIsZero stay the crate's and the reader's work).
//!
//! * LZW: the crate's reader (0.11.x with weezl 0.1) fails valid,
//!   end-code-terminated tiles with "no lzw end code found" when a tile's
//!   last row is followed by padding (weezl reports `NoProgress` while still
//!   handing out buffered output; image-rs/image-tiff#395). Decoding stops
//!   when the chunk is full, like libtiff, so a missing end code after
//!   complete data is no error either. Old-style LZW (LSB-first, no early
//!   size change: streams starting `00 01`, which libtiff reads) is read too.
//! * CCITT modified Huffman (`Compression=2`, rows byte-aligned, no EOL
//!   codes) and Group 3 one-dimensional (`Compression=3`, T4Options bit 0
//!   clear), which the crate does not read, through the `fax` crate's code
//!   tables and Group 3 decoder (the crate's own Group 4 dependency). Black
//!   runs become 1 bits, as in libtiff; 2-D Group 3 is refused.
use image::ImageResult;
use image::error::{LimitError, LimitErrorKind};
use tiff::decoder::{ChunkType, Decoder};
use tiff::tags::Tag;

use super::{err, ifd, tiff_err};

/// A copy of `data` with the first page's LZW chunks stored decompressed,
/// or `None` when the page is not LZW-compressed. Allocates at most
/// `max_alloc` bytes.
pub(super) fn unpack<R: std::io::Read + std::io::Seek>(
    dec: &mut Decoder<R>,
    data: &[u8],
    max_alloc: u64,
) -> ImageResult<Option<Vec<u8>>> {
    let compression = dec
        .find_tag_unsigned::<u16>(Tag::Compression)
        .map_err(tiff_err)?;
    let method = match compression {
        Some(5) => Method::Lzw,
        Some(2) => Method::ModifiedHuffman,
        Some(3) => {
            let options = dec
                .find_tag_unsigned::<u32>(Tag::Unknown(292))
                .map_err(tiff_err)?
                .unwrap_or(0);
            if options & 1 == 1 {
                return Err(err(
                    "CCITT Group 3 TIFF with 2-D coding (T4Options bit 0) is not supported",
                ));
            }
            Method::Group3
        }
        _ => return Ok(None),
    };
    let (_, height) = dec.dimensions().map_err(tiff_err)?;
    let (cw, ch) = dec.chunk_dimensions();
    let tiled = matches!(dec.get_chunk_type(), ChunkType::Tile);
    let (offsets_tag, counts_tag) = if tiled {
        (Tag::TileOffsets, Tag::TileByteCounts)
    } else {
        (Tag::StripOffsets, Tag::StripByteCounts)
    };
    let offsets = dec
        .find_tag_unsigned_vec::<u64>(offsets_tag)
        .map_err(tiff_err)?
        .unwrap_or_default();
    let counts = dec
        .find_tag_unsigned_vec::<u64>(counts_tag)
        .map_err(tiff_err)?
        .unwrap_or_default();
    if offsets.len() != counts.len() || offsets.is_empty() {
        return Err(err("TIFF: strip/tile offsets and byte counts disagree"));
    }
    let spp = dec
        .find_tag_unsigned::<u16>(Tag::SamplesPerPixel)
        .map_err(tiff_err)?
        .unwrap_or(1);
    let bits: u64 = dec
        .find_tag_unsigned_vec::<u16>(Tag::BitsPerSample)
        .map_err(tiff_err)?
        .unwrap_or_else(|| vec![1])
        .iter()
        .map(|&b| u64::from(b))
        .sum();
    let planar = dec
        .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
        .map_err(tiff_err)?
        == Some(2);
    // Bits of one pixel in one chunk: all samples, or one plane's.
    let pixel_bits = if planar && spp > 0 {
        bits / u64::from(spp)
    } else {
        bits
    };
    let row_bytes = (u64::from(cw) * pixel_bits).div_ceil(8);
    if method != Method::Lzw && (pixel_bits != 1 || cw > u32::from(u16::MAX)) {
        return Err(err(format!(
            "CCITT-compressed TIFF with {pixel_bits}-bit pixels or {cw} pixels per row"
        )));
    }
    let strips_per_plane = u64::from(height.div_ceil(ch.max(1)));
    // The decompressed size of each chunk: whole tiles; strips stop at the
    // image's bottom.
    let sizes: Vec<u64> = (0..offsets.len() as u64)
        .map(|i| {
            let rows = if tiled {
                u64::from(ch)
            } else {
                let y0 = (i % strips_per_plane.max(1)) * u64::from(ch);
                u64::from(ch).min(u64::from(height).saturating_sub(y0))
            };
            rows * row_bytes
        })
        .collect();
    let (le, big, entries, _) =
        ifd::entries(data).ok_or_else(|| err("TIFF: first IFD not readable"))?;
    let word = if big { 8 } else { 4 };
    let total = sizes
        .iter()
        .try_fold(data.len() as u64, |a, &s| a.checked_add(s))
        .and_then(|t| t.checked_add(2 * word * offsets.len() as u64 + 8));
    if total.is_none_or(|t| t > max_alloc) {
        return Err(image::ImageError::Limits(LimitError::from_kind(
            LimitErrorKind::InsufficientMemory,
        )));
    }
    let mut copy = Vec::with_capacity(total.unwrap_or(0) as usize);
    copy.extend_from_slice(data);
    let mut new_offsets = Vec::with_capacity(offsets.len());
    let mut new_counts = Vec::with_capacity(offsets.len());
    for ((&off, &n), &size) in offsets.iter().zip(&counts).zip(&sizes) {
        let start = usize::try_from(off).unwrap_or(usize::MAX).min(data.len());
        let end = usize::try_from(off.saturating_add(n))
            .unwrap_or(usize::MAX)
            .min(data.len());
        if copy.len() % 2 == 1 {
            copy.push(0);
        }
        let at = copy.len();
        let size = usize::try_from(size).map_err(|_| err("TIFF chunk too large"))?;
        copy.resize(at + size, 0);
        let src = &data[start..end];
        let out = &mut copy[at..];
        let got = match method {
            Method::Lzw => decompress(src, out)?,
            Method::ModifiedHuffman => fax_rows(src, out, cw as u16, true),
            Method::Group3 => fax_rows(src, out, cw as u16, false),
        };
        if got < size {
            // libtiff: "Not enough data" or a bad code; the read fails.
            return Err(err(format!(
                "TIFF {method:?} strip or tile decodes to {got} bytes, its size needs {size}"
            )));
        }
        new_offsets.push(at as u64);
        new_counts.push(size as u64);
    }
    let put = |copy: &mut Vec<u8>, v: u64| {
        if big {
            copy.extend(if le { v.to_le_bytes() } else { v.to_be_bytes() });
        } else {
            let v = v as u32;
            copy.extend(if le { v.to_le_bytes() } else { v.to_be_bytes() });
        }
    };
    if copy.len() % 2 == 1 {
        copy.push(0);
    }
    let offsets_at = copy.len() as u64;
    new_offsets.iter().for_each(|&v| put(&mut copy, v));
    let counts_at = copy.len() as u64;
    new_counts.iter().for_each(|&v| put(&mut copy, v));
    if !big && copy.len() > u32::MAX as usize {
        return Err(err("TIFF: decompressed LZW page over 4 GiB"));
    }
    let tag_of = |copy: &[u8], at: usize| {
        let b = [copy[at], copy[at + 1]];
        if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    let (ty, count_len) = if big { (16u16, 8) } else { (4u16, 4) };
    for &e in &entries {
        let tag = tag_of(&copy, e);
        let (array, at) = if tag == offsets_tag.to_u16() {
            (&new_offsets, offsets_at)
        } else if tag == counts_tag.to_u16() {
            (&new_counts, counts_at)
        } else if tag == Tag::Compression.to_u16() {
            // SHORT 1, left-justified in the value field.
            let v = e + 4 + count_len;
            copy[e + 2..e + 4].copy_from_slice(&if le {
                3u16.to_le_bytes()
            } else {
                3u16.to_be_bytes()
            });
            copy[v..v + word as usize].fill(0);
            copy[v..v + 2].copy_from_slice(&if le {
                1u16.to_le_bytes()
            } else {
                1u16.to_be_bytes()
            });
            continue;
        } else {
            continue;
        };
        let n = array.len() as u64;
        let mut field = Vec::with_capacity(2 + 2 * count_len);
        field.extend(if le {
            ty.to_le_bytes()
        } else {
            ty.to_be_bytes()
        });
        if big {
            field.extend(if le { n.to_le_bytes() } else { n.to_be_bytes() });
        } else {
            let n = n as u32;
            field.extend(if le { n.to_le_bytes() } else { n.to_be_bytes() });
        }
        let value = if n == 1 { array[0] } else { at };
        let start = field.len();
        put(&mut field, value);
        debug_assert_eq!(field.len() - start, count_len);
        copy[e + 2..e + 2 + field.len()].copy_from_slice(&field);
    }
    Ok(Some(copy))
}

/// The compressions this module decompresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Lzw,
    ModifiedHuffman,
    Group3,
}

/// Decodes CCITT rows of `width` pixels into `out` (packed, MSB first,
/// rows padded to a byte, black runs as 1 bits), modified Huffman (rows
/// byte-aligned, no EOL codes) or Group 3 1-D (rows after EOL codes);
/// returns how many bytes of whole rows were written.
fn fax_rows(src: &[u8], out: &mut [u8], width: u16, modified_huffman: bool) -> usize {
    use fax::BitReader;
    let row_bytes = usize::from(width).div_ceil(8);
    if row_bytes == 0 {
        return 0;
    }
    // Zero bytes after the data: the code tables look ahead up to 16 bits,
    // also for a code in the last bits of a strip.
    let bytes = src
        .iter()
        .chain(&[0u8; 2])
        .map(|&b| Ok::<u8, std::convert::Infallible>(b));
    let mut written = 0;
    if modified_huffman {
        let mut reader = match fax::ByteReader::new(bytes) {
            Ok(r) => r,
            Err(never) => match never {},
        };
        for row in out.chunks_exact_mut(row_bytes) {
            let (mut x, mut black) = (0usize, false);
            while x < usize::from(width) {
                // Make-up codes (64 and up) add to the run until a
                // terminating code (under 64).
                let mut run = 0usize;
                loop {
                    let code = if black {
                        fax::maps::black::decode(&mut reader)
                    } else {
                        fax::maps::white::decode(&mut reader)
                    };
                    let Some(n) = code else {
                        return written;
                    };
                    run += usize::from(n);
                    if n < 64 {
                        break;
                    }
                }
                let end = (x + run).min(usize::from(width));
                if black {
                    (x..end).for_each(|i| row[i / 8] |= 0x80 >> (i % 8));
                }
                x = end;
                black = !black;
            }
            let skip = reader.bits_to_byte_boundary();
            if skip > 0 && reader.consume(skip).is_err() {
                return written + row_bytes;
            }
            written += row_bytes;
        }
        return written;
    }
    let Ok(mut g3) = fax::decoder::Group3Decoder::new(bytes) else {
        return 0;
    };
    let rows = out.len() / row_bytes;
    for (y, row) in out.chunks_exact_mut(row_bytes).enumerate() {
        let status = g3.advance();
        // The last row may end the strip without an EOL after it.
        if status.is_err() && y + 1 < rows {
            return written;
        }
        for (i, c) in fax::decoder::pels(g3.transitions(), width).enumerate() {
            if c == fax::Color::Black {
                row[i / 8] |= 0x80 >> (i % 8);
            }
        }
        written += row_bytes;
        if !matches!(status, Ok(fax::decoder::DecodeStatus::Incomplete)) {
            break;
        }
    }
    written
}

/// Decompresses one LZW chunk into `out`, stopping when it is full (like
/// libtiff); returns how many bytes were written.
fn decompress(src: &[u8], out: &mut [u8]) -> ImageResult<usize> {
    use weezl::{BitOrder, LzwStatus};
    // libtiff's test for the old (pre-5.0, LSB-first) flavour.
    let old = src.len() >= 2 && src[0] == 0 && src[1] & 1 == 1;
    let mut lzw = if old {
        weezl::decode::Configuration::new(BitOrder::Lsb, 8)
    } else {
        weezl::decode::Configuration::with_tiff_size_switch(BitOrder::Msb, 8)
    }
    .build();
    let (mut inp, mut got) = (src, 0);
    while got < out.len() {
        let r = lzw.decode_bytes(inp, &mut out[got..]);
        inp = &inp[r.consumed_in..];
        got += r.consumed_out;
        match r.status {
            Ok(LzwStatus::Ok) if r.consumed_in > 0 || r.consumed_out > 0 => {}
            Ok(_) => break,
            Err(e) => return Err(err(format!("TIFF LZW data: {e}"))),
        }
    }
    Ok(got)
}
