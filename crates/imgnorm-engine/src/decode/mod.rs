//! Which format a file's content is, and the decoders that make every
//! non-JPEG format come out as OpenCV's `IMREAD_UNCHANGED` does: this
//! project's own TIFF (chunk by chunk), Netpbm, BMP and GIF readers, PNG
//! with OpenCV's channel rules, and the `image` crate for the rest. Each decoder is an
//! [`image::ImageDecoder`], so the engine treats them all alike.
pub mod bmp;
pub mod gif;
pub mod pnm;
pub mod tiff;

use image::{ColorType, ImageDecoder, ImageFormat, ImageResult};

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A format the engine decodes.
    Image(ImageFormat),
    /// An image format the engine recognises and does not decode; the name
    /// goes in the manifest reason.
    Unsupported(&'static str),
    /// Not an image the engine knows.
    Unknown,
}

/// Formats the engine decodes (by content; the extension plays no part).
pub const DECODED: &str = "JPEG, PNG, BMP, TIFF, WebP, GIF, PNM (PBM/PGM/PPM/PFM)";

/// Sniffs `data` by its magic bytes.
pub fn sniff(data: &[u8]) -> Sniffed {
    if pnm::is_pnm(data) {
        return Sniffed::Image(ImageFormat::Pnm);
    }
    if pnm::is_pfm(data) {
        return Sniffed::Image(ImageFormat::Pnm);
    }
    if data.starts_with(&[
        0, 0, 0, 0x0C, b'j', b'P', b' ', b' ', 0x0D, 0x0A, 0x87, 0x0A,
    ]) || data.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
    {
        return Sniffed::Unsupported("JPEG 2000");
    }
    // BigTIFF (version 43), which `image` does not sniff.
    if data.starts_with(b"II\x2b\x00") || data.starts_with(b"MM\x00\x2b") {
        return Sniffed::Image(ImageFormat::Tiff);
    }
    if data.starts_with(b"P7\n") {
        return Sniffed::Unsupported("PAM");
    }
    match image::guess_format(data) {
        Ok(
            f @ (ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::Bmp
            | ImageFormat::Tiff
            | ImageFormat::WebP
            | ImageFormat::Gif),
        ) => Sniffed::Image(f),
        Ok(ImageFormat::Avif) => Sniffed::Unsupported("AVIF"),
        Ok(ImageFormat::Pnm) | Err(_) => Sniffed::Unknown,
        Ok(other) => Sniffed::Unsupported(other.to_mime_type()),
    }
}

/// PNG's color type byte from the IHDR chunk (0 gray, 2 RGB, 3 palette,
/// 4 gray+alpha, 6 RGBA), when the header is there.
pub fn png_color_type(data: &[u8]) -> Option<u8> {
    (data.get(12..16)? == b"IHDR").then(|| data.get(25).copied())?
}

/// A PNG decoder that drops the alpha channel the `image` crate makes from a
/// gray image's `tRNS` chunk: OpenCV (libpng without `png_set_tRNS_to_alpha`
/// for gray) gives one channel there. RGB and palette images with `tRNS`
/// keep their alpha, as in OpenCV.
pub struct GrayNoAlpha<D> {
    inner: D,
}

impl<D: ImageDecoder> GrayNoAlpha<D> {
    /// Wraps `inner` when the PNG in `data` is gray and the decoder adds an
    /// alpha channel; `Err(inner)` otherwise.
    pub fn wrap(inner: D, data: &[u8]) -> Result<GrayNoAlpha<D>, D> {
        let adds_alpha = matches!(inner.color_type(), ColorType::La8 | ColorType::La16);
        if adds_alpha && png_color_type(data) == Some(0) {
            Ok(GrayNoAlpha { inner })
        } else {
            Err(inner)
        }
    }
}

impl<D: ImageDecoder> ImageDecoder for GrayNoAlpha<D> {
    fn dimensions(&self) -> (u32, u32) {
        self.inner.dimensions()
    }

    fn color_type(&self) -> ColorType {
        match self.inner.color_type() {
            ColorType::La16 => ColorType::L16,
            _ => ColorType::L8,
        }
    }

    fn orientation(&mut self) -> ImageResult<image::metadata::Orientation> {
        self.inner.orientation()
    }

    fn read_image(self, buf: &mut [u8]) -> ImageResult<()> {
        let bytes = if self.inner.color_type() == ColorType::La16 {
            2
        } else {
            1
        };
        let mut full = vec![0u8; usize::try_from(self.inner.total_bytes()).unwrap_or(usize::MAX)];
        self.inner.read_image(&mut full)?;
        for (dst, src) in buf
            .chunks_exact_mut(bytes)
            .zip(full.chunks_exact(2 * bytes))
        {
            dst.copy_from_slice(&src[..bytes]);
        }
        Ok(())
    }

    fn read_image_boxed(self: Box<Self>, buf: &mut [u8]) -> ImageResult<()> {
        (*self).read_image(buf)
    }
}
