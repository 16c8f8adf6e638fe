//! Windows and OS/2 bitmaps as OpenCV's BMP decoder reads them, so that our
//! arrays equal `cv2.imread(IMREAD_UNCHANGED)`: a palette whose entries are
//! all gray gives one channel; 16-bit samples widen by shifting (5-6-5 and
//! 5-5-5 only); 32-bit gives 3 channels, or 4 with `BI_BITFIELDS` (the masks
//! of a header of 56 bytes or more applied, scaled to 8 bits in `f32` as
//! OpenCV does; a shorter header keeps the raw bytes as B, G, R, A); RLE4/RLE8
//! runs, deltas and early ends move through the image as OpenCV's decoder
//! does, filling skipped pixels with palette entry 0; OS/2 1.x headers give
//! one gray channel (OpenCV never marks them color); the planes field is
//! ignored. Any read past the end of the file fails the image, as OpenCV's
//! stream does. Nothing image-sized is allocated here: samples go straight
//! into the caller's buffer.
use image::error::{DecodingError, ImageFormatHint};
use image::{ColorType, ImageDecoder, ImageError, ImageFormat, ImageResult};

/// `biCompression` values OpenCV reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Rgb,
    Rle8,
    Rle4,
    BitFields,
}

/// One 32-bit bit-field: where the field sits and how it widens to 8 bits.
#[derive(Debug, Clone, Copy)]
struct Field {
    mask: u32,
    shift: u32,
    /// `255 / (mask >> shift)` in `f32`, as OpenCV computes it.
    scale: f32,
}

/// A bitmap whose header and palette have been read.
pub struct BmpDecoder<'a> {
    data: &'a [u8],
    /// Where the pixel data starts.
    offset: usize,
    width: u32,
    height: u32,
    /// Rows are stored bottom row first (positive height).
    bottom_up: bool,
    /// Bits per pixel; 15 stands for 16-bit 5-5-5.
    bpp: u16,
    compression: Compression,
    /// Palette entries as (B, G, R); entries past the file's count are 0.
    palette: [[u8; 3]; 256],
    /// Output channels: 1 (gray), 3 (RGB) or 4 (RGBA).
    channels: usize,
    /// 32-bit `BI_BITFIELDS` masks for R, G, B, A, when OpenCV applies them.
    fields: Option<[Option<Field>; 4]>,
}

fn err(msg: impl Into<String>) -> ImageError {
    ImageError::Decoding(DecodingError::new(
        ImageFormatHint::Exact(ImageFormat::Bmp),
        msg.into(),
    ))
}

fn eof() -> ImageError {
    err("BMP file ends before its data does")
}

/// Reads little-endian values; every read past the end is an error (OpenCV's
/// stream throws there).
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> ImageResult<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or_else(eof)?;
        let s = self.data.get(self.at..end).ok_or_else(eof)?;
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

    fn dword(&mut self) -> ImageResult<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Moves forward without reading (OpenCV's `skip`: no check until the
    /// next read).
    fn skip(&mut self, n: usize) {
        self.at = self.at.saturating_add(n);
    }
}

/// OpenCV's integer BGR to gray: weights 0.299, 0.587, 0.114 in 14-bit fixed
/// point, rounded.
pub(crate) fn gray(b: u8, g: u8, r: u8) -> u8 {
    const R: u32 = 4899;
    const G: u32 = 9617;
    const B: u32 = (1 << 14) - R - G;
    ((u32::from(b) * B + u32::from(g) * G + u32::from(r) * R + (1 << 13)) >> 14) as u8
}

impl<'a> BmpDecoder<'a> {
    /// Reads the file header, the bitmap header and the palette.
    pub fn new(data: &'a [u8]) -> ImageResult<BmpDecoder<'a>> {
        if !data.starts_with(b"BM") {
            return Err(err("not a BMP file"));
        }
        let mut r = Reader { data, at: 10 };
        let offset = r.dword()? as i32;
        let size = r.dword()? as i32;
        if size <= 0 {
            return Err(err(format!("BMP header size {size} is not positive")));
        }
        let mut palette = [[0u8; 3]; 256];
        let (width, height, bpp, compression, color, fields);
        if size >= 36 {
            width = r.dword()? as i32;
            height = r.dword()? as i32;
            // The dword holds planes (ignored, as OpenCV does) and the bit count.
            let mut bits = (r.dword()? >> 16) as u16;
            let code = r.dword()?;
            r.skip(12);
            let used = r.dword()? as i32;
            let mut masks = None;
            if bits == 32 && code == 3 && size >= 56 {
                r.skip(4);
                let mut m = [None; 4];
                for f in &mut m {
                    let mask = r.dword()?;
                    if mask != 0 {
                        let shift = mask.trailing_zeros();
                        *f = Some(Field {
                            mask,
                            shift,
                            scale: 255.0f32 / (mask >> shift) as f32,
                        });
                    }
                }
                // OpenCV applies the masks only when R, G and B all have one.
                masks = m[..3].iter().all(Option::is_some).then_some(m);
                r.skip(size as usize - 56);
            } else {
                r.skip(size as usize - 36);
            }
            compression = match (bits, code) {
                (1 | 4 | 8 | 24 | 32, 0) | (16, 0) => Compression::Rgb,
                (16 | 32, 3) => Compression::BitFields,
                (4, 2) => Compression::Rle4,
                (8, 1) => Compression::Rle8,
                _ => {
                    return Err(err(format!(
                        "BMP with {bits} bits per pixel and compression {code} is not supported"
                    )));
                }
            };
            if width <= 0 || height == 0 {
                return Err(err(format!("BMP size {width}x{height} is invalid")));
            }
            let mut is_color = true;
            if bits <= 8 {
                if !(0..=256).contains(&used) {
                    return Err(err(format!("BMP palette of {used} colors")));
                }
                let n = if used == 0 {
                    1usize << bits
                } else {
                    used as usize
                };
                let raw = r.bytes(n * 4)?;
                for (entry, quad) in palette.iter_mut().zip(raw.chunks_exact(4)) {
                    entry.copy_from_slice(&quad[..3]);
                }
                is_color = palette[..1 << bits]
                    .iter()
                    .any(|&[b, g, r]| b != g || b != r);
            } else if bits == 16 && compression == Compression::BitFields {
                let (red, green, blue) = (r.dword()?, r.dword()?, r.dword()?);
                bits = match (red, green, blue) {
                    (0x7c00, 0x3e0, 0x1f) => 15,
                    (0xf800, 0x7e0, 0x1f) => 16,
                    _ => {
                        return Err(err(format!(
                            "16-bit BMP masks {red:#x}/{green:#x}/{blue:#x}: only 5-6-5 and 5-5-5 are read"
                        )));
                    }
                };
            } else if bits == 16 {
                bits = 15;
            }
            bpp = bits;
            color = is_color;
            fields = masks;
        } else if size == 12 {
            width = i32::from(r.word()?);
            height = i32::from(r.word()?);
            bpp = (r.dword()? >> 16) as u16;
            compression = Compression::Rgb;
            if width == 0 || height == 0 || !matches!(bpp, 1 | 4 | 8 | 24 | 32) {
                return Err(err(format!(
                    "OS/2 BMP of {width}x{height} with {bpp} bits per pixel is not supported"
                )));
            }
            if bpp <= 8 {
                let raw = r.bytes(3 << bpp)?;
                for (entry, bgr) in palette.iter_mut().zip(raw.chunks_exact(3)) {
                    entry.copy_from_slice(bgr);
                }
            }
            // OpenCV never marks an OS/2 1.x bitmap as color: one gray channel.
            color = false;
            fields = None;
        } else {
            return Err(err(format!("BMP header size {size} is not supported")));
        }
        if offset < 0 {
            return Err(err("BMP pixel data offset is negative"));
        }
        let channels = match (color, bpp) {
            (false, _) => 1,
            (true, 32) if compression == Compression::BitFields => 4,
            (true, _) => 3,
        };
        Ok(BmpDecoder {
            data,
            offset: offset as usize,
            width: width as u32,
            height: height.unsigned_abs(),
            bottom_up: height > 0,
            bpp,
            compression,
            palette,
            channels,
            fields,
        })
    }

    /// The output row that the file's `y`-th row lands in.
    fn row(&self, y: usize) -> usize {
        if self.bottom_up {
            self.height as usize - 1 - y
        } else {
            y
        }
    }

    fn gray_palette(&self) -> [u8; 256] {
        let mut g = [0u8; 256];
        for (v, &[b, gr, r]) in g.iter_mut().zip(self.palette.iter()) {
            *v = gray(b, gr, r);
        }
        g
    }

    fn decode_into(self, buf: &mut [u8]) -> ImageResult<()> {
        let (w, h) = (self.width as usize, self.height as usize);
        let nch = self.channels;
        let stride = w * nch;
        if buf.len() < stride * h {
            return Err(err("BMP output buffer is too small"));
        }
        match self.compression {
            Compression::Rle8 | Compression::Rle4 => {
                let mut out = Rle {
                    buf,
                    dec: &self,
                    gray: self.gray_palette(),
                    x: 0,
                    y: 0,
                };
                if self.compression == Compression::Rle8 {
                    out.rle8()
                } else {
                    out.rle4()
                }
            }
            _ => self.rows(buf),
        }
    }

    /// Uncompressed rows.
    fn rows(&self, buf: &mut [u8]) -> ImageResult<()> {
        let (w, h) = (self.width as usize, self.height as usize);
        let nch = self.channels;
        let stride = w * nch;
        let bits = if self.bpp == 15 {
            16
        } else {
            self.bpp as usize
        };
        let pitch = (w * bits).div_ceil(8).next_multiple_of(4);
        let gray_palette = self.gray_palette();
        let mut r = Reader {
            data: self.data,
            at: self.offset,
        };
        for y in 0..h {
            let src = r.bytes(pitch)?;
            let at = self.row(y) * stride;
            let dst = &mut buf[at..at + stride];
            match self.bpp {
                1 | 4 | 8 => {
                    let per = 8 / self.bpp as usize;
                    for x in 0..w {
                        let byte = src[x / per];
                        let bit = (x % per) * self.bpp as usize;
                        let index = (byte << bit) >> (8 - self.bpp);
                        self.put_index(&mut dst[x * nch..], index, &gray_palette);
                    }
                }
                15 | 16 => {
                    for (x, px) in src.chunks_exact(2).take(w).enumerate() {
                        let t = u32::from(u16::from_le_bytes([px[0], px[1]]));
                        let b = (t << 3) as u8;
                        let (g, r) = if self.bpp == 15 {
                            (((t >> 2) & !7) as u8, ((t >> 7) & !7) as u8)
                        } else {
                            (((t >> 3) & !3) as u8, ((t >> 8) & !7) as u8)
                        };
                        put_bgr(&mut dst[x * nch..], nch, [b, g, r]);
                    }
                }
                24 => {
                    for (x, px) in src.chunks_exact(3).take(w).enumerate() {
                        put_bgr(&mut dst[x * nch..], nch, [px[0], px[1], px[2]]);
                    }
                }
                _ => {
                    for (x, px) in src.chunks_exact(4).take(w).enumerate() {
                        let o = &mut dst[x * nch..];
                        match (&self.fields, nch) {
                            (Some(f), 4) => {
                                let v = u32::from_le_bytes([px[0], px[1], px[2], px[3]]);
                                for (c, field) in f.iter().enumerate() {
                                    o[c] = field.map_or(255, |f| f.apply(v));
                                }
                            }
                            (None, 4) => o[..4].copy_from_slice(&[px[2], px[1], px[0], px[3]]),
                            _ => put_bgr(o, nch, [px[0], px[1], px[2]]),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn put_index(&self, o: &mut [u8], index: u8, gray_palette: &[u8; 256]) {
        if self.channels == 1 {
            o[0] = gray_palette[index as usize];
        } else {
            let [b, g, r] = self.palette[index as usize];
            o[..3].copy_from_slice(&[r, g, b]);
        }
    }
}

impl Field {
    /// The field of `v` widened to 8 bits, truncated as OpenCV's cast does.
    fn apply(self, v: u32) -> u8 {
        (((v & self.mask) >> self.shift) as f32 * self.scale) as u8
    }
}

/// Writes one pixel given as (B, G, R): RGB, or gray as OpenCV converts it.
fn put_bgr(o: &mut [u8], nch: usize, [b, g, r]: [u8; 3]) {
    if nch == 1 {
        o[0] = gray(b, g, r);
    } else {
        o[..3].copy_from_slice(&[r, g, b]);
    }
}

/// OpenCV's RLE walk: a position (`x` in samples within file row `y`) that
/// runs, literal runs, end-of-line, delta and end-of-file codes move.
struct Rle<'b, 'a> {
    buf: &'b mut [u8],
    dec: &'b BmpDecoder<'a>,
    gray: [u8; 256],
    x: usize,
    y: usize,
}

impl Rle<'_, '_> {
    fn width3(&self) -> usize {
        self.dec.width as usize * self.dec.channels
    }

    fn height(&self) -> usize {
        self.dec.height as usize
    }

    fn put(&mut self, index: u8) {
        let at = self.dec.row(self.y) * self.width3() + self.x;
        let nch = self.dec.channels;
        let o = &mut self.buf[at..at + nch];
        if nch == 1 {
            o[0] = self.gray[index as usize];
        } else {
            let [b, g, r] = self.dec.palette[index as usize];
            o.copy_from_slice(&[r, g, b]);
        }
    }

    /// OpenCV's `FillUniColor`: `count` samples of palette entry `index`
    /// from the position on, wrapping to the next row at the row's end;
    /// reaching the end of a row (even with `count` 0) moves to the next.
    fn fill(&mut self, mut count: usize, index: u8) {
        let (width3, nch) = (self.width3(), self.dec.channels);
        loop {
            let end = (self.x + count).min(width3);
            count -= end - self.x;
            while self.x < end {
                self.put(index);
                self.x += nch;
            }
            if self.x >= width3 {
                self.x = 0;
                self.y += 1;
                if self.y >= self.height() {
                    break;
                }
            }
            if count == 0 {
                break;
            }
        }
    }

    /// `n` literal pixels of `bits` bits each from `src`.
    fn literal(&mut self, src: &[u8], n: usize, bits: u8) {
        let per = 8 / bits as usize;
        for i in 0..n {
            let byte = src[i / per];
            let index = (byte << ((i % per) * bits as usize)) >> (8 - bits);
            self.put(index);
            self.x += self.dec.channels;
        }
    }

    fn bad() -> ImageError {
        err("BMP RLE data runs past the end of a row")
    }

    fn rle8(&mut self) -> ImageResult<()> {
        let nch = self.dec.channels;
        let width3 = self.width3();
        let height = self.height();
        let mut r = Reader {
            data: self.dec.data,
            at: self.dec.offset,
        };
        let mut line_end_flag = false;
        loop {
            let (len, code) = (r.byte()? as usize, r.byte()?);
            if len != 0 {
                let prev = self.y;
                if self.x + len * nch > width3 {
                    return Err(Self::bad());
                }
                self.fill(len * nch, code);
                line_end_flag = self.y != prev;
                if self.y >= height {
                    break;
                }
            } else if code > 2 {
                let n = code as usize;
                if self.x + n * nch > width3 {
                    return Err(Self::bad());
                }
                let src = r.bytes((n + 1) & !1)?;
                self.literal(src, n, 8);
                line_end_flag = false;
            } else {
                let mut shift = width3 - self.x;
                // An end-of-line right after a run that ended the row is
                // already done.
                if code != 0 || !line_end_flag || shift < width3 {
                    let mut dy = height - self.y;
                    if code == 2 {
                        shift = r.byte()? as usize * nch;
                        dy = r.byte()? as usize;
                    }
                    if code != 0 {
                        shift += dy * width3;
                    }
                    self.fill(shift, 0);
                    if self.y >= height {
                        break;
                    }
                }
                line_end_flag = false;
            }
        }
        Ok(())
    }

    /// RLE4 as OpenCV reads it: end-of-file and delta only move along the
    /// rows (a delta's row count is ignored), so only an end-of-line or run
    /// that completes the last row ends the image.
    fn rle4(&mut self) -> ImageResult<()> {
        let nch = self.dec.channels;
        let width3 = self.width3();
        let height = self.height();
        let mut r = Reader {
            data: self.dec.data,
            at: self.dec.offset,
        };
        loop {
            let (len, code) = (r.byte()? as usize, r.byte()?);
            if len != 0 {
                let end = self.x + len * nch;
                if end > width3 {
                    return Err(Self::bad());
                }
                let pair = [code >> 4, code & 15];
                let mut t = 0;
                while self.x < end {
                    self.put(pair[t]);
                    t ^= 1;
                    self.x += nch;
                }
            } else if code > 2 {
                let n = code as usize;
                if self.x + n * nch > width3 {
                    return Err(Self::bad());
                }
                let src = r.bytes((n.div_ceil(2) + 1) & !1)?;
                self.literal(src, n, 4);
            } else {
                let mut shift = width3 - self.x;
                if code == 2 {
                    shift = r.byte()? as usize * nch;
                    r.byte()?;
                }
                self.fill(shift, 0);
                if self.y >= height {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl ImageDecoder for BmpDecoder<'_> {
    fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn color_type(&self) -> ColorType {
        match self.channels {
            1 => ColorType::L8,
            3 => ColorType::Rgb8,
            _ => ColorType::Rgba8,
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

    /// A BMP with header size `hs` (12 for OS/2 1.x; over 40 with `masks`
    /// inside the header) and the given palette/mask bytes and pixel data.
    fn bmp(w: i32, h: i32, bpp: u16, comp: u32, hs: u32, extra: &[u8], px: &[u8]) -> Vec<u8> {
        let mut info = Vec::new();
        info.extend(hs.to_le_bytes());
        if hs == 12 {
            info.extend((w as u16).to_le_bytes());
            info.extend((h as u16).to_le_bytes());
            info.extend(1u16.to_le_bytes());
            info.extend(bpp.to_le_bytes());
        } else {
            info.extend(w.to_le_bytes());
            info.extend(h.to_le_bytes());
            info.extend(1u16.to_le_bytes());
            info.extend(bpp.to_le_bytes());
            info.extend(comp.to_le_bytes());
            info.extend([0; 20]);
            if bpp <= 8 {
                // Colors used: the palette given.
                info[32..36].copy_from_slice(&(extra.len() as u32 / 4).to_le_bytes());
            }
            info.resize(hs as usize, 0);
        }
        let (inside, after) = if hs > 40 {
            (extra.len().min(hs as usize - 40), extra)
        } else {
            (0, extra)
        };
        let at = 40.min(info.len());
        info[at..at + inside].copy_from_slice(&after[..inside]);
        let body: Vec<u8> = info.iter().chain(&after[inside..]).copied().collect();
        let offset = 14 + body.len() as u32;
        let mut out = b"BM".to_vec();
        out.extend((offset + px.len() as u32).to_le_bytes());
        out.extend([0; 4]);
        out.extend(offset.to_le_bytes());
        out.extend(body);
        out.extend(px);
        out
    }

    fn decode(data: &[u8]) -> ImageResult<(ColorType, Vec<u8>)> {
        let d = BmpDecoder::new(data)?;
        let c = d.color_type();
        let mut buf = vec![0xAB; d.total_bytes() as usize];
        d.read_image(&mut buf)?;
        Ok((c, buf))
    }

    fn gray_palette(n: u8) -> Vec<u8> {
        (0..n).flat_map(|i| [i * 10, i * 10, i * 10, 0]).collect()
    }

    #[test]
    fn a_gray_palette_gives_one_channel_and_a_color_one_rgb() {
        let px = [1, 3, 2, 0, 0, 1, 3, 0];
        let (c, b) = decode(&bmp(3, 2, 8, 0, 40, &gray_palette(4), &px)).unwrap();
        assert_eq!(c, ColorType::L8);
        // Bottom row first in the file.
        assert_eq!(b, [0, 10, 30, 10, 30, 20]);
        let mut pal = gray_palette(4);
        pal[4..8].copy_from_slice(&[1, 2, 3, 0]);
        let (c, b) = decode(&bmp(3, 2, 8, 0, 40, &pal, &px)).unwrap();
        assert_eq!(c, ColorType::Rgb8);
        assert_eq!(&b[..6], [0, 0, 0, 3, 2, 1]);
    }

    #[test]
    fn sixteen_bit_samples_widen_by_shifting_like_opencv() {
        let px: Vec<u8> = [0xffffu16, 0x8001, 0x7c00, 0x03e0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let (_, b) = decode(&bmp(2, 2, 16, 0, 40, &[], &px)).unwrap();
        assert_eq!(b, [248, 0, 0, 0, 248, 0, 248, 248, 248, 0, 0, 8]);
        let masks: Vec<u8> = [0xf800u32, 0x7e0, 0x1f]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let (_, b) = decode(&bmp(2, 2, 16, 3, 40, &masks, &px)).unwrap();
        // OpenCV's values for this file (cv2 5.0, BGR turned into RGB).
        assert_eq!(b, [120, 128, 0, 0, 124, 0, 248, 252, 248, 128, 0, 8]);
    }

    #[test]
    fn thirty_two_bit_fields_scale_as_opencv_and_short_headers_keep_bytes() {
        let px: Vec<u8> = [0xffffu32, 0x7fff, 0x0421, 0x8421]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let masks: Vec<u8> = [0x7c00u32, 0x3e0, 0x1f, 0x8000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let (c, b) = decode(&bmp(2, 2, 32, 3, 124, &masks, &px)).unwrap();
        assert_eq!(c, ColorType::Rgba8);
        assert_eq!(
            b,
            [
                8, 8, 8, 0, 8, 8, 8, 255, 255, 255, 255, 255, 255, 255, 255, 0
            ]
        );
        let px: Vec<u8> = [0xffff_ffffu32, 0x3ff0_03ff, 0x0010_0401, 0x4000_0000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let masks: Vec<u8> = [0x3ff0_0000u32, 0xffc00, 0x3ff, 0xc000_0000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let (_, b) = decode(&bmp(2, 2, 32, 3, 124, &masks, &px)).unwrap();
        assert_eq!(
            b,
            [0, 0, 0, 0, 0, 0, 0, 85, 255, 255, 255, 255, 255, 0, 255, 0]
        );
        // A 40-byte header: the masks after it are not applied (B, G, R, A bytes).
        let px: Vec<u8> = (0..16).collect();
        let (c, b) = decode(&bmp(2, 2, 32, 3, 40, &masks[..12], &px)).unwrap();
        assert_eq!(c, ColorType::Rgba8);
        assert_eq!(&b[..4], [10, 9, 8, 11]);
        // Uncompressed 32-bit: three channels.
        let (c, b) = decode(&bmp(2, 2, 32, 0, 124, &[], &px)).unwrap();
        assert_eq!(c, ColorType::Rgb8);
        assert_eq!(&b[..3], [10, 9, 8]);
    }

    #[test]
    fn os2_headers_give_gray_as_opencv_does() {
        let px = [10, 200, 30, 40, 50, 60, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0];
        let (c, b) = decode(&bmp(2, 2, 24, 0, 12, &[], &px)).unwrap();
        assert_eq!(c, ColorType::L8);
        assert_eq!(b, [29, 150, 128, 52]);
    }

    #[test]
    fn rle8_deltas_and_early_end_fill_with_palette_entry_0() {
        let mut pal = gray_palette(4);
        pal[..4].copy_from_slice(&[7, 7, 7, 0]);
        // 4x3, bottom row first: row 0 "1 1" then a delta (1 right, 1 up) to
        // x=3 of row 1, "3", end of line, end of file (row 2 skipped).
        let stream = [2, 1, 0, 2, 1, 1, 1, 3, 0, 0, 0, 1];
        let (_, b) = decode(&bmp(4, 3, 8, 1, 40, &pal, &stream)).unwrap();
        assert_eq!(b, [7, 7, 7, 7, 7, 7, 7, 30, 10, 10, 7, 7]);
    }

    #[test]
    fn rle4_end_of_file_ends_only_the_row_as_in_opencv() {
        let pal = gray_palette(16);
        // 4x3: one row, then end of file: OpenCV reads past the data and fails.
        let short = [4, 0x12, 0, 0, 0, 1];
        assert!(decode(&bmp(4, 3, 4, 2, 40, &pal, &short)).is_err());
        let padded = [4, 0x12, 0, 0, 0, 1, 0, 0];
        let (_, b) = decode(&bmp(4, 3, 4, 2, 40, &pal, &padded)).unwrap();
        assert_eq!(b, [0, 0, 0, 0, 0, 0, 0, 0, 10, 20, 10, 20]);
        // A delta's row count is ignored.
        let delta = [1, 0x11, 0, 2, 2, 5, 1, 0x22, 0, 0, 0, 0, 0, 0];
        let (_, b) = decode(&bmp(4, 3, 4, 2, 40, &pal, &delta)).unwrap();
        assert_eq!(&b[8..], [10, 0, 0, 20]);
    }

    #[test]
    fn hostile_headers_are_errors_not_panics() {
        let ok = bmp(3, 2, 8, 0, 40, &gray_palette(4), &[1, 3, 2, 0, 0, 1, 3, 0]);
        for n in 0..ok.len() {
            let _ = decode(&ok[..n]);
        }
        for (at, v) in [
            (10, 0xFFu8),
            (13, 0x80),
            (14, 0x7F),
            (17, 0x80),
            (22, 0x80),
            (28, 32),
        ] {
            let mut bad = ok.clone();
            bad[at] = v;
            let _ = decode(&bad);
        }
        assert!(decode(&bmp(0, 2, 8, 0, 40, &gray_palette(4), &[0; 8])).is_err());
        assert!(decode(&bmp(2, 2, 8, 0, 13, &[], &[0; 8])).is_err());
        assert!(decode(&bmp(2, 2, 16, 3, 40, &[0; 12], &[0; 8])).is_err());
    }
}
