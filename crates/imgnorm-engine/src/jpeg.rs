//! JPEG decoding with libjpeg-turbo's decoder, bit-exact with OpenCV's
//! `cv2.imread(path, IMREAD_UNCHANGED)` (and Pillow, torchvision, which use
//! the same library with the same defaults: ISLOW IDCT, fancy upsampling).
//!
//! The C library is the libjpeg-turbo fork vendored by `mozjpeg-sys`
//! (compiled by `cc`, with libjpeg-turbo's SIMD where `nasm` is present at
//! build time, same output either way). All calls into it go through
//! `csrc/jpeg_shim.c`, which catches libjpeg's fatal errors with `setjmp`
//! in C, so a corrupt file is a [`JpegError`], never `exit()`, an abort or
//! a jump through Rust frames.
//!
//! Use: [`Reader::new`] reads the header (dimensions, components, EXIF) so
//! the caller can check the pixel limit and memory budget before anything
//! large is allocated; [`Reader::decode_into`] then writes interleaved 8-bit
//! samples, 1 channel for gray files and 3 (RGB) otherwise. CMYK and YCCK
//! files come out as RGB converted with OpenCV's own formula.

use std::ffi::{CStr, c_char, c_int, c_long};
use std::marker::PhantomData;
use std::ptr::NonNull;

// The shim calls libjpeg's functions; naming the crate makes rustc link its
// static library.
use mozjpeg_sys as _;

/// Opaque decompressor state allocated by the shim.
#[repr(C)]
struct Shim {
    _private: [u8; 0],
}

/// `struct imgnorm_jpeg_info` of `csrc/jpeg_shim.c`.
#[repr(C)]
struct Info {
    width: u32,
    height: u32,
    components: i32,
    color_space: i32,
    progressive: i32,
    arithmetic: i32,
    exif: *const u8,
    exif_len: usize,
}

unsafe extern "C" {
    fn imgnorm_jpeg_new() -> *mut Shim;
    fn imgnorm_jpeg_free(j: *mut Shim);
    fn imgnorm_jpeg_message(j: *const Shim) -> *const c_char;
    fn imgnorm_jpeg_warning(j: *const Shim) -> *const c_char;
    fn imgnorm_jpeg_warnings(j: *const Shim) -> c_long;
    fn imgnorm_jpeg_header(
        j: *mut Shim,
        data: *const u8,
        len: usize,
        want_exif: c_int,
        max_memory: c_long,
        info: *mut Info,
    ) -> c_int;
    fn imgnorm_jpeg_decode(j: *mut Shim, out: *mut u8, out_len: usize) -> c_int;
}

/// Whether the linked libjpeg-turbo was built with its SIMD code (x86:
/// needs `nasm` when `mozjpeg-sys` is built). The pixels are the same
/// either way; decoding is about 0.6× as fast without. Benchmarks report it.
pub const SIMD: bool = matches!(env!("IMGNORM_JPEG_SIMD").as_bytes(), b"1");

/// The JPEG decoder, as benchmark reports and `--version` name it.
pub const DECODER: &str = if SIMD {
    "libjpeg-turbo (MozJPEG build) with SIMD"
} else {
    "libjpeg-turbo (MozJPEG build) WITHOUT SIMD (nasm was missing when it was built: about 0.6x the decoding speed)"
};

/// Why a JPEG could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    /// The decompressor could not be allocated.
    #[error("out of memory creating the JPEG decoder")]
    OutOfMemory,
    /// libjpeg refused the data; its own message.
    #[error("JPEG decoder: {0}")]
    Libjpeg(String),
    /// The caller's buffer is smaller than [`Header::output_len`].
    #[error("JPEG output buffer holds {have} bytes, the image needs {need}")]
    Buffer {
        /// Bytes given.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
}

/// Colour space of the samples stored in the file (libjpeg's guess from the
/// JFIF/Adobe markers and component ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorSpace {
    /// One component.
    Gray,
    /// Three components, stored as RGB (Adobe transform 0).
    Rgb,
    /// Three components, YCbCr (the usual case).
    YCbCr,
    /// Four components, CMYK.
    Cmyk,
    /// Four components, YCCK.
    Ycck,
    /// Anything else (libjpeg's `JCS_UNKNOWN`).
    Unknown,
}

/// What a JPEG's header says.
#[derive(Debug, Clone)]
pub struct Header {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Components in the file (1, 3 or 4 for decodable files).
    pub components: u8,
    /// Colour space of the stored components.
    pub color_space: ColorSpace,
    /// Progressive (multi-scan) coding: the decoder keeps the whole image's
    /// coefficients (2 bytes per sample) while decoding.
    pub progressive: bool,
    /// Arithmetic instead of Huffman entropy coding.
    pub arithmetic: bool,
    /// The EXIF block (TIFF header onwards) of the first `Exif` APP1
    /// segment, when asked for with `want_exif`.
    pub exif: Option<Vec<u8>>,
}

impl Header {
    /// Channels [`Reader::decode_into`] writes: 1 for gray files, 3 (RGB)
    /// for everything else, as OpenCV's `IMREAD_UNCHANGED` gives them.
    pub fn channels(&self) -> usize {
        if self.components == 1 { 1 } else { 3 }
    }

    /// Bytes [`Reader::decode_into`] writes.
    pub fn output_len(&self) -> usize {
        self.width as usize * self.height as usize * self.channels()
    }
}

/// What [`Reader::decode_into`] reports besides the samples.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Warnings libjpeg raised (corrupt data it skipped, premature end of
    /// the data: the missing part is then grey, as in OpenCV).
    pub warnings: u32,
    /// The first warning's text.
    pub first_warning: Option<String>,
}

/// One JPEG being decoded: the header is read, the pixels not yet.
pub struct Reader<'a> {
    raw: NonNull<Shim>,
    header: Header,
    /// libjpeg reads the caller's bytes in place until decoding ends.
    _data: PhantomData<&'a [u8]>,
}

impl<'a> Reader<'a> {
    /// Reads the header of the JPEG in `data` (markers up to the first
    /// scan; nothing image-sized is allocated). `max_memory` caps what
    /// libjpeg may allocate while decoding (0: no cap); `want_exif` keeps
    /// the EXIF block for [`Header::exif`].
    pub fn new(data: &'a [u8], want_exif: bool, max_memory: u64) -> Result<Self, JpegError> {
        // SAFETY: no arguments; a null return is handled.
        let raw = NonNull::new(unsafe { imgnorm_jpeg_new() }).ok_or(JpegError::OutOfMemory)?;
        let mut reader = Reader {
            raw,
            header: Header {
                width: 0,
                height: 0,
                components: 0,
                color_space: ColorSpace::Unknown,
                progressive: false,
                arithmetic: false,
                exif: None,
            },
            _data: PhantomData,
        };
        let mut info = Info {
            width: 0,
            height: 0,
            components: 0,
            color_space: 0,
            progressive: 0,
            arithmetic: 0,
            exif: std::ptr::null(),
            exif_len: 0,
        };
        let cap = c_long::try_from(max_memory).unwrap_or(c_long::MAX);
        // SAFETY: `raw` is a live decompressor; `data` outlives `reader`
        // (lifetime 'a), which is the only user of the source it sets up.
        let rc = unsafe {
            imgnorm_jpeg_header(
                raw.as_ptr(),
                data.as_ptr(),
                data.len(),
                c_int::from(want_exif),
                cap,
                &mut info,
            )
        };
        if rc != 0 {
            return Err(reader.error());
        }
        let exif = (!info.exif.is_null()).then(|| {
            // SAFETY: the shim points into the saved marker, valid until the
            // decompressor is reset; copied right away.
            unsafe { std::slice::from_raw_parts(info.exif, info.exif_len) }.to_vec()
        });
        reader.header = Header {
            width: info.width,
            height: info.height,
            components: u8::try_from(info.components).unwrap_or(0),
            color_space: color_space(info.color_space),
            progressive: info.progressive != 0,
            arithmetic: info.arithmetic != 0,
            exif,
        };
        Ok(reader)
    }

    /// The header read by [`Reader::new`].
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Decodes into `out[..header.output_len()]`: rows top to bottom,
    /// interleaved gray or RGB. A truncated file is decoded as far as it
    /// goes, the rest grey, with a warning in the [`Report`].
    pub fn decode_into(self, out: &mut [u8]) -> Result<Report, JpegError> {
        let need = self.header.output_len();
        if out.len() < need {
            return Err(JpegError::Buffer {
                have: out.len(),
                need,
            });
        }
        // SAFETY: the header was read; `out` is writable for `need` bytes,
        // all the shim writes (it checks the size against libjpeg's output
        // dimensions again).
        let rc = unsafe { imgnorm_jpeg_decode(self.raw.as_ptr(), out.as_mut_ptr(), need) };
        if rc != 0 {
            return Err(self.error());
        }
        // SAFETY: live decompressor; the strings are NUL-terminated arrays
        // inside it.
        let (warnings, first) = unsafe {
            (
                imgnorm_jpeg_warnings(self.raw.as_ptr()),
                CStr::from_ptr(imgnorm_jpeg_warning(self.raw.as_ptr())),
            )
        };
        Ok(Report {
            warnings: u32::try_from(warnings).unwrap_or(u32::MAX),
            first_warning: (warnings > 0).then(|| first.to_string_lossy().into_owned()),
        })
    }

    fn error(&self) -> JpegError {
        // SAFETY: live decompressor; the message is a NUL-terminated array
        // inside it, set before the shim returned an error.
        let msg = unsafe { CStr::from_ptr(imgnorm_jpeg_message(self.raw.as_ptr())) };
        JpegError::Libjpeg(msg.to_string_lossy().into_owned())
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated by imgnorm_jpeg_new, freed exactly once here.
        unsafe { imgnorm_jpeg_free(self.raw.as_ptr()) }
    }
}

/// libjpeg's `J_COLOR_SPACE` numbering (jpeglib.h).
fn color_space(v: i32) -> ColorSpace {
    match v {
        1 => ColorSpace::Gray,
        2 => ColorSpace::Rgb,
        3 => ColorSpace::YCbCr,
        4 => ColorSpace::Cmyk,
        5 => ColorSpace::Ycck,
        _ => ColorSpace::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG written by the `image` crate's encoder (baseline, 4:2:0).
    fn jpeg(w: u32, h: u32, gray: bool) -> Vec<u8> {
        use image::codecs::jpeg::JpegEncoder;
        let mut buf = Vec::new();
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x + y) % 256) as u8,
            ])
        });
        let dynimg = if gray {
            image::DynamicImage::ImageLuma8(image::DynamicImage::ImageRgb8(img).to_luma8())
        } else {
            image::DynamicImage::ImageRgb8(img)
        };
        dynimg
            .write_with_encoder(JpegEncoder::new_with_quality(&mut buf, 90))
            .expect("encode");
        buf
    }

    #[test]
    fn header_then_pixels() {
        let data = jpeg(37, 21, false);
        let r = Reader::new(&data, false, 0).expect("header");
        let h = r.header().clone();
        assert_eq!(
            (h.width, h.height, h.components, h.channels()),
            (37, 21, 3, 3)
        );
        assert_eq!(h.color_space, ColorSpace::YCbCr);
        assert!(!h.progressive && h.exif.is_none());
        let mut out = vec![0u8; h.output_len()];
        let report = r.decode_into(&mut out).expect("decode");
        assert_eq!(report.warnings, 0);
        // Smooth content: the first pixel is close to (0, 0, 0).
        assert!(out[..3].iter().all(|&v| v < 24), "{:?}", &out[..3]);
    }

    #[test]
    fn gray_is_one_channel() {
        let data = jpeg(16, 9, true);
        let r = Reader::new(&data, false, 0).expect("header");
        assert_eq!((r.header().components, r.header().channels()), (1, 1));
        let mut out = vec![0u8; 16 * 9];
        r.decode_into(&mut out).expect("decode");
    }

    #[test]
    fn corrupt_and_truncated_are_errors_or_warnings_never_crashes() {
        let data = jpeg(64, 48, false);
        // Garbage, empty, a bare SOI: errors with libjpeg's reason.
        for bad in [
            &b""[..],
            b"\xFF\xD8",
            b"\xFF\xD8\xFF\xC0\x00\x02",
            &[0x42; 100],
        ] {
            let e = Reader::new(bad, false, 0).err().expect("must fail");
            assert!(
                matches!(e, JpegError::Libjpeg(ref m) if !m.is_empty()),
                "{e:?}"
            );
        }
        // Cut inside the scan: decodes with a warning (rest grey).
        let cut = &data[..data.len() * 2 / 3];
        let r = Reader::new(cut, false, 0).expect("header is complete");
        let mut out = vec![0u8; r.header().output_len()];
        let report = r.decode_into(&mut out).expect("decodes with a warning");
        assert!(
            report.warnings > 0 && report.first_warning.is_some(),
            "{report:?}"
        );
        assert!(out[out.len() - 3..].iter().all(|&v| v == 128), "grey fill");
        // Every prefix and a few corruptions: never a crash.
        for n in (0..data.len()).step_by(7) {
            if let Ok(r) = Reader::new(&data[..n], false, 0) {
                let mut out = vec![0u8; r.header().output_len()];
                let _ = r.decode_into(&mut out);
            }
        }
        for i in (2..data.len()).step_by(11) {
            let mut bad = data.clone();
            bad[i] ^= 0x5A;
            // A flipped dimension can claim gigapixels: the caller checks
            // the header before allocating, and so does this test.
            if let Ok(r) = Reader::new(&bad, false, 1 << 26)
                && r.header().output_len() <= 1 << 24
            {
                let mut out = vec![0u8; r.header().output_len()];
                let _ = r.decode_into(&mut out);
            }
        }
    }

    #[test]
    fn small_buffer_is_refused() {
        let data = jpeg(8, 8, false);
        let r = Reader::new(&data, false, 0).expect("header");
        let mut out = vec![0u8; 10];
        assert!(matches!(
            r.decode_into(&mut out),
            Err(JpegError::Buffer {
                have: 10,
                need: 192
            })
        ));
    }
}
