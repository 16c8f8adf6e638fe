//! End-to-end test of `imgnorm bench` on a tiny generated dataset: checks the
//! shape of results.json, one table row per configuration, and that the
//! charts are a decodable PNG and an SVG document. Says nothing about speed.
use std::path::Path;
use std::process::Command;

use crate::helpers::bin;

fn imgnorm() -> Command {
    Command::new(bin())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn bench_end_to_end_on_a_tiny_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("bench");
    let done = imgnorm()
        .args([
            "bench",
            "--count",
            "12",
            "--size",
            "64x48",
            "--workers",
            "1,2",
            "--repeat",
            "1",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run imgnorm bench");
    assert!(
        done.status.success(),
        "imgnorm bench failed: {}",
        String::from_utf8_lossy(&done.stderr)
    );

    let v: serde_json::Value =
        serde_json::from_str(&read(&out.join("results.json"))).expect("results.json is JSON");
    for key in [
        "machine",
        "dataset",
        "git_commit",
        "imgnorm_version",
        "command_line",
    ] {
        assert!(v.get(key).is_some(), "results.json lacks {key}");
    }
    assert!(v["machine"]["cores_available"].as_u64().unwrap_or(0) >= 1);
    assert_eq!(v["dataset"]["files"], 12);
    let runs = v["runs"].as_array().expect("runs");
    // centralized, w=1, w=2; one round (Python is not requested).
    assert_eq!(runs.len(), 3);
    for r in runs {
        assert_eq!(r["images"], 12, "{r}");
        assert_eq!(r["failed"], 0, "{r}");
        assert_eq!(r["threads_per_worker"], 1);
        assert!(r["seconds"].as_f64().is_some_and(|s| s >= 0.0));
        assert!(r["speedup"].as_f64().is_some() && r["efficiency"].as_f64().is_some());
        assert!(r["peak_rss"]["main_mb"].as_f64().is_some_and(|m| m > 0.0));
    }
    let modes: Vec<(String, u64)> = v["summary"]
        .as_array()
        .expect("summary")
        .iter()
        .map(|s| {
            for k in ["median_s", "min_s", "max_s", "speedup", "efficiency"] {
                assert!(s[k].as_f64().is_some(), "summary lacks {k}: {s}");
            }
            (
                s["mode"].as_str().unwrap_or_default().to_string(),
                s["workers"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        modes,
        [
            ("centralized".to_string(), 1),
            ("distributed".to_string(), 1),
            ("distributed".to_string(), 2)
        ]
    );

    let md = read(&out.join("results.md"));
    assert!(md.contains("| Mode | # of Workers | Dataset Size | Time (seconds) |"));
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Mode"))
        .collect();
    assert_eq!(rows.len(), 3, "{md}");
    assert!(rows[0].starts_with("| Centralized"));
    assert!(rows[1].starts_with("| Distributed") && rows[1].contains("| 1 | 12 |"));
    assert!(rows[2].starts_with("| Distributed") && rows[2].contains("| 2 | 12 |"));
    assert!(md.contains("usable cores"));

    for name in ["time_vs_workers", "speedup_vs_workers"] {
        let png = image::open(out.join(format!("{name}.png"))).expect("chart PNG decodes");
        assert!(png.width() > 100 && png.height() > 100);
        let svg = read(&out.join(format!("{name}.svg")));
        assert!(svg.trim_start().starts_with("<svg") && svg.contains("</svg>"));
    }

    // A second bench reuses the cached dataset; with --autoscale it adds an
    // autoscaled run next to the fixed pool of the same maximum.
    let again = imgnorm()
        .args([
            "bench",
            "--count",
            "12",
            "--size",
            "64x48",
            "--workers",
            "2",
            "--repeat",
            "1",
            "--autoscale",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run imgnorm bench again");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("reusing dataset"));
    let v: serde_json::Value =
        serde_json::from_str(&read(&out.join("results.json"))).expect("results.json is JSON");
    let summary = v["summary"].as_array().expect("summary");
    let auto = summary
        .iter()
        .find(|s| s["mode"] == "autoscale")
        .unwrap_or_else(|| panic!("no autoscale row: {v}"));
    assert_eq!(auto["workers"], 2);
    let ws = auto["median_worker_seconds"].as_f64().unwrap_or(0.0);
    assert!(ws > 0.0, "{auto}");
    let md = read(&out.join("results.md"));
    assert!(
        md.contains("Autoscaling vs a fixed pool of 2 workers"),
        "{md}"
    );
}

/// `--peers opencv`: the OpenCV script and its pool run next to imgnorm,
/// interleaved, and results.md compares them (rows only: no speed claim).
/// Needs python3 with cv2 and numpy (scripts/py-deps.sh).
#[test]
fn bench_peers_compares_with_the_opencv_script_and_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("bench");
    let scratch = dir.path().join("scratch");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let done = imgnorm()
        .args([
            "bench",
            "--count",
            "6",
            "--size",
            "40x32",
            "--workers",
            "2",
            "--repeat",
            "2",
            "--peers",
            "opencv",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--scratch")
        .arg(&scratch)
        .current_dir(&root)
        .output()
        .expect("run imgnorm bench --peers");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "imgnorm bench failed: {stderr}");
    assert!(
        !stderr.contains("skipping peer opencv"),
        "python3 with cv2 and numpy is needed (scripts/py-deps.sh): {stderr}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&read(&out.join("results.json"))).expect("results.json is JSON");
    let peers = v["peers"].as_array().expect("peers");
    let pairs: Vec<(&str, &str)> = peers
        .iter()
        .map(|p| {
            (
                p["imgnorm"].as_str().unwrap_or(""),
                p["peer"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(pairs, [("centralized", "python"), ("run-w2", "python-p2")]);
    for p in peers {
        assert_eq!(p["pairs"], 2, "{p}");
        for k in ["wall_ratio", "cpu_ratio", "imgnorm_cpu_ms_per_image"] {
            assert!(p[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {p}");
        }
    }
    let md = read(&out.join("results.md"));
    assert!(md.contains("imgnorm against its peers"), "{md}");
    assert!(md.contains("| centralized | python |"), "{md}");
    assert!(md.contains("| run-w2 | python-p2 |"), "{md}");
    assert!(md.contains("the master process used"), "{md}");
    // Every run's output went to --scratch and was removed after it.
    let left = std::fs::read_dir(&scratch).map_or(0, |d| d.count());
    assert_eq!(left, 0, "outputs left in --scratch");
}
