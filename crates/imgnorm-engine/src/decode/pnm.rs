//! The Netpbm family as OpenCV reads it: P1/P4 bitmaps (0 is white: 255,
//! 1 is black: 0), P2/P5 gray and P3/P6 color, plain and binary, 8-bit when
//! the maxval is below 256 and 16-bit (big-endian in the file) above. Values
//! are kept as stored, not rescaled to the maxval (OpenCV does not either).
//! PFM (`PF` color, `Pf` gray): 32-bit float samples, rows stored bottom to
//! top, little-endian when the scale is negative; each sample multiplied by
//! `1 / |scale|` in float32, as OpenCV does.
use image::error::{DecodingError, ImageFormatHint};
use image::{ColorType, ImageDecoder, ImageError, ImageFormat, ImageResult};
use imgnorm_core::sample::SampleType;

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
    /// PFM: big-endian samples, and the factor each one is multiplied by.
    float: Option<(bool, f32)>,
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

    /// The next decimal number with an optional sign, fraction and exponent
    /// (PFM's scale).
    fn real(&mut self) -> ImageResult<f64> {
        self.skip_space();
        let start = self.at;
        while self
            .data
            .get(self.at)
            .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
        {
            self.at += 1;
        }
        std::str::from_utf8(&self.data[start..self.at])
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .ok_or_else(|| err("PFM scale is not a number"))
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
    /// Reads the header of a P1–P6 or PFM file.
    pub fn new(data: &'a [u8]) -> ImageResult<PnmDecoder<'a>> {
        if is_pfm(data) {
            return Self::new_pfm(data);
        }
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
            float: None,
        })
    }

    /// Reads the header of a PFM file: `PF` or `Pf`, width, height, scale,
    /// one whitespace byte.
    fn new_pfm(data: &'a [u8]) -> ImageResult<PnmDecoder<'a>> {
        let kind = if data[1] == b'F' { 3 } else { 2 };
        let mut t = Tokens { data, at: 2 };
        let width = t.number(10)?;
        let height = t.number(10)?;
        let scale = t.real()?;
        if scale == 0.0 || !scale.is_finite() {
            return Err(err(format!("PFM scale {scale} (must be finite and not 0)")));
        }
        let body_at = match data.get(t.at) {
            Some(&b) if is_space(b) => t.at + 1,
            _ => return Err(err("PFM header is not followed by whitespace")),
        };
        // OpenCV: `buffer *= 1.f / fabs(scale)`, in float32.
        let factor = (1.0 / scale.abs()) as f32;
        Ok(PnmDecoder {
            kind,
            width,
            height,
            maxval: 0,
            body: &data[body_at..],
            float: Some((scale > 0.0, factor)),
        })
    }

    fn channels(&self) -> usize {
        if matches!(self.kind, 3 | 6) { 3 } else { 1 }
    }

    /// The output's channels and sample type for PFM (`float32`, which
    /// `ColorType` has no gray name for); `None` for P1–P6.
    pub fn samples(&self) -> Option<(usize, SampleType)> {
        self.float.map(|_| (self.channels(), SampleType::Float32))
    }

    /// PFM: rows from the bottom up, samples scaled, native-endian out.
    fn decode_pfm(&self, big: bool, factor: f32, buf: &mut [u8]) -> ImageResult<()> {
        let row = self.width as usize * self.channels() * 4;
        let h = self.height as usize;
        let body = self
            .body
            .get(..row * h)
            .ok_or_else(|| err("PFM data is truncated"))?;
        let out = buf
            .get_mut(..row * h)
            .ok_or_else(|| err("PFM output buffer too small"))?;
        for (y, dst) in out.chunks_exact_mut(row).enumerate() {
            let src = &body[(h - 1 - y) * row..(h - y) * row];
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                let b = [s[0], s[1], s[2], s[3]];
                let v = if big {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                };
                let v = if factor == 1.0 { v } else { v * factor };
                d.copy_from_slice(&v.to_ne_bytes());
            }
        }
        Ok(())
    }

    fn sixteen(&self) -> bool {
        self.maxval > 255
    }

    fn decode_into(self, buf: &mut [u8]) -> ImageResult<()> {
        if let Some((big, factor)) = self.float {
            return self.decode_pfm(big, factor, buf);
        }
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
        if self.float.is_some() {
            // Float samples (see `samples`): gray has no `ColorType`; one of
            // the same size per pixel keeps `total_bytes` right.
            return if self.channels() == 3 {
                ColorType::Rgb32F
            } else {
                ColorType::Rgba8
            };
        }
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
    fn pfm_rows_go_top_down_and_scale_gives_endianness_and_factor() {
        // 1x2 gray, little-endian (scale -1): file rows bottom first.
        let mut f = b"Pf\n1 2\n-1.0\n".to_vec();
        f.extend_from_slice(&1.5f32.to_le_bytes());
        f.extend_from_slice(&(-2.0f32).to_le_bytes());
        let d = PnmDecoder::new(&f).unwrap();
        assert_eq!(d.samples(), Some((1, SampleType::Float32)));
        let mut buf = vec![0; 8];
        d.read_image(&mut buf).unwrap();
        let v: Vec<f32> = buf
            .chunks(4)
            .map(|p| f32::from_ne_bytes([p[0], p[1], p[2], p[3]]))
            .collect();
        assert_eq!(v, [-2.0, 1.5]);
        // Big-endian (scale 2.5): multiplied by 1/2.5 in float32.
        let mut f = b"PF\n1 1\n2.5\n".to_vec();
        for x in [1.0f32, 2.0, 255.0] {
            f.extend_from_slice(&x.to_be_bytes());
        }
        let d = PnmDecoder::new(&f).unwrap();
        assert_eq!(d.samples(), Some((3, SampleType::Float32)));
        let mut buf = vec![0; 12];
        d.read_image(&mut buf).unwrap();
        let v: Vec<f32> = buf
            .chunks(4)
            .map(|p| f32::from_ne_bytes([p[0], p[1], p[2], p[3]]))
            .collect();
        assert_eq!(v, [0.4f32, 2.0 * 0.4f32, 255.0 * 0.4f32]);
        assert!(PnmDecoder::new(b"PF\n1 1\n0\n").is_err());
        assert!(
            PnmDecoder::new(b"PF\n1 1\n-1\n\x00")
                .unwrap()
                .read_image(&mut [0; 12])
                .is_err()
        );
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
