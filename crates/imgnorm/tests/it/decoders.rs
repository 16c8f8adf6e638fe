//! Real-world layouts of the non-JPEG formats, each with the array OpenCV
//! (`IMREAD_UNCHANGED`) gives: tiled and stripped TIFFs with separate planes
//! (the `tiff` crate asserts on the tiled ones), `FillOrder=2`, WhiteIsZero
//! bitmaps, CCITT modified Huffman and Group 3 bitmaps, LZW tiles, the
//! Orientation tag, a BitsPerSample tag with a value too many, 12-bit gray,
//! CIE L*a*b*, CMYK, a multi-page
//! file, gray PNGs with `tRNS`, the Netpbm family, BMPs (gray palette, RLE8
//! with skipped pixels, bit-field masks), a GIF with a transparent color,
//! and formats recognised but not read. `centralized`, `run` over shared
//! storage and `run --transfer stream` give the same manifest for all of
//! them.
use std::path::Path;

use serde_json::Value;

use crate::helpers::{
    assert_same_dataset, centralized, npy_shape, read, rows_by_path, run_local, tempdir,
};

/// One TIFF page to write (uncompressed, little-endian).
struct Page<'a> {
    width: u32,
    height: u32,
    bits: u16,
    spp: u16,
    photometric: u16,
    planar: bool,
    tile: Option<(u32, u32)>,
    fill_order: u16,
    /// Compression=5 (LZW, as libtiff writes it) instead of none.
    lzw: bool,
    /// The Orientation tag (1: none written).
    orientation: u16,
    /// ColorMap tag values (photometric 3); empty for none.
    colormap: &'a [u16],
    /// Interleaved samples, row-major.
    samples: &'a [u16],
}

/// Packs `vals` (one plane or interleaved) at `bits` per sample, rows of
/// `row_samples` padded to a byte.
fn pack(vals: &[u16], bits: u16, row_samples: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for row in vals.chunks(row_samples) {
        match bits {
            1 => {
                let mut bytes = vec![0u8; row.len().div_ceil(8)];
                for (i, &v) in row.iter().enumerate() {
                    bytes[i / 8] |= ((v & 1) as u8) << (7 - i % 8);
                }
                out.extend(bytes);
            }
            8 => out.extend(row.iter().map(|&v| v as u8)),
            12 => {
                let mut bytes = vec![0u8; (row.len() * 12).div_ceil(8)];
                for (i, &v) in row.iter().enumerate() {
                    let (at, v) = (i * 12 / 8, v & 0xfff);
                    if i % 2 == 0 {
                        bytes[at] = (v >> 4) as u8;
                        bytes[at + 1] |= ((v & 0xf) << 4) as u8;
                    } else {
                        bytes[at] |= (v >> 8) as u8;
                        bytes[at + 1] = v as u8;
                    }
                }
                out.extend(bytes);
            }
            _ => out.extend(row.iter().flat_map(|v| v.to_le_bytes())),
        }
    }
    out
}

/// A minimal TIFF writer for the layouts OpenCV reads and this suite needs.
fn tiff(pages: &[Page]) -> Vec<u8> {
    let mut out = b"II*\0\0\0\0\0".to_vec();
    let mut next_ifd_at = 4usize;
    for p in pages {
        let (w, h, spp) = (p.width as usize, p.height as usize, usize::from(p.spp));
        let planes = if p.planar { spp } else { 1 };
        let per = if p.planar { 1 } else { spp };
        let (cw, ch) = p.tile.map_or((w, h), |(a, b)| (a as usize, b as usize));
        let (across, down) = (w.div_ceil(cw), h.div_ceil(ch));
        let mut offsets = Vec::new();
        let mut counts = Vec::new();
        for plane in 0..planes {
            for t in 0..across * down {
                let (x0, y0) = ((t % across) * cw, (t / across) * ch);
                // Tiles are always whole; strips stop at the image.
                let rows = if p.tile.is_some() { ch } else { ch.min(h - y0) };
                let mut vals = Vec::new();
                for y in y0..y0 + rows {
                    for x in x0..x0 + cw {
                        for s in 0..per {
                            let inside = x < w && y < h;
                            let c = if p.planar { plane } else { s };
                            vals.push(if inside {
                                p.samples[(y * w + x) * spp + c]
                            } else {
                                0
                            });
                        }
                    }
                }
                let mut bytes = pack(&vals, p.bits, cw * per);
                if p.lzw {
                    bytes = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
                        .encode(&bytes)
                        .expect("lzw");
                }
                if p.fill_order == 2 {
                    bytes.iter_mut().for_each(|b| *b = b.reverse_bits());
                }
                offsets.push(out.len() as u32);
                counts.push(bytes.len() as u32);
                out.extend(bytes);
            }
        }
        let mut entries: Vec<(u16, u16, Vec<u32>)> = vec![
            (256, 4, vec![p.width]),
            (257, 4, vec![p.height]),
            (258, 3, vec![u32::from(p.bits); spp]),
            (259, 3, vec![if p.lzw { 5 } else { 1 }]),
            (262, 3, vec![u32::from(p.photometric)]),
            (277, 3, vec![u32::from(p.spp)]),
            (284, 3, vec![if p.planar { 2 } else { 1 }]),
        ];
        if p.fill_order != 1 {
            entries.push((266, 3, vec![u32::from(p.fill_order)]));
        }
        if p.orientation != 1 {
            entries.push((274, 3, vec![u32::from(p.orientation)]));
        }
        if !p.colormap.is_empty() {
            entries.push((320, 3, p.colormap.iter().map(|&v| u32::from(v)).collect()));
        }
        match p.tile {
            Some((a, b)) => entries.extend([
                (322, 4, vec![a]),
                (323, 4, vec![b]),
                (324, 4, offsets),
                (325, 4, counts),
            ]),
            None => entries.extend([
                (273, 4, offsets),
                (278, 4, vec![p.height]),
                (279, 4, counts),
            ]),
        }
        entries.sort_by_key(|e| e.0);
        // Values that do not fit in 4 bytes go before the IFD.
        let mut inline = Vec::new();
        for (tag, ty, vals) in &entries {
            let bytes: Vec<u8> = if *ty == 3 {
                vals.iter()
                    .flat_map(|&v| (v as u16).to_le_bytes())
                    .collect()
            } else {
                vals.iter().flat_map(|v| v.to_le_bytes()).collect()
            };
            let field = if bytes.len() <= 4 {
                let mut f = bytes.clone();
                f.resize(4, 0);
                f
            } else {
                let at = out.len() as u32;
                out.extend(&bytes);
                at.to_le_bytes().to_vec()
            };
            inline.push((*tag, *ty, vals.len() as u32, field));
        }
        if out.len() % 2 == 1 {
            out.push(0);
        }
        let ifd = out.len() as u32;
        out[next_ifd_at..next_ifd_at + 4].copy_from_slice(&ifd.to_le_bytes());
        out.extend((inline.len() as u16).to_le_bytes());
        for (tag, ty, n, field) in inline {
            out.extend(tag.to_le_bytes());
            out.extend(ty.to_le_bytes());
            out.extend(n.to_le_bytes());
            out.extend(field);
        }
        next_ifd_at = out.len();
        out.extend([0, 0, 0, 0]);
    }
    out
}

/// An 11 x 3 bitmap (BlackIsZero) as libtiff writes it through Pillow with
/// CCITT Group 3 1-D coding (`Compression=3`), which the `tiff` crate does
/// not read.
const CCITT_GROUP3: &[u8] = b"\x49\x49\x2a\x00\x18\x00\x00\x00\x00\x17\xb8\x00\x4d\x54\xf0\x01\x35\x43\xa1\xd0\xe8\x74\x3a\x00\x09\x00\x00\x01\x03\x00\x01\x00\x00\x00\x0b\x00\x00\x00\x01\x01\x03\x00\x01\x00\x00\x00\x03\x00\x00\x00\x02\x01\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00\x03\x01\x03\x00\x01\x00\x00\x00\x03\x00\x00\x00\x06\x01\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00\x11\x01\x04\x00\x01\x00\x00\x00\x08\x00\x00\x00\x16\x01\x03\x00\x01\x00\x00\x00\x03\x00\x00\x00\x17\x01\x04\x00\x01\x00\x00\x00\x0f\x00\x00\x00\x1c\x01\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00";

/// The same bitmap with CCITT modified Huffman coding (`Compression=2`).
const CCITT_RLE: &[u8] = b"\x49\x49\x2a\x00\x14\x00\x00\x00\x7b\x80\x35\x53\xc0\x35\x43\xa1\xd0\xe8\x74\x3a\x09\x00\x00\x01\x03\x00\x01\x00\x00\x00\x0b\x00\x00\x00\x01\x01\x03\x00\x01\x00\x00\x00\x03\x00\x00\x00\x02\x01\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00\x03\x01\x03\x00\x01\x00\x00\x00\x02\x00\x00\x00\x06\x01\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00\x11\x01\x04\x00\x01\x00\x00\x00\x08\x00\x00\x00\x16\x01\x03\x00\x01\x00\x00\x00\x03\x00\x00\x00\x17\x01\x04\x00\x01\x00\x00\x00\x0c\x00\x00\x00\x1c\x01\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00";

/// The bitmap's samples, as OpenCV reads both files.
const CCITT_PIXELS: [&str; 3] = ["00111000000", "10000000011", "10101010101"];

/// A 2 x 2 RGB TIFF whose BitsPerSample holds (8, 8, 8, 1) for three samples
/// (libtiff reads one per sample; the `tiff` crate refuses the count).
const BITS_PER_SAMPLE_COUNT_4: &[u8] = b"\x49\x49\x2a\x00\x1c\x00\x00\x00\x0a\x14\x1e\x28\x32\x3c\x46\x50\x5a\xc8\xd2\xdc\x08\x00\x08\x00\x08\x00\x01\x00\x09\x00\x00\x01\x03\x00\x01\x00\x00\x00\x02\x00\x00\x00\x01\x01\x03\x00\x01\x00\x00\x00\x02\x00\x00\x00\x02\x01\x03\x00\x04\x00\x00\x00\x14\x00\x00\x00\x03\x01\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00\x06\x01\x03\x00\x01\x00\x00\x00\x02\x00\x00\x00\x11\x01\x04\x00\x01\x00\x00\x00\x08\x00\x00\x00\x15\x01\x03\x00\x01\x00\x00\x00\x03\x00\x00\x00\x16\x01\x03\x00\x01\x00\x00\x00\x02\x00\x00\x00\x17\x01\x04\x00\x01\x00\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00";

/// The shape and the float32 values of an `.npy` output.
fn floats(npy: &[u8]) -> (Vec<usize>, Vec<f32>) {
    let (descr, shape, header) = npy_shape(npy);
    assert_eq!(descr, "<f4");
    let data = npy[header..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (shape, data)
}

fn minmax(vals: &[u16]) -> Vec<f32> {
    let lo = f32::from(*vals.iter().min().expect("samples"));
    let hi = f32::from(*vals.iter().max().expect("samples"));
    vals.iter()
        .map(|&v| {
            if hi > lo {
                (f32::from(v) - lo) / (hi - lo)
            } else {
                0.0
            }
        })
        .collect()
}

fn assert_array(out: &Path, rel: &str, shape: &[usize], want: &[u16]) {
    let (got_shape, got) = floats(&read(&out.join(format!("{rel}.npy"))));
    assert_eq!(got_shape, shape, "{rel}: shape");
    let want = minmax(want);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-6,
        "{rel}: max difference {worst}\n got {got:?}\nwant {want:?}"
    );
}

/// A `w`x`h` gradient of `spp` samples that differ per channel, below `max`.
fn gradient(w: u32, h: u32, spp: u16, max: u32) -> Vec<u16> {
    (0..w * h * u32::from(spp))
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % (max + 1)) as u16)
        .collect()
}

fn write_corpus(dir: &Path) -> Vec<(&'static str, Vec<usize>, Vec<u16>)> {
    let mut expected = Vec::new();
    let mut put = |name: &'static str, bytes: Vec<u8>, shape: Vec<usize>, want: Vec<u16>| {
        std::fs::write(dir.join(name), bytes).expect("write");
        if !want.is_empty() {
            expected.push((name, shape, want));
        }
    };
    let rgb8 = gradient(13, 11, 3, 255);
    let rgba16 = gradient(13, 11, 4, 65535);
    // LZW tiles with right-hand padding: the tiff crate's own LZW reader
    // fails some of them ("no lzw end code found") though every one ends
    // with its end code; libtiff reads them.
    let (lw, lh) = (45, 37);
    let lzw8 = gradient(lw, lh, 3, 255);
    let lzw16 = gradient(lw, lh, 4, 65535);
    for (name, (width, height), tile, planar, bits, spp, lzw, samples) in [
        (
            "tiled_planar_8.tif",
            (13, 11),
            Some((16, 16)),
            true,
            8,
            3,
            false,
            &rgb8,
        ),
        (
            "tiled_planar_16.tif",
            (13, 11),
            Some((16, 16)),
            true,
            16,
            4,
            false,
            &rgba16,
        ),
        (
            "strip_planar_16.tif",
            (13, 11),
            None,
            true,
            16,
            4,
            false,
            &rgba16,
        ),
        (
            "tiled_chunky_8.tif",
            (13, 11),
            Some((16, 16)),
            false,
            8,
            3,
            false,
            &rgb8,
        ),
        (
            "tiled_lzw_8.tif",
            (lw, lh),
            Some((16, 16)),
            false,
            8,
            3,
            true,
            &lzw8,
        ),
        (
            "tiled_lzw_planar_8.tif",
            (lw, lh),
            Some((16, 16)),
            true,
            8,
            3,
            true,
            &lzw8,
        ),
        (
            "tiled_lzw_16.tif",
            (lw, lh),
            Some((16, 16)),
            false,
            16,
            4,
            true,
            &lzw16,
        ),
        (
            "strip_lzw_16.tif",
            (lw, lh),
            None,
            true,
            16,
            4,
            true,
            &lzw16,
        ),
    ] {
        let page = Page {
            width,
            height,
            bits,
            spp,
            photometric: 2,
            planar,
            tile,
            fill_order: 1,
            lzw,
            orientation: 1,
            colormap: &[],
            samples,
        };
        put(
            name,
            tiff(&[page]),
            vec![height as usize, width as usize, usize::from(spp)],
            samples.clone(),
        );
    }
    let gray16 = gradient(9, 5, 1, 65535);
    let page = |fill_order| Page {
        width: 9,
        height: 5,
        bits: 16,
        spp: 1,
        photometric: 1,
        planar: false,
        tile: None,
        fill_order,
        lzw: false,
        orientation: 1,
        colormap: &[],
        samples: &gray16,
    };
    put(
        "fill_order_2.tif",
        tiff(&[page(2)]),
        vec![5, 9, 1],
        gray16.clone(),
    );
    // The Orientation tag: OpenCV 5 applies it to TIFFs even with
    // IMREAD_UNCHANGED (2-4 measured; 5-8 it means to, but fails).
    let (ow, oh) = (9usize, 5usize);
    for (name, orientation) in [
        ("orientation_2.tif", 2u16),
        ("orientation_3.tif", 3),
        ("orientation_4.tif", 4),
        ("orientation_6.tif", 6),
    ] {
        let oriented = Page {
            orientation,
            ..page(1)
        };
        let at = |x: usize, y: usize| gray16[y * ow + x];
        let (shape, want): (Vec<usize>, Vec<u16>) = match orientation {
            2 => (
                vec![oh, ow, 1],
                (0..oh)
                    .flat_map(|y| (0..ow).map(move |x| at(ow - 1 - x, y)))
                    .collect(),
            ),
            3 => (
                vec![oh, ow, 1],
                (0..oh)
                    .flat_map(|y| (0..ow).map(move |x| at(ow - 1 - x, oh - 1 - y)))
                    .collect(),
            ),
            4 => (
                vec![oh, ow, 1],
                (0..oh)
                    .flat_map(|y| (0..ow).map(move |x| at(x, oh - 1 - y)))
                    .collect(),
            ),
            // Rotated 90 degrees clockwise: `oh` wide, `ow` high.
            _ => (
                vec![ow, oh, 1],
                (0..ow)
                    .flat_map(|y| (0..oh).map(move |x| at(y, oh - 1 - x)))
                    .collect(),
            ),
        };
        put(name, tiff(&[oriented]), shape, want);
    }
    // CIE L*a*b* (a*, b* signed): RGB as libtiff's RGBA interface gives it
    // to OpenCV (D50 white, sRGB display); values from cv2.imread.
    let lab: Vec<u16> = vec![
        0, 0, 0, 255, 0, 0, 128, 100, 156, 60, 200, 40, 200, 127, 129, 20, 250, 5, 240, 30, 220,
        100, 128, 128,
    ];
    let lab_page = Page {
        width: 4,
        height: 2,
        bits: 8,
        spp: 3,
        photometric: 8,
        samples: &lab,
        ..page(1)
    };
    put(
        "cielab.tif",
        tiff(&[lab_page]),
        vec![2, 4, 3],
        vec![
            0, 0, 0, 255, 252, 222, 211, 0, 255, 0, 75, 0, 255, 0, 255, 0, 0, 0, 255, 218, 255, 0,
            139, 255,
        ],
    );
    // 8-bit CMYK: RGBA with alpha 255, as libtiff's RGBA interface gives it
    // to OpenCV: each of R, G, B = (255 - K) * (255 - C|M|Y) / 255.
    let cmyk = gradient(5, 3, 4, 255);
    let cmyk_page = Page {
        width: 5,
        height: 3,
        bits: 8,
        spp: 4,
        photometric: 5,
        samples: &cmyk,
        ..page(1)
    };
    let want: Vec<u16> = cmyk
        .chunks(4)
        .flat_map(|p| {
            let k = 255 - u32::from(p[3]);
            let c = |v: u16| (k * (255 - u32::from(v)) / 255) as u16;
            [c(p[0]), c(p[1]), c(p[2]), 255]
        })
        .collect();
    put("cmyk.tif", tiff(&[cmyk_page]), vec![3, 5, 4], want);
    // 12-bit gray: OpenCV gives the values in 16-bit words.
    let gray12 = gradient(9, 5, 1, 4095);
    let twelve = Page {
        bits: 12,
        samples: &gray12,
        ..page(1)
    };
    put("gray12.tif", tiff(&[twelve]), vec![5, 9, 1], gray12.clone());
    let ccitt: Vec<u16> = CCITT_PIXELS
        .iter()
        .flat_map(|row| row.bytes().map(|b| if b == b'1' { 255 } else { 0 }))
        .collect();
    put(
        "ccitt_group3.tif",
        CCITT_GROUP3.to_vec(),
        vec![3, 11, 1],
        ccitt.clone(),
    );
    put("ccitt_rle.tif", CCITT_RLE.to_vec(), vec![3, 11, 1], ccitt);
    put(
        "bits_per_sample_count_4.tif",
        BITS_PER_SAMPLE_COUNT_4.to_vec(),
        vec![2, 2, 3],
        vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 200, 210, 220],
    );
    put(
        "two_pages.tif",
        tiff(&[page(1), page(1)]),
        vec![5, 9, 1],
        gray16.clone(),
    );
    // WhiteIsZero bitmap: a 0 bit is white, which OpenCV gives as 255.
    let bits: Vec<u16> = (0..10 * 3).map(|i| (i % 3 == 0) as u16).collect();
    let white_is_zero = Page {
        width: 10,
        height: 3,
        bits: 1,
        spp: 1,
        photometric: 0,
        planar: false,
        tile: None,
        fill_order: 1,
        lzw: false,
        orientation: 1,
        colormap: &[],
        samples: &bits,
    };
    let want: Vec<u16> = bits.iter().map(|&b| if b == 0 { 255 } else { 0 }).collect();
    put(
        "white_is_zero.tif",
        tiff(&[white_is_zero]),
        vec![3, 10, 1],
        want,
    );
    // Palette TIFF, 8-bit indices, 16-bit color map: RGB from the high
    // byte of each map value (libtiff's RGBA interface, OpenCV's path).
    let indices: Vec<u16> = (0..6 * 4).map(|i| (i * 37 % 256) as u16).collect();
    let colormap: Vec<u16> = (0..3 * 256u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 16) as u16)
        .collect();
    let palette_page = Page {
        width: 6,
        height: 4,
        bits: 8,
        spp: 1,
        photometric: 3,
        planar: false,
        tile: None,
        fill_order: 1,
        lzw: false,
        orientation: 1,
        colormap: &colormap,
        samples: &indices,
    };
    let map = &colormap;
    let want: Vec<u16> = indices
        .iter()
        .flat_map(|&i| (0..3).map(move |c| map[c * 256 + usize::from(i)] >> 8))
        .collect();
    put("palette.tif", tiff(&[palette_page]), vec![4, 6, 3], want);
    put(
        "gray.pgm",
        b"P5\n3 2\n200\n\x00\x10\x20\x30\x40\xc8".to_vec(),
        vec![2, 3, 1],
        vec![0, 16, 32, 48, 64, 200],
    );
    put(
        "plain16.pgm",
        b"P2\n2 2\n1000\n0 1 999 1000\n".to_vec(),
        vec![2, 2, 1],
        vec![0, 1, 999, 1000],
    );
    put(
        "bitmap.pbm",
        b"P4\n3 1\n\x40".to_vec(),
        vec![1, 3, 1],
        vec![255, 0, 255],
    );
    put(
        "color.ppm",
        b"P3 2 1 255 1 2 3 4 5 6".to_vec(),
        vec![1, 2, 3],
        vec![1, 2, 3, 4, 5, 6],
    );
    put(
        "gray_trns.png",
        gray_png_with_trns(),
        vec![2, 3, 1],
        vec![0, 7, 100, 200, 7, 9],
    );
    // BMP, 4x3 RLE8 with a gray palette (entry 0 is 7): a run, a delta to
    // the last pixel of the next row, a literal, end of line, end of file.
    // Skipped pixels take palette entry 0 and the output is 1 channel.
    put(
        "rle8_skipped.bmp",
        bmp(
            4,
            3,
            8,
            1,
            &[7, 7, 7, 0, 10, 10, 10, 0, 20, 20, 20, 0, 30, 30, 30, 0],
            &[2, 1, 0, 2, 1, 1, 1, 3, 0, 0, 0, 1],
        ),
        vec![3, 4, 1],
        vec![7, 7, 7, 7, 7, 7, 7, 30, 10, 10, 7, 7],
    );
    // 32-bit BI_BITFIELDS with 5-bit masks in a 124-byte header: RGBA,
    // fields scaled to 8 bits as OpenCV does.
    let masks: Vec<u8> = [0x7c00u32, 0x3e0, 0x1f, 0x8000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let px: Vec<u8> = [0xffffu32, 0x7fff, 0x0421, 0x8421]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    put(
        "bitfields.bmp",
        bmp(2, 2, 32, 3, &masks, &px),
        vec![2, 2, 4],
        vec![
            8, 8, 8, 0, 8, 8, 8, 255, 255, 255, 255, 255, 255, 255, 255, 0,
        ],
    );
    // GIF 3x2, background index 2, a 2x2 frame at x=1 whose index 1 is
    // transparent: RGBA, uncovered and transparent pixels the background
    // color with alpha 0.
    put(
        "transparent.gif",
        transparent_gif(),
        vec![2, 3, 4],
        vec![
            70, 80, 90, 0, 10, 20, 30, 255, 70, 80, 90, 0, 70, 80, 90, 0, 100, 110, 120, 255, 70,
            80, 90, 255,
        ],
    );
    put(
        "float.pfm",
        b"Pf\n1 1\n-1.0\n\0\0\x80\x3f".to_vec(),
        vec![],
        vec![],
    );
    put(
        "picture.avif",
        b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf".to_vec(),
        vec![],
        vec![],
    );
    put(
        "picture.jp2",
        b"\0\0\0\x0cjP  \r\n\x87\n\0\0\0\x14ftypjp2 ".to_vec(),
        vec![],
        vec![],
    );
    expected
}

/// A BMP with a 124-byte header (`extra`: the palette for up to 8 bits per
/// pixel, else the R, G, B, A masks, which go inside the header).
fn bmp(w: i32, h: i32, bpp: u16, compression: u32, extra: &[u8], px: &[u8]) -> Vec<u8> {
    let mut info = Vec::new();
    info.extend(124u32.to_le_bytes());
    info.extend(w.to_le_bytes());
    info.extend(h.to_le_bytes());
    info.extend(1u16.to_le_bytes());
    info.extend(bpp.to_le_bytes());
    info.extend(compression.to_le_bytes());
    info.extend([0; 12]);
    let colors = if bpp <= 8 { extra.len() as u32 / 4 } else { 0 };
    info.extend(colors.to_le_bytes());
    info.extend([0; 4]);
    if bpp > 8 {
        info.extend(extra);
    }
    info.resize(124, 0);
    if bpp <= 8 {
        info.extend(extra);
    }
    let offset = 14 + info.len() as u32;
    let mut out = b"BM".to_vec();
    out.extend((offset + px.len() as u32).to_le_bytes());
    out.extend([0; 4]);
    out.extend(offset.to_le_bytes());
    out.extend(info);
    out.extend(px);
    out
}

/// See the `transparent.gif` entry of [`write_corpus`]. The LZW data (code
/// size 3) is: clear, 0, 1, clear, 3, 2, end (the second clear keeps the
/// code size at 3 bits).
fn transparent_gif() -> Vec<u8> {
    let mut d = b"GIF89a\x03\x00\x02\x00\x81\x02\x00".to_vec();
    d.extend([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]);
    d.extend([0x21, 0xF9, 4, 1, 0, 0, 1, 0]);
    d.extend([0x2C, 1, 0, 0, 0, 2, 0, 2, 0, 0]);
    let (mut bits, mut n, mut lzw) = (0u32, 0u32, Vec::new());
    for code in [4u32, 0, 1, 4, 3, 2, 5] {
        bits |= code << n;
        n += 3;
        while n >= 8 {
            lzw.push(bits as u8);
            bits >>= 8;
            n -= 8;
        }
    }
    lzw.push(bits as u8);
    d.push(2);
    d.push(lzw.len() as u8);
    d.extend(lzw);
    d.extend([0, 0x3B]);
    d
}

/// A 3x2 8-bit gray PNG whose `tRNS` chunk makes value 7 transparent.
fn gray_png_with_trns() -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, 3, 2);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_trns(vec![0, 7]);
    let mut w = enc.write_header().expect("png header");
    w.write_image_data(&[0, 7, 100, 200, 7, 9])
        .expect("png data");
    w.finish().expect("png end");
    out
}

fn reason(rows: &std::collections::BTreeMap<String, Value>, rel: &str) -> String {
    rows[rel]["reason"].as_str().unwrap_or_default().to_string()
}

#[test]
fn real_world_layouts_decode_like_opencv_in_every_mode() {
    let dir = tempdir();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).expect("mkdir");
    let expected = write_corpus(&input);
    let c_out = dir.path().join("c");
    let c = centralized(&input, &c_out, &[]);
    assert_eq!(c.code, 3, "{c}");
    let rows = rows_by_path(&c_out);
    for (rel, shape, want) in &expected {
        assert_eq!(rows[*rel]["status"], "ok", "{rel}: {}", rows[*rel]);
        assert_array(&c_out, rel, shape, want);
    }
    assert_eq!(rows["gray_trns.png"]["channels"], 1);
    assert!(
        rows["two_pages.tif"]["warning"]
            .as_str()
            .is_some_and(|w| w.contains("first page")),
        "{}",
        rows["two_pages.tif"]
    );
    // PFM is read now (see `wide_samples_are_identical_in_every_mode`): a
    // 1x1 image is constant.
    assert_eq!(rows["float.pfm"]["status"], "ok", "{}", rows["float.pfm"]);
    assert_eq!(rows["float.pfm"]["sample_type"], "float32");
    for (rel, name) in [("picture.avif", "AVIF"), ("picture.jp2", "JPEG 2000")] {
        assert_eq!(rows[rel]["status"], "failed", "{}", rows[rel]);
        assert!(reason(&rows, rel).contains(name), "{}", rows[rel]);
    }
    // The same rows, failures included, from the distributed modes.
    for (name, extra) in [
        ("shared", &["--workers", "2"][..]),
        ("stream", &["--workers", "2", "--transfer", "stream"][..]),
    ] {
        let out = dir.path().join(name);
        let r = run_local(&input, &out, extra);
        assert_eq!(r.code, 3, "{name}: {r}");
        assert_eq!(rows_by_path(&out), rows, "{name}: manifests differ");
    }
}

/// A one-strip little-endian TIFF of `spp` samples per pixel of
/// `bits`-bit `format` (1 unsigned, 2 signed, 3 float), from raw bytes.
fn raw_tiff(w: u32, h: u32, spp: u16, bits: u16, format: u16, data: &[u8]) -> Vec<u8> {
    let mut out = b"II*\0".to_vec();
    let ifd = 8 + data.len() as u32 + 8;
    out.extend(ifd.to_le_bytes());
    out.extend(data);
    // BitsPerSample and SampleFormat values (up to 4 u16s) live here.
    let values_at = out.len() as u32;
    let per = |v: u16| -> Vec<u8> {
        (0..4)
            .flat_map(|i| if i < spp { v } else { 0 }.to_le_bytes())
            .collect()
    };
    out.extend(per(bits));
    assert_eq!(out.len() as u32, ifd, "layout");
    let photometric = if spp >= 3 { 2 } else { 1 };
    let inline = |v: u16| u32::from(v);
    let bits_field = if spp <= 2 {
        u32::from(bits) | if spp == 2 { u32::from(bits) << 16 } else { 0 }
    } else {
        values_at
    };
    let format_field = if spp <= 2 {
        u32::from(format) | if spp == 2 { u32::from(format) << 16 } else { 0 }
    } else {
        // Stored after the IFD.
        ifd + 2 + 10 * 12 + 4
    };
    let entries: [(u16, u16, u32, u32); 10] = [
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, u32::from(spp), bits_field),
        (259, 3, 1, 1),
        (262, 3, 1, inline(photometric)),
        (273, 4, 1, 8),
        (277, 3, 1, u32::from(spp)),
        (278, 4, 1, h),
        (279, 4, 1, data.len() as u32),
        (339, 3, u32::from(spp), format_field),
    ];
    out.extend(10u16.to_le_bytes());
    for (tag, ty, n, v) in entries {
        out.extend(tag.to_le_bytes());
        out.extend(ty.to_le_bytes());
        out.extend(n.to_le_bytes());
        out.extend(v.to_le_bytes());
    }
    out.extend([0, 0, 0, 0]);
    out.extend(per(format));
    out
}

/// Float, signed and 32-bit samples (TIFF `SampleFormat` 2/3, PFM) come out
/// as OpenCV's min-max of the values, with their sample type in the row,
/// and `centralized`, `run --workers 2` and stream mode write the same bytes
/// for them, statistics-phase jobs included.
#[test]
fn wide_samples_are_identical_in_every_mode() {
    let dir = tempdir();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).expect("mkdir");
    let (w, h) = (7u32, 5u32);
    let n = (w * h) as usize;
    let rgb_f: Vec<f32> = (0..n * 3)
        .map(|i| (i as f32 * 0.37).sin() * 40.5 - 3.25)
        .collect();
    let gray_i16: Vec<i16> = (0..n).map(|i| (i as i32 * 1531 - 20_000) as i16).collect();
    let gray_u32: Vec<u32> = (0..n).map(|i| i as u32 * 97_000_003).collect();
    let gray_i8: Vec<i8> = (0..n).map(|i| (i as i32 * 7 - 120) as i8).collect();
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>();
    std::fs::write(
        input.join("float.tif"),
        raw_tiff(w, h, 3, 32, 3, &le(&rgb_f)),
    )
    .expect("write");
    std::fs::write(
        input.join("int16.tif"),
        raw_tiff(
            w,
            h,
            1,
            16,
            2,
            &gray_i16
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        ),
    )
    .expect("write");
    std::fs::write(
        input.join("uint32.tif"),
        raw_tiff(
            w,
            h,
            1,
            32,
            1,
            &gray_u32
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        ),
    )
    .expect("write");
    std::fs::write(
        input.join("int8.tif"),
        raw_tiff(
            w,
            h,
            1,
            8,
            2,
            &gray_i8.iter().map(|&v| v as u8).collect::<Vec<_>>(),
        ),
    )
    .expect("write");
    // PFM: RGB, big-endian (scale 2: every sample halved), rows bottom up.
    let mut pfm = format!("PF\n{w} {h}\n2.0\n").into_bytes();
    for y in (0..h as usize).rev() {
        for v in &rgb_f[y * w as usize * 3..(y + 1) * w as usize * 3] {
            pfm.extend(v.to_be_bytes());
        }
    }
    std::fs::write(input.join("float.pfm"), pfm).expect("write");
    let mut nan = b"Pf\n2 1\n-1\n".to_vec();
    nan.extend(1.0f32.to_le_bytes());
    nan.extend(f32::NAN.to_le_bytes());
    std::fs::write(input.join("nan.pfm"), nan).expect("write");

    let c_out = dir.path().join("c");
    let c = centralized(&input, &c_out, &[]);
    assert_eq!(c.code, 3, "{c}");
    let rows = rows_by_path(&c_out);
    let expect = |rel: &str, ty: &str, bits: u64, channels: u64, vals: Vec<f64>| {
        let r = &rows[rel];
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["sample_type"], ty, "{r}");
        assert_eq!(r["bit_depth"].as_u64(), Some(bits), "{r}");
        assert_eq!(r["channels"].as_u64(), Some(channels), "{r}");
        let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        // serde_json's default float parsing may be one ulp off; the
        // file holds the shortest decimal of the exact value.
        let near = |v: &Value, want: f64| {
            v.as_f64()
                .is_some_and(|x| (x - want).abs() <= want.abs() * 1e-15)
        };
        assert!(near(&r["min"][0], lo), "{r}: min {lo}");
        assert!(near(&r["max"][0], hi), "{r}: max {hi}");
        let (shape, got) = floats(&read(&c_out.join(format!("{rel}.npy"))));
        assert_eq!(
            shape,
            vec![h as usize, w as usize, channels as usize],
            "{rel}"
        );
        for (g, v) in got.iter().zip(&vals) {
            let want = (v - lo) / (hi - lo);
            assert!((f64::from(*g) - want).abs() <= 1e-6, "{rel}: {g} vs {want}");
        }
    };
    let f64s = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
    expect("float.tif", "float32", 32, 3, f64s(&rgb_f));
    let halved: Vec<f32> = rgb_f.iter().map(|&v| v * 0.5).collect();
    expect("float.pfm", "float32", 32, 3, f64s(&halved));
    expect(
        "int16.tif",
        "int16",
        16,
        1,
        gray_i16.iter().map(|&v| f64::from(v)).collect(),
    );
    expect(
        "uint32.tif",
        "uint32",
        32,
        1,
        gray_u32.iter().map(|&v| f64::from(v)).collect(),
    );
    expect(
        "int8.tif",
        "int8",
        8,
        1,
        gray_i8.iter().map(|&v| f64::from(v)).collect(),
    );
    assert_eq!(rows["nan.pfm"]["status"], "failed");
    assert!(
        reason(&rows, "nan.pfm").contains("NaN"),
        "{}",
        rows["nan.pfm"]
    );
    for (name, extra) in [
        ("shared", &["--workers", "2"][..]),
        ("stream", &["--workers", "2", "--transfer", "stream"][..]),
    ] {
        let out = dir.path().join(name);
        let r = run_local(&input, &out, extra);
        assert_eq!(r.code, 3, "{name}: {r}");
        assert_same_dataset(&c_out, &out);
    }
    // Two-phase jobs: raw statistics of every type cross the wire.
    let z = ["--standardize", "--scope", "dataset", "--per-channel"];
    let (a, b) = (dir.path().join("za"), dir.path().join("zb"));
    let ra = centralized(&input, &a, &["--channels", "rgb", "--standardize"]);
    assert_eq!(ra.code, 3, "{ra}");
    let mut extra = vec!["--workers", "2", "--channels", "rgb", "--standardize"];
    let rb = run_local(&input, &b, &extra);
    assert_eq!(rb.code, 3, "{rb}");
    assert_same_dataset(&a, &b);
    let (a, b) = (dir.path().join("da"), dir.path().join("db"));
    let mut local = vec!["--channels", "rgb"];
    local.extend(z);
    let ra = centralized(&input, &a, &local);
    assert_eq!(ra.code, 3, "{ra}");
    extra.truncate(2);
    extra.extend(local);
    let rb = run_local(&input, &b, &extra);
    assert_eq!(rb.code, 3, "{rb}");
    assert_same_dataset(&a, &b);
}
