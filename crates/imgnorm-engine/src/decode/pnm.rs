//! The Netpbm family as OpenCV reads it: P1/P4 bitmaps (0 is white: 255,
//! 1 is black: 0), P2/P5 gray and P3/P6 color, plain and binary, 8-bit when
//! the maxval is below 256 and 16-bit (big-endian in the file) above. Values
//! are kept as stored, not rescaled to the maxval (OpenCV does not either).
//! PFM (32-bit float) is recognised but not decoded: the engine holds 8- and
//! 16-bit integer samples only.
use image::error::{DecodingError, ImageFormatHint};
use image::{ColorType, ImageDecoder, ImageError, ImageFormat, ImageResult};

/// True when `data` starts like a Netpbm file the engine reads (P1–P6).
pub fn is_pnm(data: &[u8]) -> bool {
    data.len() >= 3 && data[0] == b'P' && (b'1'..=b'6').contains(&data[1]) && is_space(data[2])
}

/// True when `data` starts like a PFM (Portable Float Map) file.
pub fn is_pfm(data: &[u8]) -> bool {
    data.len() >= 3 && data[0] == b'P' && matches!(data[1], b'F' | b'f') && is_space(data[2])
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn err(msg: impl Into<String>) -> ImageError {
    ImageError::Decoding(DecodingError::new(
        ImageFormatHint::Exact(ImageFormat::Pnm),
        msg.into(),
    ))
}

/// A Netpbm image whose header has been read.
pub struct PnmDecoder<'a> {
    kind: u8,
    width: u32,
    height: u32,
    maxval: u32,
    /// The bytes after the header (binary: the samples; plain: the text).
    body: &'a [u8],
}

/// Reads whitespace- and comment-separated ASCII numbers.
struct Tokens<'a> {
    data: &'a [u8],
    at: usize,
}

impl Tokens<'_> {
    fn skip_space(&mut self) {
        while let Some(&b) = self.data.get(self.at) {
            if is_space(b) {
                self.at += 1;
            } else if b == b'#' {
                while self
                    .data
                    .get(self.at)
                    .is_some_and(|&c| c != b'\n' && c != b'\r')
                {
                    self.at += 1;
                }
            } else {
                break;
            }
        }
    }

    /// The next number; `digits_max` limits a P1 token to one digit ("01"
    /// is two pixels).
    fn number(&mut self, digits_max: usize) -> ImageResult<u32> {
        self.skip_space();
        let start = self.at;
        let mut v: u32 = 0;
        while let Some(&b) = self.data.get(self.at) {
            if !b.is_ascii_digit() || self.at - start == digits_max {
                break;
            }
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u32::from(b - b'0')))
                .ok_or_else(|| err("PNM number too large"))?;
            self.at += 1;
        }
        if self.at == start {
            return Err(err(if self.at >= self.data.len() {
                "PNM file ends early"
            } else {
                "PNM file has a non-number where a number belongs"
            }));
        }
        Ok(v)
    }
}

impl<'a> PnmDecoder<'a> {
    /// Reads the header of a P1–P6 file.
    pub fn new(data: &'a [u8]) -> ImageResult<PnmDecoder<'a>> {
        if !is_pnm(data) {
            return Err(err("not a PNM file"));
        }
        let kind = data[1] - b'0';
        let mut t = Tokens { data, at: 2 };
        let width = t.number(10)?;
        let height = t.number(10)?;
        let maxval = if matches!(kind, 1 | 4) {
            1
        } else {
            t.number(10)?
        };
        if maxval == 0 || maxval > 65535 {
            return Err(err(format!("PNM maxval {maxval} is outside 1..=65535")));
        }
        // Binary data starts after exactly one whitespace byte.
        let body_at = if kind >= 4 {
            match data.get(t.at) {
                Some(&b) if is_space(b) => t.at + 1,
                _ => return Err(err("PNM header is not followed by whitespace")),
            }
        } else {
            t.at
        };
        Ok(PnmDecoder {
            kind,
            width,
            height,
            maxval,
            body: &data[body_at..],
        })
    }

    fn channels(&self) -> usize {
        if matches!(self.kind, 3 | 6) { 3 } else { 1 }
    }

    fn sixteen(&self) -> bool {
        self.maxval > 255
    }

    fn decode_into(self, buf: &mut [u8]) -> ImageResult<()> {
        let n = self.width as usize * self.height as usize * self.channels();
        let out = |i: usize, v: u32, buf: &mut [u8]| {
            if self.sixteen() {
                let v = v.min(65535) as u16;
                buf[2 * i..2 * i + 2].copy_from_slice(&v.to_ne_bytes());
            } else {
                buf[i] = v.min(255) as u8;
            }
        };
        match self.kind {
            4 => {
                let row = (self.width as usize).div_ceil(8);
                let need = row * self.height as usize;
                let body = self
                    .body
                    .get(..need)
                    .ok_or_else(|| err("PBM data is truncated"))?;
                for y in 0..self.height as usize {
                    for x in 0..self.width as usize {
                        let bit = body[y * row + x / 8] >> (7 - x % 8) & 1;
                        buf[y * self.width as usize + x] = if bit == 1 { 0 } else { 255 };
                    }
                }
            }
            5 | 6 => {
                let bytes = if self.sixteen() { 2 } else { 1 };
                let body = self
                    .body
                    .get(..n * bytes)
                    .ok_or_else(|| err("PNM data is truncated"))?;
                if bytes == 1 {
                    buf[..n].copy_from_slice(body);
                } else {
                    for (i, p) in body.chunks_exact(2).enumerate() {
                        out(i, u32::from(u16::from_be_bytes([p[0], p[1]])), buf);
                    }
                }
            }
            _ => {
                let mut t = Tokens {
                    data: self.body,
                    at: 0,
                };
                let digits = if self.kind == 1 { 1 } else { 10 };
                for i in 0..n {
                    let v = t.number(digits)?;
                    let v = if self.kind == 1 {
                        if v == 0 { 255 } else { 0 }
                    } else {
                        v
                    };
                    out(i, v, buf);
                }
            }
        }
        Ok(())
    }
}

impl ImageDecoder for PnmDecoder<'_> {
    fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn color_type(&self) -> ColorType {
        match (self.channels(), self.sixteen()) {
            (1, false) => ColorType::L8,
            (1, true) => ColorType::L16,
            (_, false) => ColorType::Rgb8,
            (_, true) => ColorType::Rgb16,
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

    fn decode(data: &[u8]) -> (ColorType, Vec<u8>) {
        let d = PnmDecoder::new(data).unwrap();
        let mut buf = vec![0; d.total_bytes() as usize];
        let c = d.color_type();
        d.read_image(&mut buf).unwrap();
        (c, buf)
    }

    #[test]
    fn values_are_kept_as_stored_like_opencv() {
        assert_eq!(decode(b"P5\n3 1\n100\n\x00\x32\x64").1, [0, 50, 100]);
        let (c, b) = decode(b"P2\n# c\n3 1\n1000\n0 500 1000\n");
        assert_eq!(c, ColorType::L16);
        let v: Vec<u16> = b
            .chunks(2)
            .map(|p| u16::from_ne_bytes([p[0], p[1]]))
            .collect();
        assert_eq!(v, [0, 500, 1000]);
        assert_eq!(decode(b"P1\n3 1\n010").1, [255, 0, 255]);
        assert_eq!(decode(b"P4\n3 1\n\x40").1, [255, 0, 255]);
        assert_eq!(decode(b"P3\n2 1\n255\n1 2 3 4 5 6\n").1, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn truncated_and_hostile_headers_are_errors() {
        assert!(PnmDecoder::new(b"P5\n3 1\n").is_err());
        assert!(PnmDecoder::new(b"P5\n99999999999 1\n255\n").is_err());
        assert!(PnmDecoder::new(b"P5\n3 1\n70000\n").is_err());
        let d = PnmDecoder::new(b"P5\n3 2\n255\n\x00").unwrap();
        let mut buf = vec![0; 6];
        assert!(d.read_image(&mut buf).is_err());
    }
}
