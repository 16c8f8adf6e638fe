//! Geometry and output formats (`--resize`, `--center-crop`, `--format
//! webdataset|stack`): the layouts are byte-identical between a centralized
//! run and distributed runs with 1 and 3 workers (shared storage and stream),
//! and hold exactly the arrays of the plain `.npy` tree made with the same
//! options, failed images included.
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::helpers::{
    assert_same_dataset, centralized, files_under, imgnorm, manifest, npy_shape, read, run_local,
    tempdir,
};

/// Mixed-format images of varied sizes in 3 class folders, one image at the
/// root (no class), one broken image and one text file.
fn dataset(dir: &Path) -> PathBuf {
    let input = dir.join("in");
    let made = imgnorm([
        "gen".as_ref(),
        "--out".as_ref(),
        input.as_os_str(),
        "--format".as_ref(),
        "mixed".as_ref(),
        "--count".as_ref(),
        "14".as_ref(),
        "--classes".as_ref(),
        "3".as_ref(),
        "--seed".as_ref(),
        "7".as_ref(),
    ]);
    assert_eq!(made.code, 0, "{made}");
    std::fs::write(input.join("class_001/broken.png"), b"not a png").expect("write");
    std::fs::write(input.join("class_002/notes.txt"), b"hello").expect("write");
    let first = files_under(&input.join("class_000")).remove(0);
    let ext = first.rsplit('.').next().expect("extension").to_string();
    std::fs::copy(
        input.join("class_000").join(&first),
        input.join(format!("root.image.{ext}")),
    )
    .expect("copy");
    input
}

/// Runs `imgnorm centralized` and the distributed modes with `opts` and
/// checks every output equals the centralized one; returns the centralized
/// output folder.
fn all_modes_agree(dir: &Path, input: &Path, name: &str, opts: &[&str]) -> PathBuf {
    let c_out = dir.join(format!("{name}-c"));
    let c = centralized(input, &c_out, opts);
    assert_eq!(c.code, 3, "{c}");
    let runs: [(&str, &[&str]); 3] = [
        ("w1", &["--workers", "1"]),
        ("w3", &["--workers", "3", "--batch-size", "2"]),
        (
            "w3s",
            &[
                "--workers",
                "3",
                "--batch-size",
                "2",
                "--transfer",
                "stream",
            ],
        ),
    ];
    for (tag, extra) in runs {
        let out = dir.join(format!("{name}-{tag}"));
        let mut args = opts.to_vec();
        args.extend_from_slice(extra);
        let r = run_local(input, &out, &args);
        assert_eq!(r.code, 3, "{tag}: {r}");
        assert_same_dataset(&c_out, &out);
    }
    c_out
}

const GEOMETRY: &[&str] = &[
    "--resize-shorter",
    "20",
    "--center-crop",
    "16x12",
    "--channels",
    "rgb",
];

/// The plain tree with the same geometry, as the reference.
fn reference_tree(dir: &Path, input: &Path) -> PathBuf {
    let out = dir.join("tree");
    let r = centralized(input, &out, GEOMETRY);
    assert_eq!(r.code, 3, "{r}");
    for row in manifest(&out).iter().filter(|r| r["status"] == "ok") {
        assert_eq!(
            (&row["height"], &row["width"], &row["channels"]),
            (&Value::from(12), &Value::from(16), &Value::from(3)),
            "{row}"
        );
    }
    out
}

/// Manifests equal except for the `output` field.
fn assert_same_rows(tree: &Path, other: &Path, output_of: impl Fn(&Value) -> Option<String>) {
    let (a, b) = (manifest(tree), manifest(other));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        let mut x = x.clone();
        if x["status"] == "ok" {
            x["output"] = output_of(y).map_or(Value::Null, Value::from);
        }
        assert_eq!(&x, y);
    }
}

#[test]
fn stack_is_identical_across_modes_and_holds_the_tree_arrays() {
    let dir = tempdir();
    let input = dataset(dir.path());
    let tree = reference_tree(dir.path(), &input);
    let mut opts = GEOMETRY.to_vec();
    opts.extend(["--format", "stack"]);
    let out = all_modes_agree(dir.path(), &input, "stack", &opts);
    assert_eq!(
        files_under(&out),
        [
            ".imgnorm-inputs.jsonl",
            "classes.json",
            "images.npy",
            "labels.npy",
            "manifest.jsonl",
            "paths.json",
            "stats.json",
            "valid.npy"
        ]
    );
    assert_same_rows(&tree, &out, |_| Some("images.npy".into()));

    let paths: Vec<String> =
        serde_json::from_slice(&read(&out.join("paths.json"))).expect("paths.json");
    let classes: Vec<String> =
        serde_json::from_slice(&read(&out.join("classes.json"))).expect("classes.json");
    assert_eq!(classes, ["class_000", "class_001", "class_002"]);
    let stack = read(&out.join("images.npy"));
    let (descr, shape, offset) = npy_shape(&stack);
    assert_eq!(
        (descr.as_str(), shape.as_slice()),
        ("<f4", &[paths.len(), 12, 16, 3][..])
    );
    let slice = 12 * 16 * 3 * 4;
    assert_eq!(stack.len(), offset + paths.len() * slice);
    let labels = read(&out.join("labels.npy"));
    let (ld, ls, lo) = npy_shape(&labels);
    assert_eq!((ld.as_str(), ls), ("<i8", vec![paths.len()]));
    let valid = read(&out.join("valid.npy"));
    let (vd, vs, vo) = npy_shape(&valid);
    assert_eq!((vd.as_str(), vs), ("|b1", vec![paths.len()]));

    let rows = crate::helpers::rows_by_path(&tree);
    let mut ok = 0;
    for (i, path) in paths.iter().enumerate() {
        let row = &rows[path];
        let got = &stack[offset + i * slice..offset + (i + 1) * slice];
        let label = i64::from_le_bytes(labels[lo + 8 * i..lo + 8 * i + 8].try_into().unwrap());
        let want_label = match path.split_once('/') {
            _ if row["status"] == "skipped" => -1,
            Some((c, _)) => classes.iter().position(|x| x == c).unwrap() as i64,
            None => -1,
        };
        assert_eq!(label, want_label, "{path}");
        if row["status"] == "ok" {
            ok += 1;
            assert_eq!(valid[vo + i], 1, "{path}");
            let npy = read(&tree.join(row["output"].as_str().unwrap()));
            let (_, _, o) = npy_shape(&npy);
            assert!(got == &npy[o..], "slice {i} ({path}) differs from the tree");
        } else {
            assert_eq!(valid[vo + i], 0, "{path}");
            assert!(got.iter().all(|&b| b == 0), "slice {i} ({path}) not zero");
        }
    }
    assert_eq!(ok, 15);
}

#[test]
fn webdataset_shards_are_identical_across_modes_and_hold_the_tree_arrays() {
    let dir = tempdir();
    let input = dataset(dir.path());
    let tree = reference_tree(dir.path(), &input);
    let mut opts = GEOMETRY.to_vec();
    opts.extend(["--format", "webdataset", "--shard-size", "4"]);
    let out = all_modes_agree(dir.path(), &input, "wds", &opts);
    let shards: Vec<String> = files_under(&out)
        .into_iter()
        .filter(|f| f.ends_with(".tar"))
        .collect();
    assert_eq!(
        shards,
        [
            "shard-000000.tar",
            "shard-000001.tar",
            "shard-000002.tar",
            "shard-000003.tar"
        ]
    );
    assert!(!out.join(".imgnorm-staging").exists());

    // Every ok image, in path order, 4 per shard, as <key>.npy + <key>.json.
    // (+ <key>.cls).
    let ok: Vec<Value> = manifest(&tree)
        .into_iter()
        .filter(|r| r["status"] == "ok")
        .collect();
    assert_eq!(ok.len(), 15);
    let mut members = Vec::new();
    for s in &shards {
        let mut archive = tar::Archive::new(std::fs::File::open(out.join(s)).unwrap());
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            assert_eq!(e.header().mtime().unwrap(), 0);
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            members.push((s.clone(), name, data));
        }
    }
    // A sample in a class folder has a `<key>.cls` between the two: the
    // ImageFolder index of its class, in ASCII.
    let classes: Vec<&str> = ok
        .iter()
        .filter_map(|r| r["path"].as_str().unwrap().split_once('/'))
        .map(|(c, _)| c)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut next = members.iter();
    for (i, row) in ok.iter().enumerate() {
        let path = row["path"].as_str().unwrap();
        let (shard, npy_name, npy) = next.next().expect("npy member");
        let key = npy_name.strip_suffix(".npy").expect("npy member");
        if let Some((class, _)) = path.split_once('/') {
            let (_, cls_name, cls) = next.next().expect("cls member");
            assert_eq!(cls_name, &format!("{key}.cls"));
            let want = classes.iter().position(|c| *c == class).unwrap();
            assert_eq!(cls, want.to_string().as_bytes(), "{path}");
        }
        let (_, json_name, json) = next.next().expect("json member");
        assert_eq!(shard, &shards[i / 4]);
        assert_eq!(json_name, &format!("{key}.json"));
        let base = key.rsplit('/').next().unwrap();
        assert!(!base.contains('.'), "key {key} has a dot in its last part");
        assert!(
            npy == &read(&tree.join(row["output"].as_str().unwrap())),
            "{path}"
        );
        let meta: Value = serde_json::from_slice(json).unwrap();
        assert_eq!(meta["path"], path);
        assert_eq!(meta["shape"], serde_json::json!([12, 16, 3]));
        assert_eq!(meta["checksum"], row["checksum"]);
    }
    assert!(next.next().is_none());
    assert_same_rows(&tree, &out, |r| r["output"].as_str().map(String::from));
    let outputs: Vec<Value> = manifest(&out)
        .into_iter()
        .filter(|r| r["status"] == "ok")
        .map(|r| r["output"].clone())
        .collect();
    assert_eq!(outputs[0], "shard-000000.tar");
    assert_eq!(outputs[14], "shard-000003.tar");
}

#[test]
fn resize_modes_give_the_documented_shapes_and_keep_16_bit() {
    let dir = tempdir();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    // 16-bit gray ramp 40x10 with values spread over the whole 16-bit range.
    let img = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(40, 10, |x, y| {
        image::Luma([(x * 1600 + y * 7) as u16])
    });
    img.save(input.join("wide16.png")).unwrap();
    let rgb = image::RgbImage::from_fn(30, 60, |x, y| image::Rgb([x as u8, y as u8, 9]));
    rgb.save(input.join("tall.png")).unwrap();
    let shapes = |opts: &[&str]| -> Vec<(u64, u64)> {
        let out = dir.path().join(format!("o{}", opts.join("_")));
        let r = centralized(&input, &out, opts);
        assert_eq!(r.code, 0, "{r}");
        manifest(&out)
            .iter()
            .map(|r| (r["height"].as_u64().unwrap(), r["width"].as_u64().unwrap()))
            .collect()
    };
    // tall.png is 30 wide x 60 high; wide16.png 40 x 10.
    assert_eq!(shapes(&["--resize", "8x6"]), [(6, 8), (6, 8)]);
    assert_eq!(shapes(&["--fit", "20x20"]), [(20, 10), (5, 20)]);
    assert_eq!(shapes(&["--resize-shorter", "5"]), [(10, 5), (5, 20)]);
    assert_eq!(
        shapes(&["--resize-shorter", "5", "--center-crop", "4x4"]),
        [(4, 4), (4, 4)]
    );
    // 16 bit stays 16 bit: upscaling the ramp gives more than 256 levels.
    let out = dir.path().join("u16");
    let r = centralized(&input, &out, &["--resize", "400x10", "--dtype", "u16"]);
    assert_eq!(r.code, 0, "{r}");
    let npy = read(&out.join("wide16.png.npy"));
    let (descr, shape, o) = npy_shape(&npy);
    assert_eq!((descr.as_str(), shape), ("<u2", vec![10, 400, 1]));
    let mut levels: Vec<u16> = npy[o..]
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    levels.sort_unstable();
    levels.dedup();
    assert!(levels.len() > 256, "only {} levels", levels.len());
}

#[test]
fn stack_without_a_fixed_shape_and_too_large_crops_are_refused() {
    let dir = tempdir();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    image::RgbImage::from_fn(10, 8, |x, _| image::Rgb([x as u8, 0, 0]))
        .save(input.join("a.png"))
        .unwrap();
    let r = centralized(&input, &dir.path().join("o1"), &["--format", "stack"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("--format stack needs one shape"), "{r}");
    let r = centralized(&input, &dir.path().join("o2"), &["--center-crop", "12x4"]);
    assert_eq!(r.code, 3, "{r}");
    let row = &manifest(&dir.path().join("o2"))[0];
    assert_eq!(row["status"], "failed");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("smaller than the center crop 12x4"),
        "{row}"
    );
}

/// The H×W×C body `hwc` (f32, `c` channels) reordered to C×H×W.
fn to_chw(hwc: &[u8], c: usize) -> Vec<u8> {
    let plane = hwc.len() / (4 * c);
    let mut out = vec![0u8; hwc.len()];
    for (i, px) in hwc.chunks_exact(4 * c).enumerate() {
        for (ch, v) in px.chunks_exact(4).enumerate() {
            out[(ch * plane + i) * 4..][..4].copy_from_slice(v);
        }
    }
    out
}

#[test]
fn chw_layout_is_identical_across_modes_in_every_format_and_holds_the_tree_transposed() {
    let dir = tempdir();
    let input = dataset(dir.path());
    let tree = reference_tree(dir.path(), &input);
    let ok: Vec<Value> = manifest(&tree)
        .into_iter()
        .filter(|r| r["status"] == "ok")
        .collect();
    let hwc_body = |row: &Value| {
        let npy = read(&tree.join(row["output"].as_str().unwrap()));
        let (_, _, at) = npy_shape(&npy);
        npy[at..].to_vec()
    };
    // npy: every array C×H×W, the tree's values reordered.
    let mut opts = GEOMETRY.to_vec();
    opts.extend(["--layout", "chw"]);
    let npy = all_modes_agree(dir.path(), &input, "chw-npy", &opts);
    for row in &ok {
        let bytes = read(&npy.join(row["output"].as_str().unwrap()));
        let (descr, shape, at) = npy_shape(&bytes);
        assert_eq!((descr.as_str(), shape), ("<f4", vec![3, 12, 16]));
        assert!(bytes[at..] == to_chw(&hwc_body(row), 3), "{row}");
    }
    let stats: Value = serde_json::from_slice(&read(&npy.join("stats.json"))).expect("stats.json");
    assert_eq!(stats["options"]["layout"], "chw", "{stats}");
    // The manifest's checksum is the written (C×H×W) file's.
    let rows = manifest(&npy);
    for row in rows.iter().filter(|r| r["status"] == "ok") {
        let bytes = read(&npy.join(row["output"].as_str().unwrap()));
        let sum = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes));
        assert_eq!(row["checksum"], sum.as_str());
    }
    // stack: N×C×H×W, row i the tree's image i reordered.
    let mut opts = GEOMETRY.to_vec();
    opts.extend(["--layout", "chw", "--format", "stack"]);
    let stack = all_modes_agree(dir.path(), &input, "chw-stack", &opts);
    let bytes = read(&stack.join("images.npy"));
    let (_, shape, at) = npy_shape(&bytes);
    let all = manifest(&tree);
    assert_eq!(shape, vec![all.len(), 3, 12, 16]);
    let slice = 3 * 12 * 16 * 4;
    for (i, row) in all.iter().enumerate() {
        if row["status"] == "ok" {
            assert!(bytes[at + i * slice..][..slice] == to_chw(&hwc_body(row), 3));
        }
    }
    // webdataset: the member arrays are the chw tree's files.
    let mut opts = GEOMETRY.to_vec();
    opts.extend(["--layout", "chw", "--format", "webdataset"]);
    let wds = all_modes_agree(dir.path(), &input, "chw-wds", &opts);
    let mut arrays = Vec::new();
    for s in files_under(&wds).iter().filter(|f| f.ends_with(".tar")) {
        let mut archive = tar::Archive::new(std::fs::File::open(wds.join(s)).unwrap());
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            if name.ends_with(".npy") {
                arrays.push(data);
            } else if name.ends_with(".json") {
                let meta: Value = serde_json::from_slice(&data).unwrap();
                assert_eq!(meta["shape"], serde_json::json!([3, 12, 16]));
            }
        }
    }
    assert_eq!(arrays.len(), ok.len());
    for (row, a) in ok.iter().zip(&arrays) {
        assert!(
            a == &read(&npy.join(row["output"].as_str().unwrap())),
            "{row}"
        );
    }
}
