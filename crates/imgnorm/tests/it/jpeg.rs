//! Broken JPEGs through the real binary (libjpeg-turbo behind the C shim):
//! every one becomes a manifest row with a reason, in `centralized` and in
//! `run` alike, and the process exits 3, never killed by a signal or by
//! libjpeg's default `exit()`.
use std::path::Path;

use crate::helpers::{centralized, fixtures, rows_by_path, run_local, tempdir};

/// Offset of the SOFn marker (0xFFC0..0xFFCF except DHT, JPG, DAC).
fn sof(data: &[u8]) -> usize {
    let mut i = 2;
    loop {
        assert_eq!(data[i], 0xFF, "marker expected at {i}");
        let m = data[i + 1];
        if (0xC0..=0xCF).contains(&m) && ![0xC4, 0xC8, 0xCC].contains(&m) {
            return i;
        }
        i += 2 + usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
    }
}

/// Writes the broken variants of `good` into `dir`; returns (name, expected
/// status, a word the reason must contain).
fn variants(dir: &Path, good: &[u8]) -> Vec<(String, &'static str, &'static str)> {
    let s = sof(good);
    let mut cases = Vec::new();
    let mut put = |name: &str, data: Vec<u8>, status: &'static str, word: &'static str| {
        std::fs::write(dir.join(name), data).expect("write case");
        cases.push((name.to_string(), status, word));
    };
    for (k, n) in [3, s + 4, s + 12, good.len() / 2, good.len() - 2]
        .into_iter()
        .enumerate()
    {
        put(
            &format!("cut{k}.jpg"),
            good[..n].to_vec(),
            "failed",
            "truncated",
        );
    }
    // 65000 x 65000: refused from the header by the pixel limit.
    let mut huge = good.to_vec();
    huge[s + 5..s + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]);
    put("huge.jpg", huge, "failed", "pixels");
    // 12-bit samples: the vendored decoder reads 8-bit files only.
    let mut twelve = good.to_vec();
    twelve[s + 4] = 12;
    put("twelve_bit.jpg", twelve, "failed", "precision");
    // Zero width.
    let mut empty = good.to_vec();
    empty[s + 7..s + 9].copy_from_slice(&[0, 0]);
    put("zero_width.jpg", empty, "failed", "jpeg");
    // Tables but no frame, then EOI.
    let mut tables = good[..s].to_vec();
    tables.extend_from_slice(&[0xFF, 0xD9]);
    put("no_frame.jpg", tables, "failed", "jpeg");
    cases
}

#[test]
fn broken_jpegs_are_failed_rows_in_every_mode() {
    let input = tempdir();
    let mut cases = Vec::new();
    for (prefix, name) in [
        ("base", "jpeg_baseline.jpg"),
        ("prog", "jpeg_progressive.jpg"),
    ] {
        let sub = input.path().join(prefix);
        std::fs::create_dir(&sub).expect("mkdir");
        let good = std::fs::read(fixtures().join("formats").join(name)).expect("fixture");
        for (n, status, word) in variants(&sub, &good) {
            cases.push((format!("{prefix}/{n}"), status, word));
        }
    }
    // Scan data scrambled but EOI intact: libjpeg recovers (ok with a
    // warning) or refuses (failed); either way a row, never a crash.
    let good = std::fs::read(fixtures().join("jpeg_arith/arith_420.jpg")).expect("fixture");
    let mut bad = good.clone();
    let n = bad.len();
    for b in &mut bad[n / 2..n - 2] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(input.path().join("scrambled.jpg"), bad).expect("write");

    let mut rows = Vec::new();
    for mode in ["centralized", "run"] {
        let out = tempdir();
        let run = if mode == "run" {
            run_local(input.path(), out.path(), &["--workers", "1"])
        } else {
            centralized(input.path(), out.path(), &[])
        };
        assert_eq!(run.code, 3, "{mode}: {run}");
        let by = rows_by_path(out.path());
        assert_eq!(by.len(), cases.len() + 1, "{mode}: a row per file: {by:?}");
        for (rel, status, word) in &cases {
            let r = &by[rel.as_str()];
            assert_eq!(r["status"], *status, "{mode} {rel}: {r}");
            let reason = r["reason"].as_str().unwrap_or_default().to_lowercase();
            assert!(
                reason.contains(word),
                "{mode} {rel}: reason {reason:?} lacks {word:?}"
            );
        }
        let r = &by["scrambled.jpg"];
        match r["status"].as_str() {
            Some("ok") => assert!(
                r["warning"].as_str().is_some_and(|w| w.contains("corrupt")),
                "{r}"
            ),
            Some("failed") => assert!(r["reason"].as_str().is_some_and(|w| !w.is_empty()), "{r}"),
            _ => panic!("{mode}: scrambled.jpg: {r}"),
        }
        rows.push(by);
    }
    let strip = |by: &std::collections::BTreeMap<String, serde_json::Value>| {
        by.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v["status"].clone(),
                    v["reason"].clone(),
                    v["warning"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(&rows[0]),
        strip(&rows[1]),
        "centralized and run disagree"
    );
}
