//! `imgnorm centralized` end to end: every fixture format, hostile files,
//! options that change rows, usage errors, awkward trees (odd names, symlink
//! loops), determinism of the dataset, and `imgnorm gen` determinism.
use std::path::Path;

use serde_json::Value;

use crate::helpers::*;

/// (path, height, width, channels, bit depth, format) per EXPECTED.md.
const FORMATS: &[(&str, u64, u64, u64, u64, &str)] = &[
    ("bmp_rgb.bmp", 37, 50, 3, 8, "bmp"),
    ("constant/flat.png", 20, 30, 3, 8, "png"),
    ("exif/rotated.jpg", 40, 64, 3, 8, "jpeg"),
    ("gif_anim.gif", 40, 56, 4, 8, "gif"),
    ("jpeg_baseline.jpg", 48, 64, 3, 8, "jpeg"),
    ("jpeg_cmyk.jpg", 32, 48, 3, 8, "jpeg"),
    ("jpeg_gray.jpg", 40, 56, 1, 8, "jpeg"),
    ("jpeg_progressive.jpg", 64, 40, 3, 8, "jpeg"),
    ("noext/photo", 32, 40, 3, 8, "png"),
    ("odd names/ünïcödé café.png", 24, 34, 3, 8, "png"),
    ("png_gray16.png", 44, 30, 1, 16, "png"),
    ("png_gray8.png", 33, 47, 1, 8, "png"),
    ("png_graya8.png", 30, 44, 2, 8, "png"),
    ("png_palette.png", 36, 52, 3, 8, "png"),
    ("png_palette_trns.png", 36, 52, 4, 8, "png"),
    ("png_rgb16.png", 40, 56, 3, 16, "png"),
    ("png_rgb8.png", 40, 72, 3, 8, "png"),
    ("png_rgba16.png", 28, 40, 4, 16, "png"),
    ("png_rgba8.png", 48, 36, 4, 8, "png"),
    ("tiff_gray16.tif", 40, 52, 1, 16, "tiff"),
    ("tiff_rgb16.tif", 36, 44, 3, 16, "tiff"),
    ("tiff_rgb8.tif", 40, 48, 3, 8, "tiff"),
    ("tiny/one_pixel.png", 1, 1, 3, 8, "png"),
    ("upper/IMAGE.JPG", 36, 60, 3, 8, "jpeg"),
    ("webp_lossless.webp", 44, 60, 3, 8, "webp"),
    ("webp_lossy.webp", 44, 60, 3, 8, "webp"),
];

/// (path, status, words the reason must contain) per EXPECTED.md.
const HOSTILE: &[(&str, &str, &str)] = &[
    ("bomb.png", "failed", "pixel"),
    ("data.bin", "skipped", "not an image"),
    ("empty.jpg", "failed", "empty"),
    ("notes.txt", "skipped", "not an image"),
    ("random.jpg", "failed", "not a supported image"),
    ("text.png", "failed", "not a supported image"),
    ("truncated.jpg", "failed", "truncated"),
    ("truncated.png", "failed", ""),
];

fn assert_no_tmp(out: &Path) {
    let stray: Vec<_> = files_under(out)
        .into_iter()
        .filter(|f| f.ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}

#[test]
fn every_format_is_ok_with_the_expected_shape() {
    let out = tempdir();
    let run = centralized(&fixtures().join("formats"), out.path(), &[]);
    assert_eq!(run.code, 0, "{run}");
    let s = run.summary();
    assert_eq!(s["images"], FORMATS.len());
    assert_eq!(s["ok"], FORMATS.len());
    assert_eq!(
        (s["failed"].as_u64(), s["skipped"].as_u64()),
        (Some(0), Some(0))
    );

    let rows = manifest(out.path());
    let paths: Vec<&str> = rows
        .iter()
        .map(|r| r["path"].as_str().unwrap_or(""))
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "manifest must be sorted by path");

    let by = rows_by_path(out.path());
    assert_eq!(by.len(), FORMATS.len());
    for &(rel, h, w, c, bits, format) in FORMATS {
        let r = &by[rel];
        let what = format!("{rel}: {r}");
        assert_eq!(r["status"], "ok", "{what}");
        assert_eq!(
            (
                r["height"].as_u64(),
                r["width"].as_u64(),
                r["channels"].as_u64()
            ),
            (Some(h), Some(w), Some(c)),
            "{what}"
        );
        assert_eq!(r["bit_depth"].as_u64(), Some(bits), "{what}");
        assert_eq!(r["format"], format, "{what}");
        assert_eq!(r["output"], format!("{rel}.npy"), "{what}");

        let bytes = read(&out.path().join(format!("{rel}.npy")));
        let (descr, shape, data_at) = npy_shape(&bytes);
        assert_eq!(descr, "<f4", "{what}");
        assert_eq!(shape, vec![h as usize, w as usize, c as usize], "{what}");
        assert_eq!(data_at % 64, 0, "{what}: data must start 64-aligned");
        assert_eq!(bytes.len() - data_at, (h * w * c * 4) as usize, "{what}");
        let sum = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes));
        assert_eq!(
            r["checksum"], sum,
            "{what}: checksum is xxh3-128 of the file"
        );
        let values = bytes[data_at..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        for v in values {
            assert!((0.0..=1.0).contains(&v), "{what}: value {v} outside [0, 1]");
        }
    }
    assert_eq!(by["constant/flat.png"]["constant"], true);
    assert_eq!(by["constant/flat.png"]["min"], serde_json::json!([77]));
    assert!(by["png_rgb8.png"].get("constant").is_none());
    assert_no_tmp(out.path());
}

#[test]
fn hostile_files_become_rows_and_exit_3() {
    let out = tempdir();
    let run = centralized(&fixtures().join("hostile"), out.path(), &[]);
    assert_eq!(run.code, 3, "{run}");
    let s = run.summary();
    assert_eq!(
        (
            s["images"].as_u64(),
            s["ok"].as_u64(),
            s["failed"].as_u64(),
            s["skipped"].as_u64()
        ),
        (Some(8), Some(0), Some(6), Some(2)),
        "{run}"
    );
    let by = rows_by_path(out.path());
    assert_eq!(by.len(), HOSTILE.len());
    for &(rel, status, word) in HOSTILE {
        let r = &by[rel];
        assert_eq!(r["status"], status, "{rel}: {r}");
        let reason = r["reason"].as_str().unwrap_or_default().to_lowercase();
        assert!(!reason.trim().is_empty(), "{rel}: needs a reason: {r}");
        assert!(
            reason.contains(word),
            "{rel}: reason {reason:?} lacks {word:?}"
        );
        assert!(r.get("checksum").is_none(), "{rel}: {r}");
        assert!(
            !out.path().join(format!("{rel}.npy")).exists(),
            "{rel}: no output expected"
        );
    }
    assert!(
        by["bomb.png"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("100000000")
    );
    assert_eq!(
        files_under(out.path()),
        vec![
            ".imgnorm-inputs.jsonl".to_string(),
            "manifest.jsonl".to_string(),
            "stats.json".to_string()
        ]
    );
}

#[test]
fn allow_truncated_accepts_the_jpeg_with_a_warning() {
    let out = tempdir();
    let run = centralized(
        &fixtures().join("hostile"),
        out.path(),
        &["--allow-truncated"],
    );
    assert_eq!(run.code, 3, "the other hostile files still fail: {run}");
    let r = &rows_by_path(out.path())["truncated.jpg"];
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(
        (r["height"].as_u64(), r["width"].as_u64()),
        (Some(80), Some(96))
    );
    assert!(
        r["warning"].as_str().unwrap_or("").contains("truncated"),
        "{r}"
    );
    assert!(out.path().join("truncated.jpg.npy").is_file());
    // truncated.png stays failed: only JPEG has a "fill the rest" decode.
    assert_eq!(
        rows_by_path(out.path())["truncated.png"]["status"],
        "failed"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = tempdir();
    let missing = out.path().join("does-not-exist");
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (vec!["centralized".into()], "missing required flags"),
        (vec!["frobnicate".into()], "unknown subcommand"),
        (
            vec![
                "centralized".into(),
                "--input".into(),
                missing.clone().into(),
                "--output".into(),
                out.path().join("o").into(),
            ],
            "input folder missing",
        ),
        (
            vec![
                "centralized".into(),
                "--input".into(),
                fixtures().join("EXPECTED.md").into(),
                "--output".into(),
                out.path().join("o").into(),
            ],
            "input is a file",
        ),
        (
            vec![
                "centralized".into(),
                "--input".into(),
                fixtures().join("formats").into(),
                "--output".into(),
                out.path().join("o").into(),
                "--range".into(),
                "1,1".into(),
            ],
            "empty range",
        ),
        (
            vec![
                "centralized".into(),
                "--input".into(),
                fixtures().join("formats").into(),
                "--output".into(),
                out.path().join("o").into(),
                "--dtype".into(),
                "f64".into(),
            ],
            "unknown dtype",
        ),
        (
            vec![
                "gen".into(),
                "--out".into(),
                out.path().join("g").into(),
                "--size".into(),
                "0x4".into(),
            ],
            "bad size",
        ),
    ];
    for (args, what) in cases {
        let run = imgnorm(&args);
        assert_eq!(run.code, 2, "{what}: {run}");
        assert!(
            !run.stderr.trim().is_empty(),
            "{what}: must say why on stderr"
        );
    }
    assert!(!out.path().join("o").join("manifest.jsonl").exists());
}

/// A small valid PNG, written with the `image` crate.
fn png_bytes(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(5, 3, |x, y| {
        image::Rgb([x as u8 * 40 + seed, y as u8 * 60, 9])
    });
    let mut buf = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
        .expect("encode png");
    buf
}

#[test]
fn odd_file_names_round_trip() {
    let input = tempdir();
    let out = tempdir();
    let names = [
        "-starts-with-dash.png",
        "sp  aces/two  spaces.png",
        "quote'and\"double.png",
        "new\nline.png",
        "日本語/画像.png",
        "trailing.dot.",
        ".hidden.png",
        "back\\slash.png",
    ];
    for (i, n) in names.iter().enumerate() {
        let p = input.path().join(n);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, png_bytes(i as u8)).expect("write");
    }
    let run = centralized(input.path(), out.path(), &[]);
    assert_eq!(run.code, 0, "{run}");
    let by = rows_by_path(out.path());
    assert_eq!(by.len(), names.len(), "{by:?}");
    for n in names {
        let r = &by[n];
        assert_eq!(r["status"], "ok", "{n:?}: {r}");
        assert!(
            out.path().join(format!("{n}.npy")).is_file(),
            "{n:?}: output missing"
        );
    }
}

#[cfg(unix)]
#[test]
fn symlink_loop_is_a_skipped_row_not_a_hang() {
    let input = tempdir();
    let out = tempdir();
    let sub = input.path().join("a/b");
    std::fs::create_dir_all(&sub).expect("mkdir");
    std::fs::write(sub.join("img.png"), png_bytes(1)).expect("write");
    std::os::unix::fs::symlink("..", sub.join("up")).expect("symlink loop");
    std::os::unix::fs::symlink("img.png", sub.join("alias.png")).expect("file symlink");
    std::os::unix::fs::symlink("nowhere.png", sub.join("broken.png")).expect("broken symlink");

    let run = centralized(input.path(), out.path(), &[]);
    assert_eq!(
        run.code, 0,
        "loops and broken links are skipped, not failed: {run}"
    );
    let by = rows_by_path(out.path());
    assert_eq!(by["a/b/img.png"]["status"], "ok");
    assert_eq!(
        by["a/b/alias.png"]["status"], "ok",
        "links to files are followed"
    );
    let lp = &by["a/b/up"];
    assert_eq!(lp["status"], "skipped", "{lp}");
    assert!(lp["reason"].as_str().unwrap_or("").contains("loop"), "{lp}");
    assert_eq!(by["a/b/broken.png"]["status"], "skipped");
    assert_eq!(by.len(), 4, "{by:?}");
}

#[test]
fn output_inside_input_is_not_reprocessed() {
    let input = tempdir();
    std::fs::write(input.path().join("x.png"), png_bytes(3)).expect("write");
    let out = input.path().join("out");
    for _ in 0..2 {
        let run = centralized(input.path(), &out, &[]);
        assert_eq!(run.code, 0, "{run}");
        let rows = manifest(&out);
        assert_eq!(rows.len(), 1, "{rows:?}");
    }
}

#[test]
fn two_runs_give_byte_identical_datasets() {
    let a = tempdir();
    let b = tempdir();
    let input = fixtures().join("formats");
    assert_eq!(centralized(&input, a.path(), &[]).code, 0);
    assert_eq!(centralized(&input, b.path(), &[]).code, 0);
    assert_same_dataset(a.path(), b.path());
    assert_no_tmp(a.path());
}

#[test]
fn options_change_rows_and_arrays() {
    let out = tempdir();
    let run = centralized(
        &fixtures().join("formats"),
        out.path(),
        &[
            "--scope",
            "channel",
            "--dtype",
            "u8",
            "--channels",
            "rgb",
            "--range",
            "0,255",
        ],
    );
    assert_eq!(run.code, 0, "{run}");
    let by = rows_by_path(out.path());
    let r = &by["png_gray8.png"];
    assert_eq!(r["channels"], 3, "gray forced to RGB: {r}");
    assert_eq!(
        r["min"].as_array().map(Vec::len),
        Some(3),
        "one min per channel: {r}"
    );
    let tiny = &by["tiny/one_pixel.png"];
    assert_eq!(
        tiny["constant"], true,
        "each channel of one pixel is constant: {tiny}"
    );
    let bytes = read(&out.path().join("png_rgb8.png.npy"));
    let (descr, shape, _) = npy_shape(&bytes);
    assert_eq!((descr.as_str(), shape), ("|u1", vec![40, 72, 3]));

    let out = tempdir();
    let run = centralized(
        &fixtures().join("formats"),
        out.path(),
        &["--exif-orientation", "apply"],
    );
    assert_eq!(run.code, 0, "{run}");
    let r = &rows_by_path(out.path())["exif/rotated.jpg"];
    assert_eq!(
        (r["height"].as_u64(), r["width"].as_u64()),
        (Some(64), Some(40)),
        "{r}"
    );
}

#[test]
fn gen_is_deterministic() {
    let root = tempdir();
    let make = |dir: &str, seed: &str| {
        let out = root.path().join(dir);
        let mut args: Vec<std::ffi::OsString> =
            vec!["gen".into(), "--out".into(), out.clone().into()];
        for a in [
            "--count", "6", "--seed", seed, "--format", "mixed", "--size", "48x32",
        ] {
            args.push(a.into());
        }
        let run = imgnorm(args);
        assert_eq!(run.code, 0, "{run}");
        out
    };
    let a = make("a", "7");
    let b = make("b", "7");
    let c = make("c", "8");
    assert_eq!(files_under(&a).len(), 6);
    assert_same_dataset(&a, &b);
    let differs = files_under(&a)
        .iter()
        .any(|f| !c.join(f).is_file() || read(&a.join(f)) != read(&c.join(f)));
    assert!(differs, "another seed must give other images");

    // And the generated images normalize cleanly.
    let out = root.path().join("out");
    let run = centralized(&a, &out, &[]);
    assert_eq!(run.code, 0, "{run}");
    let ok = manifest(&out)
        .iter()
        .filter(|r| r["status"] == "ok")
        .count();
    assert_eq!(ok, 6);
}

#[test]
fn summary_matches_manifest_and_stats() {
    let out = tempdir();
    let run = centralized(&fixtures().join("hostile"), out.path(), &[]);
    let s = run.summary();
    let stats: Value =
        serde_json::from_slice(&read(&out.path().join("stats.json"))).expect("stats json");
    assert_eq!(stats["mode"], "centralized");
    for k in ["images", "ok", "failed", "skipped"] {
        assert_eq!(stats["counts"][k], s[k], "{k}");
    }
    let st = &stats["stage_seconds"];
    for k in ["read", "decode", "scale", "write"] {
        assert!(st[k].as_f64().is_some(), "stage_seconds.{k}: {stats}");
    }
}
