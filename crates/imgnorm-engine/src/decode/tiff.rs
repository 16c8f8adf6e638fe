//! TIFF through the `tiff` crate's chunk API: every strip or tile is read on
//! its own and placed by this module, so separate planes (`PlanarConfiguration=2`,
//! strips and tiles, any bit depth the crate reads) come out interleaved, and
//! the crate's whole-image path (which asserts on tiled planar files) is never
//! called. Adds what the crate leaves out and OpenCV (libtiff) does:
//! `FillOrder=2` (bits reversed in every byte of the raw chunks), 1-bit
//! images as 0/255, 12-bit gray samples unpacked to 16-bit words as OpenCV gives them, the first page of
//! a multi-page file with a warning (also when the page chain loops back, where
//! libtiff stops), and palette images (`PhotometricInterpretation=3`, which the
//! crate refuses: read as gray indices from a copy whose photometric tag says
//! so, then expanded as libtiff's RGBA interface does for OpenCV: 4- and
//! 8-bit to RGB, 1-bit to one gray channel). LZW and CCITT modified
//! Huffman / Group 3 pages are decompressed by the `unpack` submodule before
//! the crate reads them, and the Orientation tag
//! is applied to the pixels, as OpenCV 5 does for TIFF even with
//! `IMREAD_UNCHANGED`. CIE L*a*b* pages (8-bit) are read as RGB samples and
//! converted as libtiff's RGBA interface does for OpenCV, and so are 8-bit
//! CMYK pages (to RGBA with alpha 255, OpenCV's 4 channels).
use std::io::Cursor;

use image::error::{DecodingError, ImageFormatHint, LimitError, LimitErrorKind};
use image::{ColorType, ImageDecoder, ImageError, ImageFormat, ImageResult};
use imgnorm_core::sample::SampleType;
use tiff::ColorType as Tc;
use tiff::decoder::{ChunkType, Decoder, DecodingResult, Limits};
use tiff::tags::{CompressionMethod, PhotometricInterpretation, SampleFormat, Tag};

mod unpack;

/// A TIFF's first page, ready to decode into interleaved 8- or 16-bit samples.
pub struct TiffDecoder<'a> {
    dec: Decoder<Cursor<std::borrow::Cow<'a, [u8]>>>,
    width: u32,
    height: u32,
    layout: Layout,
    pages: bool,
    orientation: u16,
    /// Palette image: the color of each index (8-bit, as libtiff makes it).
    palette: Option<Vec<[u8; 3]>>,
    /// 12-bit gray: the image's width. The crate reads the page as 8-bit
    /// rows of the packed bytes (`width` is their count); the samples are
    /// unpacked here to 16-bit words holding the 12-bit values, as OpenCV
    /// gives them.
    twelve: Option<u32>,
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
    /// Palette indices: 1- and 4-bit samples kept as numbers (not 0/255).
    index: bool,
    /// CIE L*a*b* samples (read as RGB), converted to RGB after decoding.
    lab: bool,
    /// 8-bit CMYK: converted to RGBA (alpha 255) after decoding, as
    /// libtiff's RGBA interface gives it to OpenCV.
    cmyk: bool,
    /// Type of the output samples (bitmaps and palettes: `uint8`).
    sample: SampleType,
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
        let mut copy: Option<Vec<u8>> = None;
        let mut dec = match open(std::borrow::Cow::Borrowed(data)) {
            Ok(d) => d,
            Err(e) => {
                // A first page whose next-page pointer points back to it:
                // libtiff stops there and reads the page; so do we, from a
                // copy that ends the chain. More BitsPerSample values than
                // samples: libtiff reads one per sample; so do we, from a
                // copy whose tag has that count.
                let Some(fixed) = ifd::end_chain(data).or_else(|| ifd::per_sample_counts(data))
                else {
                    return Err(e);
                };
                let d = open(std::borrow::Cow::Owned(fixed.clone()))?;
                copy = Some(fixed);
                d
            }
        };
        let photometric = dec
            .find_tag_unsigned::<u16>(Tag::PhotometricInterpretation)
            .map_err(tiff_err)?;
        let mut palette = None;
        if photometric == Some(3) {
            let bits = dec
                .find_tag_unsigned_vec::<u16>(Tag::BitsPerSample)
                .map_err(tiff_err)?
                .and_then(|v| v.first().copied())
                .unwrap_or(1);
            if !matches!(bits, 1 | 4 | 8) {
                return Err(err(format!(
                    "palette TIFF with {bits}-bit indices (OpenCV reads 1, 4 and 8)"
                )));
            }
            let map = dec
                .find_tag_unsigned_vec::<u16>(Tag::ColorMap)
                .map_err(tiff_err)?
                .unwrap_or_default();
            let n = 1usize << bits;
            if map.len() != 3 * n {
                return Err(err(format!(
                    "palette TIFF: ColorMap has {} values, {}-bit indices need {}",
                    map.len(),
                    bits,
                    3 * n
                )));
            }
            // libtiff's RGBA interface takes a map with no value over 255
            // as 8-bit, else keeps the high byte of each 16-bit value.
            let eight = map.iter().all(|&v| v < 256);
            let c = |v: u16| if eight { v as u8 } else { (v >> 8) as u8 };
            palette = Some(
                (0..n)
                    .map(|i| [c(map[i]), c(map[n + i]), c(map[2 * n + i])])
                    .collect::<Vec<_>>(),
            );
            // The crate refuses palette images: read the indices as gray.
            let base = copy.as_deref().unwrap_or(data);
            let fixed = ifd::set_photometric(base, 1)
                .ok_or_else(|| err("palette TIFF: PhotometricInterpretation tag not found"))?;
            dec = open(std::borrow::Cow::Owned(fixed.clone()))?;
            copy = Some(fixed);
        }
        let lab = photometric == Some(8);
        if lab {
            // CIE L*a*b*, which the crate refuses: read the samples from a
            // copy that says RGB, converted after decoding (`lab_to_rgb`).
            let bits = dec
                .find_tag_unsigned_vec::<u16>(Tag::BitsPerSample)
                .map_err(tiff_err)?
                .unwrap_or_default();
            let spp = dec
                .find_tag_unsigned::<u16>(Tag::SamplesPerPixel)
                .map_err(tiff_err)?;
            if spp != Some(3) || bits.iter().any(|&b| b != 8) {
                return Err(err(
                    "CIE L*a*b* TIFF: only 8-bit samples without extra samples are read",
                ));
            }
            let base = copy.as_deref().unwrap_or(data);
            let fixed = ifd::set_photometric(base, 2)
                .ok_or_else(|| err("CIE L*a*b* TIFF: PhotometricInterpretation tag not found"))?;
            dec = open(std::borrow::Cow::Owned(fixed.clone()))?;
            copy = Some(fixed);
        }
        let fill_order = dec
            .find_tag_unsigned::<u16>(Tag::FillOrder)
            .map_err(tiff_err)?;
        if fill_order == Some(2) {
            // libtiff reverses the bits of every raw byte before decompressing;
            // the tiff crate ignores the tag: do it on a copy of the file.
            let reversed = reverse_chunk_bits(&mut dec, copy.as_deref().unwrap_or(data))?;
            dec = open(std::borrow::Cow::Owned(reversed.clone()))?;
            copy = Some(reversed);
        }
        let mut twelve = None;
        let first_bits = dec
            .find_tag_unsigned_vec::<u16>(Tag::BitsPerSample)
            .map_err(tiff_err)?
            .and_then(|v| v.first().copied());
        if palette.is_none() && first_bits == Some(12) {
            let (w, _) = dec.dimensions().map_err(tiff_err)?;
            let fixed = twelve_bit_copy(&mut dec, copy.as_deref().unwrap_or(data), w)?;
            dec = open(std::borrow::Cow::Owned(fixed.clone()))?;
            copy = Some(fixed);
            twelve = Some(w);
        }
        if let Some(unpacked) =
            unpack::unpack(&mut dec, copy.as_deref().unwrap_or(data), max_alloc)?
        {
            dec = open(std::borrow::Cow::Owned(unpacked))?;
        }
        let (width, height) = dec.dimensions().map_err(tiff_err)?;
        let mut layout = match &palette {
            Some(_) => palette_layout(&mut dec)?,
            None => layout_of(&mut dec)?,
        };
        layout.lab = lab;
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
            palette,
            twelve,
        })
    }

    /// True when the file has pages after the first (which is the one read).
    pub fn multi_page(&self) -> bool {
        self.pages
    }

    /// The Orientation tag, applied as OpenCV 5 applies it to every TIFF
    /// (with `IMREAD_UNCHANGED` too): 2-4 flip, 5-8 also transpose (where
    /// OpenCV 5 means to, but fails on an internal assertion).
    fn orientation_tag(&self) -> u16 {
        if (1..=8).contains(&self.orientation) {
            self.orientation
        } else {
            1
        }
    }

    /// The output's channels and sample type, for types `ColorType` has no
    /// name for (signed and 32-bit samples); `None` for the others, which
    /// [`ImageDecoder::color_type`] gives.
    pub fn samples(&self) -> Option<(usize, SampleType)> {
        let l = &self.layout;
        let plain = matches!(l.sample, SampleType::Uint8 | SampleType::Uint16);
        (self.palette.is_none() && self.twelve.is_none() && !plain)
            .then_some((l.channels, l.sample))
    }

    /// Bytes this decoder allocates beside the output buffer and the
    /// crate's chunk buffers, for the memory budget: the copy orientations
    /// 5-8 transpose from, the packed rows of a 12-bit page, a palette
    /// page's indices.
    pub fn scratch_bytes(&self) -> u64 {
        let (w, h) = (u64::from(self.width), u64::from(self.height));
        let (ow, oh) = self.dimensions();
        let out = u64::from(ow)
            .saturating_mul(u64::from(oh))
            .saturating_mul(self.color_type().bytes_per_pixel() as u64);
        let mut extra = 0u64;
        if self.orientation_tag() >= 5 {
            extra = extra.saturating_add(out);
        }
        if self.twelve.is_some() || self.palette.is_some() {
            extra = extra.saturating_add(w.saturating_mul(h));
        }
        extra
    }

    fn decode_into(self, buf: &mut [u8]) -> ImageResult<()> {
        // Stored rows: for 12-bit pages, of packed bytes.
        let (w, h) = (self.width as usize, self.height as usize);
        let o = self.orientation_tag();
        if let Some(real) = self.twelve {
            let real = real as usize;
            let mut packed = vec![0u8; w * h];
            self.decode_stored(&mut packed)?;
            let out = buf
                .get_mut(..real * h * 2)
                .ok_or_else(|| err("TIFF output buffer too small"))?;
            for (row, dst) in packed.chunks_exact(w).zip(out.chunks_exact_mut(real * 2)) {
                for (x, d) in dst.chunks_exact_mut(2).enumerate() {
                    let bit = x * 12;
                    let (b0, b1) = (
                        u16::from(row.get(bit / 8).copied().unwrap_or(0)),
                        u16::from(row.get(bit / 8 + 1).copied().unwrap_or(0)),
                    );
                    let v = if bit % 8 == 0 {
                        b0 << 4 | b1 >> 4
                    } else {
                        (b0 & 0xf) << 8 | b1
                    };
                    d.copy_from_slice(&v.to_ne_bytes());
                }
            }
            orient(out, real, h, 2, o);
            return Ok(());
        }
        let px = match (self.samples(), self.color_type()) {
            (Some((channels, sample)), _) => channels * sample.size(),
            (None, ColorType::L8) => 1,
            (None, ColorType::La8 | ColorType::L16) => 2,
            (None, ColorType::Rgb8) => 3,
            (None, ColorType::Rgba8 | ColorType::La16) => 4,
            (None, ColorType::Rgb16) => 6,
            _ => 8,
        };
        self.decode_stored(buf)?;
        let img = buf
            .get_mut(..w * h * px)
            .ok_or_else(|| err("TIFF output buffer too small"))?;
        orient(img, w, h, px, o);
        Ok(())
    }

    /// The pixels in stored order (Orientation not applied).
    fn decode_stored(mut self, buf: &mut [u8]) -> ImageResult<()> {
        if let Some(palette) = self.palette.take() {
            let (w, h) = (self.width as usize, self.height as usize);
            let bits = self.layout.bits;
            let mut indices = vec![0u8; w * h];
            self.decode_stored(&mut indices)?;
            let n = palette.len();
            if bits == 1 {
                let out = buf
                    .get_mut(..w * h)
                    .ok_or_else(|| err("TIFF output buffer too small"))?;
                for (o, &i) in out.iter_mut().zip(&indices) {
                    let [r, g, b] = palette[usize::from(i) % n];
                    *o = super::bmp::gray(b, g, r);
                }
            } else {
                let out = buf
                    .get_mut(..w * h * 3)
                    .ok_or_else(|| err("TIFF output buffer too small"))?;
                for (o, &i) in out.chunks_exact_mut(3).zip(&indices) {
                    o.copy_from_slice(&palette[usize::from(i) % n]);
                }
            }
            return Ok(());
        }
        let Layout {
            samples,
            channels,
            ycbcr,
            raw_white16,
            bits,
            planar,
            index: palette_indices,
            lab,
            cmyk,
            sample,
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
        let bytes_per = if bits >= 8 { sample.size() } else { 1 };
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
                    index: palette_indices,
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
        if cmyk {
            // libtiff's putRGBcontig8bitCMYKtile.
            buf.get_mut(..w * h * 4)
                .ok_or_else(|| err("TIFF output buffer too small"))?
                .chunks_exact_mut(4)
                .for_each(|p| {
                    let k = 255 - u32::from(p[3]);
                    for c in &mut p[..3] {
                        *c = (k * (255 - u32::from(*c)) / 255) as u8;
                    }
                    p[3] = 255;
                });
        }
        if lab {
            let lab = LabToRgb::new();
            buf.get_mut(..w * h * 3)
                .ok_or_else(|| err("TIFF output buffer too small"))?
                .chunks_exact_mut(3)
                .for_each(|p| lab.convert(p));
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

/// A copy of `data` whose first page, 12-bit gray strips, reads as 8-bit
/// rows of the packed bytes: ImageWidth the bytes per row, BitsPerSample 8.
/// Other 12-bit layouts are refused.
fn twelve_bit_copy<R: std::io::Read + std::io::Seek>(
    dec: &mut Decoder<R>,
    data: &[u8],
    width: u32,
) -> ImageResult<Vec<u8>> {
    let get = |dec: &mut Decoder<R>, tag| {
        dec.find_tag_unsigned::<u16>(tag)
            .map_err(tiff_err)
            .map(|v| v.unwrap_or(1))
    };
    let spp = get(dec, Tag::SamplesPerPixel)?;
    let photometric = get(dec, Tag::PhotometricInterpretation)?;
    let predictor = get(dec, Tag::Predictor)?;
    let format = get(dec, Tag::SampleFormat)?;
    if spp != 1
        || photometric != 1
        || predictor != 1
        || format != 1
        || matches!(dec.get_chunk_type(), ChunkType::Tile)
    {
        return Err(err(
            "12-bit TIFF: only BlackIsZero gray strips of unsigned samples without a predictor are read",
        ));
    }
    let packed = u32::try_from((u64::from(width) * 12).div_ceil(8))
        .map_err(|_| err("12-bit TIFF too wide"))?;
    ifd::set_value(data, 256, packed)
        .and_then(|d| ifd::set_value(&d, 258, 8))
        .ok_or_else(|| err("12-bit TIFF: ImageWidth or BitsPerSample tag not found"))
}

/// Turns `img` (`w` x `h` pixels of `px` bytes, stored order) into the
/// display order of TIFF/EXIF orientation `o`; 5-8 give an `h` x `w` image.
fn orient(img: &mut [u8], w: usize, h: usize, px: usize, o: u16) {
    let row = w * px;
    match o {
        2 => img.chunks_exact_mut(row).for_each(|r| {
            for x in 0..w / 2 {
                let (a, b) = r.split_at_mut((w - 1 - x) * px);
                a[x * px..(x + 1) * px].swap_with_slice(&mut b[..px]);
            }
        }),
        3 => {
            let n = w * h;
            for i in 0..n / 2 {
                let (a, b) = img.split_at_mut((n - 1 - i) * px);
                a[i * px..(i + 1) * px].swap_with_slice(&mut b[..px]);
            }
        }
        4 => {
            for y in 0..h / 2 {
                let (a, b) = img.split_at_mut((h - 1 - y) * row);
                a[y * row..(y + 1) * row].swap_with_slice(&mut b[..row]);
            }
        }
        5..=8 => {
            let src = img.to_vec();
            // Output is `h` wide and `w` high.
            for oy in 0..w {
                for ox in 0..h {
                    let (sx, sy) = match o {
                        5 => (oy, ox),
                        6 => (oy, h - 1 - ox),
                        7 => (w - 1 - oy, h - 1 - ox),
                        _ => (w - 1 - oy, ox),
                    };
                    let from = (sy * w + sx) * px;
                    let to = (oy * h + ox) * px;
                    img[to..to + px].copy_from_slice(&src[from..from + px]);
                }
            }
        }
        _ => {}
    }
}

/// libtiff's CIE L*a*b* to RGB conversion for its RGBA interface (OpenCV's
/// path): `TIFFCIELabToXYZ` with the default D50 white point, then
/// `TIFFXYZToRGB` with the sRGB display of `tif_getimage.c` (gamma 2.4
/// through a 1500-step table), in `f32` as libtiff computes it.
struct LabToRgb {
    white: [f32; 3],
    /// Linear light (1..100) to the 8-bit value, one entry per step.
    table: Vec<f32>,
    step: f32,
}

impl LabToRgb {
    const RANGE: usize = 1500;
    const MATRIX: [[f32; 3]; 3] = [
        [3.2410, -1.5374, -0.4986],
        [-0.9692, 1.8760, 0.0416],
        [0.0556, -0.2040, 1.0570],
    ];

    fn new() -> LabToRgb {
        let (x, y, z) = (96.4250f32, 100.0f32, 82.4680f32);
        let sum = x + y + z;
        let (w0, w1) = (x / sum, y / sum);
        let y0 = 100.0f32;
        let white = [w0 / w1 * y0, y0, (1.0 - w0 - w1) / w1 * y0];
        let table = (0..=Self::RANGE)
            .map(|i| 255.0f32 * ((i as f64 / Self::RANGE as f64).powf(1.0 / 2.4) as f32))
            .collect();
        LabToRgb {
            white,
            table,
            step: (100.0f32 - 1.0) / Self::RANGE as f32,
        }
    }

    /// One pixel: stored (L, a, b) in, (R, G, B) out.
    fn convert(&self, p: &mut [u8]) {
        let [x0, y0, z0] = self.white;
        // TIFFCIELabToXYZ via its 16-bit form, as libtiff 4 computes it.
        let l = (u32::from(p[0]) * 257) as f32 * 100.0 / 65535.0;
        let a = (i32::from(p[1] as i8) * 256) as f32 / 256.0 / 500.0;
        let b = (i32::from(p[2] as i8) * 256) as f32 / 256.0 / 200.0;
        let (y, cby) = if l < 8.856 {
            let y = (l * y0) / 903.292;
            (y, 7.787 * (y / y0) + 16.0 / 116.0)
        } else {
            let cby = (l + 16.0) / 116.0;
            (y0 * cby * cby * cby, cby)
        };
        let f = |t: f32, w: f32| {
            if t < 0.2069 {
                w * (t - 0.13793) / 7.787
            } else {
                w * t * t * t
            }
        };
        let x = f(a + cby, x0);
        let z = f(cby - b, z0);
        for (out, m) in p.iter_mut().zip(Self::MATRIX) {
            let lum = (m[0] * x + m[1] * y + m[2] * z).clamp(1.0, 100.0);
            let i = (((lum - 1.0) / self.step) as usize).min(Self::RANGE);
            let v = (f64::from(self.table[i]) + 0.5) as u32;
            *out = v.min(255) as u8;
        }
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
    index: bool,
}

impl Place {
    fn copy(&self, chunk: &DecodingResult, buf: &mut [u8]) -> ImageResult<()> {
        let take = self
            .chunk_spp
            .min(self.channels - self.first.min(self.channels));
        if take == 0 {
            return Ok(());
        }
        if take == self.channels && self.chunk_spp == self.channels && self.bits >= 8 {
            return self.copy_rows(chunk, buf);
        }
        if self.bits >= 8 {
            // Whole samples of any type: copied as bytes.
            let src = chunk_bytes(chunk)
                .ok_or_else(|| err(format!("unsupported TIFF bit depth {}", self.bits)))?;
            let size = self.bytes_per;
            for y in 0..self.dh {
                for x in 0..self.dw {
                    let out =
                        ((self.y0 + y) * self.width + self.x0 + x) * self.channels + self.first;
                    let from = ((y * self.stride_px + x) * self.chunk_spp) * size;
                    let from = src
                        .get(from..from + take * size)
                        .ok_or_else(|| err("TIFF strip or tile is shorter than its size"))?;
                    buf.get_mut(out * size..(out + take) * size)
                        .ok_or_else(|| err("TIFF sample outside the image"))?
                        .copy_from_slice(from);
                }
            }
            return Ok(());
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
        let src = chunk_bytes(chunk)
            .ok_or_else(|| err(format!("unsupported TIFF bit depth {}", self.bits)))?;
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
            (DecodingResult::U8(v), bits @ (1 | 2 | 4)) if self.index => {
                let bits = usize::from(bits);
                let row = (self.stride_px * self.chunk_spp * bits).div_ceil(8);
                let at = (x * self.chunk_spp + s) * bits;
                let byte = *v.get(y * row + at / 8).ok_or_else(missing)?;
                Ok(u16::from(
                    byte >> (8 - bits - at % 8) & ((1 << bits) - 1) as u8,
                ))
            }
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

/// A decoded chunk's samples as native-endian bytes (8 to 32 bits).
fn chunk_bytes(chunk: &DecodingResult) -> Option<&[u8]> {
    Some(match chunk {
        DecodingResult::U8(v) => v,
        DecodingResult::U16(v) => bytemuck::cast_slice(v),
        DecodingResult::U32(v) => bytemuck::cast_slice(v),
        DecodingResult::I8(v) => bytemuck::cast_slice(v),
        DecodingResult::I16(v) => bytemuck::cast_slice(v),
        DecodingResult::I32(v) => bytemuck::cast_slice(v),
        DecodingResult::F32(v) => bytemuck::cast_slice(v),
        _ => return None,
    })
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
    // OpenCV's depths: CV_8U/16U/32U, CV_8S/16S/32S, CV_32F.
    let sample = match (format, bits) {
        (SampleFormat::Uint, 1 | 8) => SampleType::Uint8,
        (SampleFormat::Uint, 16) => SampleType::Uint16,
        (SampleFormat::Uint, 32) => SampleType::Uint32,
        (SampleFormat::Int, 8) => SampleType::Int8,
        (SampleFormat::Int, 16) => SampleType::Int16,
        (SampleFormat::Int, 32) => SampleType::Int32,
        (SampleFormat::IEEEFP, 32) => SampleType::Float32,
        (SampleFormat::Uint, _) => {
            return Err(err(format!(
                "unsupported TIFF bit depth {bits} ({samples} samples per pixel)"
            )));
        }
        _ => {
            return Err(err(format!(
                "unsupported TIFF sample format {format:?} with {bits}-bit samples (read: unsigned 1/8/16/32, signed 8/16/32, float 32)"
            )));
        }
    };
    if bits == 1 && samples != 1 {
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
        index: false,
        lab: false,
        cmyk: matches!(color, Tc::CMYK(8)),
        sample,
    })
}

/// The layout of a palette page: one index per pixel (the first sample;
/// extra samples are skipped), 1, 4 or 8 bits.
fn palette_layout<R: std::io::Read + std::io::Seek>(dec: &mut Decoder<R>) -> ImageResult<Layout> {
    let samples = dec
        .find_tag_unsigned::<u16>(Tag::SamplesPerPixel)
        .map_err(tiff_err)?
        .unwrap_or(1);
    let bits = dec
        .find_tag_unsigned_vec::<u16>(Tag::BitsPerSample)
        .map_err(tiff_err)?
        .and_then(|v| v.first().copied())
        .unwrap_or(1);
    let planar = dec
        .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
        .map_err(tiff_err)?
        == Some(2);
    let format = dec
        .find_tag_unsigned_vec::<u16>(Tag::SampleFormat)
        .map_err(tiff_err)?
        .and_then(|v| v.first().copied())
        .unwrap_or(1);
    if format != 1 || samples == 0 {
        return Err(err("palette TIFF with signed or no samples"));
    }
    Ok(Layout {
        samples: usize::from(samples),
        channels: 1,
        ycbcr: false,
        raw_white16: false,
        bits: bits as u8,
        planar: planar && samples > 1,
        index: true,
        lab: false,
        cmyk: false,
        sample: SampleType::Uint8,
    })
}

/// Edits of a TIFF's first IFD, on a copy of the file.
mod ifd {
    /// `at..at + len`, or `None` when it would overflow (an offset read
    /// from the file can be anything).
    fn span(at: usize, len: usize) -> Option<std::ops::Range<usize>> {
        Some(at..at.checked_add(len)?)
    }

    /// The first IFD: byte order, BigTIFF, where it starts.
    pub(super) fn first(data: &[u8]) -> Option<(bool, bool, usize)> {
        let le = match data.get(..2)? {
            b"II" => true,
            b"MM" => false,
            _ => return None,
        };
        let u16_at = |at: usize| -> Option<u16> {
            let b = data.get(at..at + 2)?;
            Some(if le {
                u16::from_le_bytes([b[0], b[1]])
            } else {
                u16::from_be_bytes([b[0], b[1]])
            })
        };
        let big = u16_at(2)? == 43;
        let at = if big {
            let b: [u8; 8] = data.get(8..16)?.try_into().ok()?;
            if le {
                u64::from_le_bytes(b)
            } else {
                u64::from_be_bytes(b)
            }
        } else {
            let b: [u8; 4] = data.get(4..8)?.try_into().ok()?;
            u64::from(if le {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            })
        };
        Some((le, big, usize::try_from(at).ok()?))
    }

    /// Entry positions of the first IFD and the position of its next-IFD
    /// pointer.
    pub(super) fn entries(data: &[u8]) -> Option<(bool, bool, Vec<usize>, usize)> {
        let (le, big, at) = first(data)?;
        let (count, head, size) = if big {
            let b: [u8; 8] = data.get(span(at, 8)?)?.try_into().ok()?;
            let n = if le {
                u64::from_le_bytes(b)
            } else {
                u64::from_be_bytes(b)
            };
            (usize::try_from(n).ok()?, 8, 20)
        } else {
            let b: [u8; 2] = data.get(span(at, 2)?)?.try_into().ok()?;
            let n = if le {
                u16::from_le_bytes(b)
            } else {
                u16::from_be_bytes(b)
            };
            (usize::from(n), 2, 12)
        };
        let next = at
            .checked_add(head)?
            .checked_add(count.checked_mul(size)?)?;
        let ptr = if big { 8 } else { 4 };
        data.get(span(next, ptr)?)?;
        Some((
            le,
            big,
            (0..count).map(|i| at + head + i * size).collect(),
            next,
        ))
    }

    /// A copy whose first page's PhotometricInterpretation (a SHORT) is `v`.
    pub fn set_photometric(data: &[u8], v: u16) -> Option<Vec<u8>> {
        let (le, big, entries, _) = entries(data)?;
        let tag = |at: usize| {
            let b = [data[at], data[at + 1]];
            if le {
                u16::from_le_bytes(b)
            } else {
                u16::from_be_bytes(b)
            }
        };
        let at = *entries
            .iter()
            .find(|&&e| tag(e) == 262 && tag(e + 2) == 3)?;
        let value = at + if big { 12 } else { 8 };
        let mut copy = data.to_vec();
        copy[value..value + 2].copy_from_slice(&if le { v.to_le_bytes() } else { v.to_be_bytes() });
        Some(copy)
    }

    /// A copy whose first page's one-value SHORT or LONG tag `tag` is `v`
    /// (`None` when there is no such entry or `v` does not fit).
    pub fn set_value(data: &[u8], tag: u16, v: u32) -> Option<Vec<u8>> {
        let (le, big, entries, _) = entries(data)?;
        let u16_at = |at: usize| {
            let b = [data[at], data[at + 1]];
            if le {
                u16::from_le_bytes(b)
            } else {
                u16::from_be_bytes(b)
            }
        };
        let at = *entries.iter().find(|&&e| u16_at(e) == tag)?;
        let count_len = if big { 8 } else { 4 };
        let count = data.get(at + 4..at + 4 + count_len)?;
        let one = if le {
            count[0] == 1
        } else {
            count[count_len - 1] == 1
        } && count.iter().filter(|&&b| b != 0).count() == 1;
        if !one {
            return None;
        }
        let value = at + 4 + count_len;
        let mut copy = data.to_vec();
        match u16_at(at + 2) {
            3 => {
                let v = u16::try_from(v).ok()?;
                copy[value..value + 2].copy_from_slice(&if le {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                });
            }
            4 => copy[value..value + 4].copy_from_slice(&if le {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }),
            _ => return None,
        }
        Some(copy)
    }

    /// A copy whose first page's BitsPerSample and SampleFormat hold no more
    /// values than SamplesPerPixel (the first ones, as libtiff reads them),
    /// when one of them holds more; `None` when neither does.
    pub fn per_sample_counts(data: &[u8]) -> Option<Vec<u8>> {
        let (le, big, entries, _) = entries(data)?;
        let u = |at: usize, n: usize| -> Option<u64> {
            let b = data.get(at..at + n)?;
            Some(
                b.iter()
                    .enumerate()
                    .map(|(i, &v)| u64::from(v) << (8 * if le { i } else { n - 1 - i }))
                    .sum(),
            )
        };
        let (count_len, field) = if big { (8, 8) } else { (4, 4) };
        let spp_entry = entries.iter().find(|&&e| u(e, 2) == Some(277))?;
        // SamplesPerPixel: a SHORT, left-justified in the value field.
        let spp = u(spp_entry + 4 + count_len, 2)?;
        if spp == 0 {
            return None;
        }
        let mut copy = data.to_vec();
        let mut changed = false;
        for &e in &entries {
            let tag = u(e, 2)?;
            if (tag != 258 && tag != 339) || u(e + 2, 2)? != 3 {
                continue;
            }
            let count = u(e + 4, count_len)?;
            if count <= spp {
                continue;
            }
            let value = e + 4 + count_len;
            let n = usize::try_from(spp).ok()?.checked_mul(2)?;
            if n <= field {
                // The values now fit in the entry: move the first ones in.
                let from = usize::try_from(u(value, field)?).ok()?;
                let first = data.get(from..from.checked_add(n)?)?.to_vec();
                copy[value..value + field].fill(0);
                copy[value..value + n].copy_from_slice(&first);
            }
            let c = spp.to_le_bytes();
            let c = &c[..count_len];
            for (i, &b) in c.iter().enumerate() {
                copy[e + 4 + if le { i } else { count_len - 1 - i }] = b;
            }
            changed = true;
        }
        changed.then_some(copy)
    }

    /// A copy whose first page is the last (its next-IFD pointer zeroed),
    /// when that pointer leads back to the first page.
    pub fn end_chain(data: &[u8]) -> Option<Vec<u8>> {
        let (_, big, _, next) = entries(data)?;
        let (_, _, first_at) = first(data)?;
        let n = if big { 8 } else { 4 };
        let ptr = &data[next..next + n];
        let le = data.starts_with(b"II");
        let target = ptr
            .iter()
            .enumerate()
            .map(|(i, &b)| u64::from(b) << (8 * if le { i } else { n - 1 - i }))
            .sum::<u64>();
        if target != first_at as u64 {
            return None;
        }
        let mut copy = data.to_vec();
        copy[next..next + n].fill(0);
        Some(copy)
    }
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
        let width = self.twelve.unwrap_or(self.width);
        if self.orientation_tag() >= 5 {
            (self.height, width)
        } else {
            (width, self.height)
        }
    }

    fn color_type(&self) -> ColorType {
        if self.twelve.is_some() {
            return ColorType::L16;
        }
        if self.palette.is_some() {
            return if self.layout.bits == 1 {
                ColorType::L8
            } else {
                ColorType::Rgb8
            };
        }
        if let Some((c, sample)) = self.samples() {
            // Not what the samples are (see `samples`): a type of the same
            // size per pixel where there is one, for callers that size
            // buffers from it.
            return match c * sample.size() {
                1 => ColorType::L8,
                2 => ColorType::La8,
                3 => ColorType::Rgb8,
                4 => ColorType::Rgba8,
                6 => ColorType::Rgb16,
                8 => ColorType::Rgba16,
                12 => ColorType::Rgb32F,
                _ => ColorType::Rgba32F,
            };
        }
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

    /// Always none: the decoder applies the Orientation tag itself (see
    /// `orientation_tag`), so `--exif-orientation apply` adds nothing.
    fn orientation(&mut self) -> ImageResult<image::metadata::Orientation> {
        Ok(image::metadata::Orientation::NoTransforms)
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

    /// A one-strip little-endian TIFF: `spp` samples of `bits`-bit `format`
    /// (1 unsigned, 2 signed, 3 float) per pixel, with an Orientation tag.
    fn tiff(w: u32, h: u32, bits: u16, format: u16, orientation: u16, data: &[u8]) -> Vec<u8> {
        let mut out = b"II*\0".to_vec();
        let ifd = 8 + data.len() as u32;
        out.extend(ifd.to_le_bytes());
        out.extend(data);
        let entries: [(u16, u16, u32); 10] = [
            (256, 4, w),
            (257, 4, h),
            (258, 3, u32::from(bits)),
            (259, 3, 1),
            (262, 3, 1),
            (273, 4, 8),
            (274, 3, u32::from(orientation)),
            (278, 4, h),
            (279, 4, data.len() as u32),
            (339, 3, u32::from(format)),
        ];
        out.extend(10u16.to_le_bytes());
        for (tag, ty, v) in entries {
            out.extend(tag.to_le_bytes());
            out.extend(ty.to_le_bytes());
            out.extend(1u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        out.extend([0, 0, 0, 0]);
        out
    }

    /// What a decode gives: the layout `samples` reports, the dimensions
    /// and the bytes.
    type Decoded = (Option<(usize, SampleType)>, (u32, u32), Vec<u8>);

    fn decode(file: &[u8]) -> Decoded {
        let d = TiffDecoder::new(file, 1 << 20).unwrap();
        let (w, h) = d.dimensions();
        let (samples, n) = (d.samples(), d.total_bytes() as usize);
        let mut buf = vec![0; n];
        d.read_image(&mut buf).unwrap();
        (samples, (w, h), buf)
    }

    #[test]
    fn signed_and_float_samples_come_out_as_stored_and_oriented() {
        let vals: Vec<i16> = vec![-3, 7, 32767, -32768, 0, 5];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (samples, dims, buf) = decode(&tiff(3, 2, 16, 2, 1, &bytes));
        assert_eq!(samples, Some((1, SampleType::Int16)));
        assert_eq!(dims, (3, 2));
        let got: Vec<i16> = buf
            .chunks(2)
            .map(|p| i16::from_ne_bytes([p[0], p[1]]))
            .collect();
        assert_eq!(got, vals);
        // Float, orientation 6 (turned 90 degrees clockwise): 2 x 3.
        let vals: Vec<f32> = vec![0.5, -1.0, 2.0, 3.5, 4.0, -0.25];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (samples, dims, buf) = decode(&tiff(3, 2, 32, 3, 6, &bytes));
        assert_eq!(samples, Some((1, SampleType::Float32)));
        assert_eq!(dims, (2, 3));
        let got: Vec<f32> = buf
            .chunks(4)
            .map(|p| f32::from_ne_bytes([p[0], p[1], p[2], p[3]]))
            .collect();
        assert_eq!(got, [3.5, 0.5, 4.0, -1.0, -0.25, 2.0]);
        // 64-bit floats are refused with a reason.
        let e = TiffDecoder::new(&tiff(1, 1, 64, 3, 1, &[0; 8]), 1 << 20)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("64-bit"), "{e}");
    }

    #[test]
    fn scratch_counts_what_the_decoder_allocates_beside_the_samples() {
        let file = tiff(3, 2, 8, 1, 1, &[1, 2, 3, 4, 5, 6]);
        let plain = TiffDecoder::new(&file, 1 << 20).unwrap();
        assert_eq!(plain.scratch_bytes(), 0);
        // Orientation 5-8: a copy of the whole output to transpose from.
        let file = tiff(3, 2, 32, 3, 8, &[0; 24]);
        let turned = TiffDecoder::new(&file, 1 << 20).unwrap();
        assert_eq!(turned.scratch_bytes(), 24);
    }
}
