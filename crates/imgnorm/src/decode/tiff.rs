//! TIFF through the `tiff` crate's chunk API: every strip or tile is read on
//! its own and placed by this module, so separate planes (`PlanarConfiguration=2`,
//! strips and tiles, any bit depth the crate reads) come out interleaved, and
//! the crate's whole-image path (which asserts on tiled planar files) is never
//! called. Adds what the crate leaves out and OpenCV (libtiff) does:
//! `FillOrder=2` (bits reversed in every byte of the raw chunks), 1-bit
//! images as 0/255, 12-bit samples widened like OpenCV, and the first page of
//! a multi-page file with a warning.
use std::io::Cursor;

use image::error::{DecodingError, ImageFormatHint, LimitError, LimitErrorKind};
use image::{ColorType, ImageDecoder, ImageError, ImageFormat, ImageResult};
use tiff::ColorType as Tc;
use tiff::decoder::{ChunkType, Decoder, DecodingResult, Limits};
use tiff::tags::{CompressionMethod, PhotometricInterpretation, SampleFormat, Tag};

/// A TIFF's first page, ready to decode into interleaved 8- or 16-bit samples.
pub struct TiffDecoder<'a> {
    dec: Decoder<Cursor<std::borrow::Cow<'a, [u8]>>>,
    width: u32,
    height: u32,
    layout: Layout,
    pages: bool,
    orientation: u16,
}

/// How the decoded chunk samples map to output samples.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Samples per pixel in the file (all planes).
    samples: usize,
    /// Samples per pixel in the output.
    channels: usize,
    /// JPEG-compressed YCbCr: the JPEG decoder leaves the samples in YCbCr
    /// (the stream has no JFIF/Adobe marker), converted here as libjpeg does.
    ycbcr: bool,
    /// 16-bit WhiteIsZero: OpenCV reads these samples as stored (it inverts
    /// only bitmaps and 8-bit gray); the crate inverts them, so undo it.
    raw_white16: bool,
    /// Bits per sample in the file.
    bits: u8,
    /// Separate planes.
    planar: bool,
}

fn err(msg: impl Into<String>) -> ImageError {
    ImageError::Decoding(DecodingError::new(
        ImageFormatHint::Exact(ImageFormat::Tiff),
        msg.into(),
    ))
}

fn tiff_err(e: tiff::TiffError) -> ImageError {
    match e {
        tiff::TiffError::LimitsExceeded => {
            ImageError::Limits(LimitError::from_kind(LimitErrorKind::InsufficientMemory))
        }
        e => err(e.to_string()),
    }
}

impl<'a> TiffDecoder<'a> {
    /// Reads the first page's header from `data`; no allocation above
    /// `max_alloc` bytes is made, now or while decoding.
    pub fn new(data: &'a [u8], max_alloc: u64) -> ImageResult<TiffDecoder<'a>> {
        let open = |bytes: std::borrow::Cow<'a, [u8]>| {
            let mut limits = Limits::default();
            let cap = usize::try_from(max_alloc).unwrap_or(usize::MAX);
            limits.decoding_buffer_size = cap;
            limits.intermediate_buffer_size = cap;
            Decoder::new(Cursor::new(bytes))
                .map(|d| d.with_limits(limits))
                .map_err(tiff_err)
        };
        let mut dec = open(std::borrow::Cow::Borrowed(data))?;
        let fill_order = dec
            .find_tag_unsigned::<u16>(Tag::FillOrder)
            .map_err(tiff_err)?;
        if fill_order == Some(2) {
            // libtiff reverses the bits of every raw byte before decompressing;
            // the tiff crate ignores the tag: do it on a copy of the file.
            let copy = reverse_chunk_bits(&mut dec, data)?;
            dec = open(std::borrow::Cow::Owned(copy))?;
        }
        let (width, height) = dec.dimensions().map_err(tiff_err)?;
        let layout = layout_of(&mut dec)?;
        let orientation = dec
            .find_tag_unsigned::<u16>(Tag::Orientation)
            .ok()
            .flatten()
            .unwrap_or(1);
        let pages = dec.more_images();
        Ok(TiffDecoder {
            dec,
            width,
            height,
            layout,
            pages,
            orientation,
        })
    }

    /// True when the file has pages after the first (which is the one read).
    pub fn multi_page(&self) -> bool {
        self.pages
    }

    fn decode_into(mut self, buf: &mut [u8]) -> ImageResult<()> {
        let Layout {
            samples,
            channels,
            ycbcr,
            raw_white16,
            bits,
            planar,
        } = self.layout;
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = self.dec.chunk_dimensions();
        let (cw, ch) = (cw as usize, ch as usize);
        if cw == 0 || ch == 0 {
            return Err(err("TIFF chunk has zero size"));
        }
        let chunks = match self.dec.get_chunk_type() {
            ChunkType::Strip => self.dec.strip_count().map_err(tiff_err)?,
            ChunkType::Tile => self.dec.tile_count().map_err(tiff_err)?,
        } as usize;
        let across = w.div_ceil(cw);
        let per_plane = across * h.div_ceil(ch);
        let planes = if planar { samples } else { 1 };
        if chunks < per_plane * planes {
            return Err(err(format!(
                "TIFF has {chunks} strips/tiles, its size needs {}",
                per_plane * planes
            )));
        }
        let bytes_per = if bits > 8 { 2 } else { 1 };
        // Samples a chunk holds per pixel, and the first output channel it fills.
        let chunk_spp = if planar { 1 } else { samples };
        for plane in 0..planes {
            for j in 0..per_plane {
                let (x0, y0) = ((j % across) * cw, (j / across) * ch);
                let (dw, dh) = ((w - x0).min(cw), (h - y0).min(ch));
                let index = u32::try_from(plane * per_plane + j)
                    .map_err(|_| err("TIFF has too many chunks"))?;
                let chunk = self.dec.read_chunk(index).map_err(tiff_err)?;
                // Rows are `dw` pixels wide. The crate may decode more rows
                // than `dh` (it misjudges the bottom padding of the tiles of
                // planes after the first): only `dh` are used.
                let stride_px = dw;
                let place = Place {
                    x0,
                    y0,
                    dw,
                    dh,
                    stride_px,
                    chunk_spp,
                    first: if planar { plane } else { 0 },
                    width: w,
                    channels,
                    bytes_per,
                    bits,
                };
                place.copy(&chunk, buf)?;
            }
        }
        if raw_white16 {
            let n = w * h * channels * 2;
            buf.get_mut(..n)
                .ok_or_else(|| err("TIFF output buffer too small"))?
                .chunks_exact_mut(2)
                .for_each(|p| {
                    let v = u16::MAX - u16::from_ne_bytes([p[0], p[1]]);
                    p.copy_from_slice(&v.to_ne_bytes());
                });
        }
        if ycbcr && bits == 8 {
            let n = w * h * 3;
            buf.get_mut(..n)
                .ok_or_else(|| err("TIFF output buffer too small"))?
                .chunks_exact_mut(3)
                .for_each(ycbcr_to_rgb);
        }
        Ok(())
    }
}

/// libjpeg's YCbCr to RGB conversion (jdcolor.c: 16-bit fixed point,
/// rounded, clamped), in place on one pixel.
fn ycbcr_to_rgb(p: &mut [u8]) {
    const SCALE: i32 = 16;
    const HALF: i32 = 1 << (SCALE - 1);
    let fix = |x: f64| (x * f64::from(1 << SCALE) + 0.5) as i32;
    let (y, cb, cr) = (
        i32::from(p[0]),
        i32::from(p[1]) - 128,
        i32::from(p[2]) - 128,
    );
    let r = y + ((fix(1.40200) * cr + HALF) >> SCALE);
    let g = y + ((-fix(0.34414) * cb - fix(0.71414) * cr + HALF) >> SCALE);
    let b = y + ((fix(1.77200) * cb + HALF) >> SCALE);
    p[0] = r.clamp(0, 255) as u8;
    p[1] = g.clamp(0, 255) as u8;
    p[2] = b.clamp(0, 255) as u8;
}

/// Where one decoded chunk goes in the output.
struct Place {
    x0: usize,
    y0: usize,
    dw: usize,
    dh: usize,
    /// Pixels per decoded chunk row.
    stride_px: usize,
    chunk_spp: usize,
    first: usize,
    width: usize,
    channels: usize,
    bytes_per: usize,
    bits: u8,
}

impl Place {
    fn copy(&self, chunk: &DecodingResult, buf: &mut [u8]) -> ImageResult<()> {
        let take = self
            .chunk_spp
            .min(self.channels - self.first.min(self.channels));
        if take == 0 {
            return Ok(());
        }
        if take == self.channels && self.chunk_spp == self.channels && self.bits != 1 {
            return self.copy_rows(chunk, buf);
        }
        for y in 0..self.dh {
            for x in 0..self.dw {
                let out = ((self.y0 + y) * self.width + self.x0 + x) * self.channels + self.first;
                for s in 0..take {
                    let v = self.sample(chunk, y, x, s)?;
                    let at = (out + s) * self.bytes_per;
                    let dst = buf
                        .get_mut(at..at + self.bytes_per)
                        .ok_or_else(|| err("TIFF sample outside the image"))?;
                    if self.bytes_per == 2 {
                        dst.copy_from_slice(&v.to_ne_bytes());
                    } else {
                        dst[0] = v as u8;
                    }
                }
            }
        }
        Ok(())
    }

    /// Interleaved chunk with the output's samples: whole rows at a time.
    fn copy_rows(&self, chunk: &DecodingResult, buf: &mut [u8]) -> ImageResult<()> {
        let src: &[u8] = match chunk {
            DecodingResult::U8(v) => v,
            DecodingResult::U16(v) => bytemuck::cast_slice(v),
            _ => return Err(err(format!("unsupported TIFF bit depth {}", self.bits))),
        };
        let row = self.dw * self.channels * self.bytes_per;
        let stride = self.stride_px * self.channels * self.bytes_per;
        for y in 0..self.dh {
            let at = ((self.y0 + y) * self.width + self.x0) * self.channels * self.bytes_per;
            let from = src
                .get(y * stride..y * stride + row)
                .ok_or_else(|| err("TIFF strip or tile is shorter than its size"))?;
            buf.get_mut(at..at + row)
                .ok_or_else(|| err("TIFF sample outside the image"))?
                .copy_from_slice(from);
        }
        Ok(())
    }

    /// Sample `s` of pixel (`x`, `y`) of the chunk, as the output stores it.
    fn sample(&self, chunk: &DecodingResult, y: usize, x: usize, s: usize) -> ImageResult<u16> {
        let missing = || err("TIFF strip or tile is shorter than its size");
        match (chunk, self.bits) {
            (DecodingResult::U8(v), 1) => {
                let row = (self.stride_px * self.chunk_spp).div_ceil(8);
                let bit = x * self.chunk_spp + s;
                let byte = *v.get(y * row + bit / 8).ok_or_else(missing)?;
                Ok(if byte >> (7 - bit % 8) & 1 == 1 {
                    255
                } else {
                    0
                })
            }
            (DecodingResult::U8(v), 8) => v
                .get((y * self.stride_px + x) * self.chunk_spp + s)
                .map(|&b| u16::from(b))
                .ok_or_else(missing),
            (DecodingResult::U16(v), 16) => v
                .get((y * self.stride_px + x) * self.chunk_spp + s)
                .copied()
                .ok_or_else(missing),
            _ => Err(err(format!("unsupported TIFF bit depth {}", self.bits))),
        }
    }
}

/// The output layout of the first page, or why it is not supported.
fn layout_of<R: std::io::Read + std::io::Seek>(dec: &mut Decoder<R>) -> ImageResult<Layout> {
    let format = dec
        .find_tag_unsigned_vec::<u16>(Tag::SampleFormat)
        .map_err(tiff_err)?
        .and_then(|v| v.first().copied())
        .map_or(SampleFormat::Uint, SampleFormat::from_u16_exhaustive);
    let color = dec.colortype().map_err(tiff_err)?;
    let photometric = dec
        .find_tag_unsigned::<u16>(Tag::PhotometricInterpretation)
        .map_err(tiff_err)?
        .and_then(PhotometricInterpretation::from_u16);
    let compression = dec
        .find_tag_unsigned::<u16>(Tag::Compression)
        .map_err(tiff_err)?
        .and_then(CompressionMethod::from_u16);
    let planar = dec
        .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
        .map_err(tiff_err)?
        == Some(2);
    let (samples, bits) = match color {
        Tc::Gray(b) => (1, b),
        Tc::RGB(b) => (3, b),
        Tc::RGBA(b) => (4, b),
        Tc::GrayA(b) => (2, b),
        Tc::CMYK(b) => (4, b),
        Tc::CMYKA(b) => (5, b),
        Tc::Multiband {
            bit_depth,
            num_samples,
        } => (usize::from(num_samples), bit_depth),
        // JPEG-compressed YCbCr comes out of the JPEG decoder as RGB.
        Tc::YCbCr(b) if compression == Some(CompressionMethod::ModernJPEG) => (3, b),
        other => {
            return Err(err(format!(
                "unsupported TIFF color type {other:?} (photometric {photometric:?})"
            )));
        }
    };
    if format != SampleFormat::Uint {
        return Err(err(format!(
            "unsupported TIFF sample format {format:?} with {bits}-bit samples (only unsigned integers)"
        )));
    }
    if !matches!(bits, 1 | 8 | 16) || (bits == 1 && samples != 1) {
        return Err(err(format!(
            "unsupported TIFF bit depth {bits} ({samples} samples per pixel)"
        )));
    }
    // Gray with extra samples: gray and alpha, like OpenCV; others dropped.
    let channels = match (color, samples) {
        (Tc::Multiband { .. }, n) if n >= 2 => 2,
        (Tc::CMYKA(_), _) => 4,
        (_, n) => n.min(4),
    };
    let ycbcr = matches!(color, Tc::YCbCr(_));
    let raw_white16 = photometric == Some(PhotometricInterpretation::WhiteIsZero) && bits == 16;
    Ok(Layout {
        samples,
        channels,
        ycbcr,
        raw_white16,
        bits,
        planar: planar && samples > 1,
    })
}

/// A copy of `data` with the bits of every byte of every strip or tile
/// reversed (`FillOrder=2`).
fn reverse_chunk_bits<R: std::io::Read + std::io::Seek>(
    dec: &mut Decoder<R>,
    data: &[u8],
) -> ImageResult<Vec<u8>> {
    let (offsets, counts) = match dec.get_chunk_type() {
        ChunkType::Strip => (Tag::StripOffsets, Tag::StripByteCounts),
        ChunkType::Tile => (Tag::TileOffsets, Tag::TileByteCounts),
    };
    let offsets = dec
        .find_tag_unsigned_vec::<u64>(offsets)
        .map_err(tiff_err)?
        .unwrap_or_default();
    let counts = dec
        .find_tag_unsigned_vec::<u64>(counts)
        .map_err(tiff_err)?
        .unwrap_or_default();
    let mut copy = data.to_vec();
    for (&o, &n) in offsets.iter().zip(&counts) {
        let start = usize::try_from(o).unwrap_or(usize::MAX).min(copy.len());
        let end = usize::try_from(o.saturating_add(n))
            .unwrap_or(usize::MAX)
            .min(copy.len());
        for b in &mut copy[start..end] {
            *b = b.reverse_bits();
        }
    }
    Ok(copy)
}

impl ImageDecoder for TiffDecoder<'_> {
    fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn color_type(&self) -> ColorType {
        match (self.layout.channels, self.layout.bits > 8) {
            (1, false) => ColorType::L8,
            (2, false) => ColorType::La8,
            (3, false) => ColorType::Rgb8,
            (4, false) => ColorType::Rgba8,
            (1, true) => ColorType::L16,
            (2, true) => ColorType::La16,
            (3, true) => ColorType::Rgb16,
            _ => ColorType::Rgba16,
        }
    }

    fn orientation(&mut self) -> ImageResult<image::metadata::Orientation> {
        Ok(
            image::metadata::Orientation::from_exif(self.orientation.min(255) as u8)
                .unwrap_or(image::metadata::Orientation::NoTransforms),
        )
    }

    fn read_image(self, buf: &mut [u8]) -> ImageResult<()> {
        self.decode_into(buf)
    }

    fn read_image_boxed(self: Box<Self>, buf: &mut [u8]) -> ImageResult<()> {
        (*self).read_image(buf)
    }
}
