//! GIF's first frame as OpenCV 5's GIF decoder gives it, so that our arrays
//! equal `cv2.imread(IMREAD_UNCHANGED)`. OpenCV draws the frame on a canvas
//! of the logical screen filled with the background color (alpha 0; black
//! when there is no global color table) and leaves transparent pixels
//! uncovered. It returns RGBA when the *last* graphic control extension in
//! the file has a transparent color, RGB (the alpha dropped) otherwise. An
//! index past the color tables fails the image; with no color table at all,
//! index 1 is white and any other index `i` is gray `i`. The whole block
//! structure is walked first, as OpenCV does, so a file without a trailer
//! or with an unknown block fails, and so does LZW data that does not fill
//! the frame exactly.
use image::error::{DecodingError, ImageFormatHint};
use image::{ColorType, ImageDecoder, ImageError, ImageFormat, ImageResult};

fn err(msg: impl Into<String>) -> ImageError {
    ImageError::Decoding(DecodingError::new(
        ImageFormatHint::Exact(ImageFormat::Gif),
        msg.into(),
    ))
}

/// Reads bytes; a read past the end is an error (OpenCV's stream throws).
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> ImageResult<&'a [u8]> {
        let end = self.at.saturating_add(n);
        let s = self
            .data
            .get(self.at..end)
            .ok_or_else(|| err("GIF file ends early"))?;
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self) -> ImageResult<u8> {
        Ok(self.bytes(1)?[0])
    }

    fn word(&mut self) -> ImageResult<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn skip(&mut self, n: usize) {
        self.at = self.at.saturating_add(n);
    }

    /// Skips data sub-blocks up to and including the terminator.
    fn skip_blocks(&mut self) -> ImageResult<()> {
        let mut len = self.byte()?;
        while len != 0 {
            self.skip(len.into());
            len = self.byte()?;
        }
        Ok(())
    }
}

/// A GIF whose header has been read and whose blocks have been walked.
pub struct GifDecoder<'a> {
    data: &'a [u8],
    width: u16,
    height: u16,
    /// The global color table as RGB.
    global: Vec<[u8; 3]>,
    background: u8,
    /// Where the first block after the header and global table starts.
    blocks: usize,
    /// 4 when the last graphic control extension has a transparent color.
    channels: usize,
}

fn color_table(r: &mut Reader<'_>, flags: u8) -> ImageResult<Vec<[u8; 3]>> {
    let n = 1usize << ((flags & 7) + 1);
    Ok(r.bytes(3 * n)?
        .chunks_exact(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect())
}

impl<'a> GifDecoder<'a> {
    /// Reads the header and walks every block to the trailer.
    pub fn new(data: &'a [u8]) -> ImageResult<GifDecoder<'a>> {
        let mut r = Reader { data, at: 0 };
        let sig = r.bytes(6)?;
        if sig != b"GIF87a" && sig != b"GIF89a" {
            return Err(err("not a GIF87a/GIF89a file"));
        }
        let (width, height) = (r.word()?, r.word()?);
        if width == 0 || height == 0 {
            return Err(err(format!("GIF screen size {width}x{height}")));
        }
        let flags = r.byte()?;
        let background = r.byte()?;
        r.skip(1);
        let global = if flags & 0x80 != 0 {
            let t = color_table(&mut r, flags)?;
            if usize::from(background) >= t.len() {
                return Err(err(format!(
                    "GIF background color {background} is outside the {}-color table",
                    t.len()
                )));
            }
            t
        } else {
            Vec::new()
        };
        let blocks = r.at;
        let channels = walk(&mut r)?;
        Ok(GifDecoder {
            data,
            width,
            height,
            global,
            background,
            blocks,
            channels,
        })
    }

    fn decode_into(self, buf: &mut [u8]) -> ImageResult<()> {
        let mut r = Reader {
            data: self.data,
            at: self.blocks,
        };
        let (sw, sh) = (usize::from(self.width), usize::from(self.height));
        let nch = self.channels;
        if buf.len() < sw * sh * nch {
            return Err(err("GIF output buffer is too small"));
        }
        // Extensions before the first image: the last graphic control
        // extension sets its transparency.
        let mut transparent = None;
        let mut id = r.byte()?;
        while id == 0x21 {
            if r.byte()? == 0xF9 {
                transparent = None;
                if r.byte()? != 4 {
                    return Err(err("GIF graphic control extension is not 4 bytes"));
                }
                let packed = r.byte()?;
                if (packed >> 2) & 7 > 3 {
                    return Err(err("GIF disposal method is not 0-3"));
                }
                r.word()?;
                let index = r.byte()?;
                if packed & 1 != 0 {
                    transparent = Some(index);
                }
            }
            r.skip_blocks()?;
            id = r.byte()?;
        }
        if id != 0x2C {
            return Err(err("GIF has no image before its trailer"));
        }
        let (left, top) = (usize::from(r.word()?), usize::from(r.word()?));
        let (fw, fh) = (usize::from(r.word()?), usize::from(r.word()?));
        if fw == 0 || fh == 0 || left + fw > sw || top + fh > sh {
            return Err(err(format!(
                "GIF frame {fw}x{fh} at ({left}, {top}) is outside the {sw}x{sh} screen"
            )));
        }
        let back = match self.global.get(usize::from(self.background)) {
            Some(&[r, g, b]) => [r, g, b, 0],
            None => [0; 4],
        };
        for px in buf[..sw * sh * nch].chunks_exact_mut(nch) {
            px.copy_from_slice(&back[..nch]);
        }
        let flags = r.byte()?;
        let local = if flags & 0x80 != 0 {
            color_table(&mut r, flags)?
        } else {
            Vec::new()
        };
        let mut codes = vec![0u8; fw * fh];
        lzw(&mut r, &mut codes)?;
        let rows: Vec<usize> = if flags & 0x40 == 0 {
            (0..fh).collect()
        } else {
            (0..fh)
                .step_by(8)
                .chain((4..fh).step_by(8))
                .chain((2..fh).step_by(4))
                .chain((1..fh).step_by(2))
                .collect()
        };
        let no_table = local.is_empty() && self.global.is_empty();
        for (row, line) in rows.into_iter().zip(codes.chunks_exact(fw)) {
            for (x, &index) in line.iter().enumerate() {
                if transparent == Some(index) {
                    continue;
                }
                let i = usize::from(index);
                let rgb = if let Some(c) = local.get(i).or_else(|| self.global.get(i)) {
                    *c
                } else if no_table {
                    let v = if index == 1 { 255 } else { index };
                    [v; 3]
                } else {
                    return Err(err(format!(
                        "GIF color index {index} is outside the tables"
                    )));
                };
                let at = ((top + row) * sw + left + x) * nch;
                buf[at..at + 3].copy_from_slice(&rgb);
                if nch == 4 {
                    buf[at + 3] = 255;
                }
            }
        }
        Ok(())
    }
}

/// Walks the blocks after the header to the trailer as OpenCV counts
/// frames; the channels (3 or 4) follow the last graphic control extension.
fn walk(r: &mut Reader<'_>) -> ImageResult<usize> {
    let mut channels = 3;
    let mut id = r.byte()?;
    while id != 0x3B {
        match id {
            0x21 => match r.byte()? {
                0xFF => {
                    let mut len = r.byte()?;
                    let mut netscape = false;
                    while len != 0 {
                        if len == 11 {
                            netscape = r.bytes(11)? == b"NETSCAPE2.0";
                        } else if len == 3 {
                            // OpenCV reads the sub-block id only after a
                            // NETSCAPE2.0 block, and skips 2 bytes otherwise.
                            if netscape && r.byte()? == 1 {
                                r.word()?;
                            } else {
                                r.skip(2);
                            }
                        } else {
                            r.skip(len.into());
                        }
                        len = r.byte()?;
                    }
                }
                0xF9 => {
                    let mut len = r.byte()?;
                    while len != 0 {
                        if len == 4 {
                            channels = if r.byte()? & 1 != 0 { 4 } else { 3 };
                            r.skip(3);
                        } else {
                            r.skip(len.into());
                        }
                        len = r.byte()?;
                    }
                }
                _ => r.skip_blocks()?,
            },
            0x2C => {
                r.skip(8);
                let flags = r.byte()?;
                if flags & 0x80 != 0 {
                    r.skip(3 << ((flags & 7) + 1));
                }
                r.skip(1);
                r.skip_blocks()?;
            }
            other => return Err(err(format!("GIF block type {other:#04x} is unknown"))),
        }
        id = r.byte()?;
    }
    Ok(channels)
}

/// One LZW string: the code of its prefix string, its last and first byte.
#[derive(Clone, Copy, Default)]
struct Entry {
    prefix: u16,
    suffix: u8,
    first: u8,
    len: u16,
}

/// LZW-decodes the image data into `out`, which it must fill exactly
/// (OpenCV's rules: extra codes are allowed only as the last ones of the
/// data; a string that would overflow the frame fails).
fn lzw(r: &mut Reader<'_>, out: &mut [u8]) -> ImageResult<()> {
    const MAX: usize = 1 << 12;
    let min = r.byte()?;
    if !(2..=11).contains(&min) {
        return Err(err(format!("GIF LZW minimum code size {min}")));
    }
    let clear = 1usize << min;
    let exit = clear + 1;
    let mut table = vec![Entry::default(); MAX + 1];
    let mut size = u32::from(min) + 1;
    let mut next = exit;
    let total = out.len();
    let mut idx = 0usize;
    let mut bits = 0u32;
    let mut src = 0u32;
    let mut block = r.byte()?;
    let bad = || err("GIF LZW data is corrupt");
    while block != 0 {
        if bits < size {
            src |= u32::from(r.byte()?) << bits;
            block -= 1;
            bits += 8;
        }
        while bits >= size {
            let code = (src & ((1 << size) - 1)) as usize;
            src >>= size;
            bits -= size;
            if code == clear || code == exit {
                size = u32::from(min) + 1;
                next = exit;
                if code == exit {
                    break;
                }
                continue;
            }
            if idx >= total {
                return if idx == total && block == 0 && r.byte()? == 0 {
                    Ok(())
                } else {
                    Err(err("GIF LZW data is longer than the frame"))
                };
            }
            if next < MAX {
                // Complete the pending string (the previous one plus this
                // one's first byte) and open the next with this string.
                let (len, first) = if code < clear {
                    (1, code as u8)
                } else if code <= next {
                    (table[code].len, table[code].first)
                } else {
                    return Err(bad());
                };
                table[next].suffix = first;
                next += 1;
                table[next] = Entry {
                    prefix: code as u16,
                    suffix: 0,
                    first,
                    len: len + 1,
                };
            }
            if code < clear {
                out[idx] = code as u8;
                idx += 1;
            } else {
                let len = usize::from(table[code].len);
                if len == 0 || idx + len > total {
                    return Err(err("GIF LZW string overflows the frame"));
                }
                let mut k = code;
                for pos in (idx + 1..idx + len).rev() {
                    out[pos] = table[k].suffix;
                    k = usize::from(table[k].prefix);
                }
                // `k` is now a literal code.
                out[idx] = k as u8;
                idx += len;
            }
            if next == 1 << size && size < 12 {
                size += 1;
            }
        }
        if block == 0 {
            block = r.byte()?;
        }
    }
    if idx == total {
        Ok(())
    } else {
        Err(err(format!(
            "GIF LZW data gives {idx} of the frame's {total} pixels"
        )))
    }
}

impl ImageDecoder for GifDecoder<'_> {
    fn dimensions(&self) -> (u32, u32) {
        (u32::from(self.width), u32::from(self.height))
    }

    fn color_type(&self) -> ColorType {
        if self.channels == 4 {
            ColorType::Rgba8
        } else {
            ColorType::Rgb8
        }
    }

    fn read_image(self, buf: &mut [u8]) -> ImageResult<()> {
        self.decode_into(buf)
    }

    fn read_image_boxed(self: Box<Self>, buf: &mut [u8]) -> ImageResult<()> {
        (*self).read_image(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// LZW data for `codes` with a clear code every few symbols, so the code
    /// size stays `min + 1`.
    fn lzw_data(codes: &[u8], min: u8) -> Vec<u8> {
        let clear = 1u32 << min;
        let size = u32::from(min) + 1;
        let mut symbols = Vec::new();
        for (i, &c) in codes.iter().enumerate() {
            if (i as u32).is_multiple_of(clear - 2) {
                symbols.push(clear);
            }
            symbols.push(u32::from(c));
        }
        symbols.push(clear + 1);
        let (mut bits, mut n, mut out) = (0u32, 0u32, Vec::new());
        for s in symbols {
            bits |= s << n;
            n += size;
            while n >= 8 {
                out.push(bits as u8);
                bits >>= 8;
                n -= 8;
            }
        }
        if n > 0 {
            out.push(bits as u8);
        }
        let mut data = vec![min];
        for chunk in out.chunks(255) {
            data.push(chunk.len() as u8);
            data.extend(chunk);
        }
        data.push(0);
        data
    }

    /// A GIF of `w`x`h` with an optional global table, background index,
    /// graphic control extensions (packed, transparent index) before the
    /// frame and after it, and one frame covering `frame` (x, y, w, h).
    struct Gif<'a> {
        w: u16,
        h: u16,
        global: Option<&'a [u8]>,
        background: u8,
        gce: Option<(u8, u8)>,
        last_gce: Option<u8>,
        frame: (u16, u16, u16, u16),
        codes: &'a [u8],
    }

    impl Gif<'_> {
        fn bytes(&self) -> Vec<u8> {
            let mut d = b"GIF89a".to_vec();
            d.extend(self.w.to_le_bytes());
            d.extend(self.h.to_le_bytes());
            let size_bits = self
                .global
                .map_or(0, |t| (t.len() / 3).trailing_zeros() - 1);
            d.push(if self.global.is_some() {
                0x80 | size_bits as u8
            } else {
                0
            });
            d.extend([self.background, 0]);
            d.extend(self.global.unwrap_or_default());
            if let Some((packed, index)) = self.gce {
                d.extend([0x21, 0xF9, 4, packed, 0, 0, index, 0]);
            }
            let (x, y, fw, fh) = self.frame;
            d.push(0x2C);
            for v in [x, y, fw, fh] {
                d.extend(v.to_le_bytes());
            }
            d.push(0);
            d.extend(lzw_data(self.codes, 2));
            if let Some(packed) = self.last_gce {
                d.extend([0x21, 0xF9, 4, packed, 0, 0, 0, 0]);
            }
            d.push(0x3B);
            d
        }
    }

    const TABLE: [u8; 12] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120];

    fn decode(data: &[u8]) -> ImageResult<(ColorType, Vec<u8>)> {
        let d = GifDecoder::new(data)?;
        let c = d.color_type();
        let mut buf = vec![0xAB; d.total_bytes() as usize];
        d.read_image(&mut buf)?;
        Ok((c, buf))
    }

    fn base() -> Gif<'static> {
        Gif {
            w: 3,
            h: 2,
            global: Some(&TABLE),
            background: 2,
            gce: None,
            last_gce: None,
            frame: (1, 0, 2, 2),
            codes: &[0, 1, 3, 2],
        }
    }

    #[test]
    fn first_frame_on_the_background_as_rgb_without_transparency() {
        let (c, b) = decode(&base().bytes()).unwrap();
        assert_eq!(c, ColorType::Rgb8);
        assert_eq!(
            b,
            [
                70, 80, 90, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 70, 80, 90
            ]
        );
    }

    #[test]
    fn the_last_control_extension_picks_rgba_and_transparent_pixels_stay_background() {
        let gif = Gif {
            gce: Some((1, 1)),
            ..base()
        };
        let (c, b) = decode(&gif.bytes()).unwrap();
        assert_eq!(c, ColorType::Rgba8);
        assert_eq!(&b[..12], [70, 80, 90, 0, 10, 20, 30, 255, 70, 80, 90, 0]);
        // Transparent first frame, opaque last extension: RGB.
        let gif = Gif {
            gce: Some((1, 1)),
            last_gce: Some(0),
            ..base()
        };
        let (c, b) = decode(&gif.bytes()).unwrap();
        assert_eq!(c, ColorType::Rgb8);
        assert_eq!(&b[..9], [70, 80, 90, 10, 20, 30, 70, 80, 90]);
    }

    #[test]
    fn without_color_tables_index_1_is_white_and_others_gray() {
        let gif = Gif {
            global: None,
            background: 9,
            frame: (0, 0, 2, 2),
            codes: &[0, 1, 3, 2],
            ..base()
        };
        let (_, b) = decode(&gif.bytes()).unwrap();
        let px: Vec<u8> = b.chunks(3).map(|p| p[0]).collect();
        assert_eq!(px, [0, 255, 0, 3, 2, 0]);
    }

    #[test]
    fn broken_files_are_errors() {
        let ok = base().bytes();
        // No trailer, a frame off the screen, an index past the table, a
        // background outside the table, short LZW data.
        assert!(decode(&ok[..ok.len() - 1]).is_err());
        let off = Gif {
            frame: (2, 0, 2, 2),
            ..base()
        };
        assert!(decode(&off.bytes()).is_err());
        let small = Gif {
            global: Some(&TABLE[..6]),
            background: 0,
            ..base()
        };
        assert!(decode(&small.bytes()).is_err());
        let background = Gif {
            background: 4,
            ..base()
        };
        assert!(decode(&background.bytes()).is_err());
        let short = Gif {
            codes: &[0, 1, 3],
            ..base()
        };
        assert!(decode(&short.bytes()).is_err());
        for n in 0..ok.len() {
            let _ = decode(&ok[..n]);
        }
    }
}
