//! Dataset statistics (`stats.json["dataset"]`): the same numbers, bit for
//! bit, from a centralized run and distributed runs (three workers sharing
//! storage, two streaming), and equal to a reference computed here from the
//! `.npy` outputs themselves.
use std::path::Path;

use serde_json::Value;

use crate::helpers::{centralized, imgnorm, manifest, npy_shape, read, tempdir};

/// Values of every `ok` array, per channel, in path order (f32 outputs).
fn channel_values(out: &Path) -> Vec<Vec<f64>> {
    let mut channels: Vec<Vec<f64>> = Vec::new();
    for row in manifest(out).iter().filter(|r| r["status"] == "ok") {
        let bytes = read(&out.join(row["output"].as_str().expect("output")));
        let (descr, shape, offset) = npy_shape(&bytes);
        assert_eq!(descr, "<f4");
        let c = shape[2];
        if channels.len() < c {
            channels.resize(c, Vec::new());
        }
        let values = bytes[offset..]
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        for (i, v) in values.enumerate() {
            channels[i % c].push(v);
        }
    }
    channels
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn dataset_stats_are_identical_across_modes_and_match_the_arrays() {
    let dir = tempdir();
    let input = dir.path().join("in");
    let made = imgnorm([
        "gen".as_ref(),
        "--out".as_ref(),
        input.as_os_str(),
        "--format".as_ref(),
        "mixed".as_ref(),
        "--size".as_ref(),
        "48x40".as_ref(),
        "--count".as_ref(),
        "40".as_ref(),
        "--classes".as_ref(),
        "3".as_ref(),
    ]);
    assert_eq!(made.code, 0, "{made}");
    // A failed image must not change the numbers either.
    std::fs::write(input.join("class_001/broken.png"), b"not a png").expect("write");

    let c_out = dir.path().join("c");
    let c = centralized(&input, &c_out, &[]);
    assert_eq!(c.code, 3, "{c}");
    let d_out = dir.path().join("d");
    let d = imgnorm([
        "run".as_ref(),
        "-q".as_ref(),
        "--workers".as_ref(),
        "3".as_ref(),
        "--batch-size".as_ref(),
        "4".as_ref(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        d_out.as_os_str(),
    ]);
    assert_eq!(d.code, 3, "{d}");
    let s_out = dir.path().join("s");
    let s = imgnorm([
        "run".as_ref(),
        "-q".as_ref(),
        "--workers".as_ref(),
        "2".as_ref(),
        "--transfer".as_ref(),
        "stream".as_ref(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        s_out.as_os_str(),
    ]);
    assert_eq!(s.code, 3, "{s}");

    for run in [&c, &d, &s] {
        // The summary stays last; the dataset lines come just before it.
        let _ = run.summary();
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert!(
            lines[lines.len() - 3].starts_with("dataset: 40 images"),
            "{run}"
        );
        assert!(lines[lines.len() - 2].starts_with("classes (3): "), "{run}");
    }

    let stats = |out: &Path| -> Value {
        let v: Value = serde_json::from_slice(&read(&out.join("stats.json"))).expect("json");
        v["dataset"].clone()
    };
    let cs = stats(&c_out);
    // serde_json prints the shortest round-tripping form: equal values mean
    // bit-identical doubles.
    assert_eq!(cs, stats(&d_out));
    assert_eq!(cs, stats(&s_out));
    assert_eq!(cs["images"], 40);
    assert_eq!(cs["histogram_range"], serde_json::json!([0.0, 1.0]));
    let classes = cs["classes"].as_object().expect("classes");
    assert_eq!(classes.len(), 3);
    assert_eq!(
        classes.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        40
    );

    let reference = channel_values(&c_out);
    let got = cs["channels"].as_array().expect("channels");
    assert_eq!(got.len(), reference.len());
    for (k, (g, values)) in got.iter().zip(&reference).enumerate() {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut hist = vec![0u64; 256];
        for v in values {
            hist[((v * 256.0).floor() as usize).min(255)] += 1;
        }
        assert_eq!(g["count"], values.len(), "channel {k}");
        assert_eq!(g["min"].as_f64(), Some(min), "channel {k}");
        assert_eq!(g["max"].as_f64(), Some(max), "channel {k}");
        let (gm, gs) = (g["mean"].as_f64().unwrap(), g["std"].as_f64().unwrap());
        assert!(close(gm, mean), "channel {k}: mean {gm} vs {mean}");
        assert!(close(gs, std), "channel {k}: std {gs} vs {std}");
        let gh: Vec<u64> = serde_json::from_value(g["histogram"].clone()).expect("histogram");
        assert_eq!(gh, hist, "channel {k}");
    }
}
