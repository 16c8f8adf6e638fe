//! Output names at the file system's limits, in every mode: an input name
//! whose `.npy` output fits is written the same everywhere whatever its
//! length (the temporary name must not push it over), one whose output
//! cannot fit is one identical failed row in centralized, shared and stream
//! mode (no worker is disconnected for it), and failure reasons never hold
//! the output root as it was typed.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::helpers::{self, assert_same_dataset, bin, files_under, rows_by_path, run_local};

/// Lengths, in bytes, of the last component of the input names: the output
/// adds `.npy`, so up to 251 fits the 255-byte limit and 252 and more do not.
const LENGTHS: [usize; 6] = [200, 224, 240, 251, 252, 255];

/// An input folder with one small PNG per length in [`LENGTHS`] (half of
/// them in a subfolder), plus an ordinary name.
fn long_names(dir: &Path) -> PathBuf {
    let gen_dir = dir.join("gen");
    let st = Command::new(bin())
        .args(["gen", "--format", "png", "--size", "12x10", "--seed", "5"])
        .args(["--count", &(LENGTHS.len() + 1).to_string()])
        .arg("--out")
        .arg(&gen_dir)
        .stdout(Stdio::null())
        .status()
        .expect("run gen");
    assert!(st.success());
    let made = files_under(&gen_dir);
    assert_eq!(made.len(), LENGTHS.len() + 1, "{made:?}");
    let input = dir.join("input");
    std::fs::create_dir_all(input.join("sub")).expect("mkdir");
    for (i, f) in made.iter().enumerate() {
        let name = match LENGTHS.get(i) {
            Some(&n) => format!("{}{}.png", i, "n".repeat(n - 5)),
            None => "plain.png".to_string(),
        };
        let to = if i % 2 == 1 {
            input.join("sub").join(name)
        } else {
            input.join(name)
        };
        std::fs::rename(gen_dir.join(f), to).expect("move");
    }
    input
}

/// The last component of a manifest path.
fn base_len(path: &str) -> usize {
    path.rsplit('/').next().unwrap_or(path).len()
}

#[test]
fn long_names_give_the_same_rows_in_every_mode() {
    let dir = helpers::tempdir();
    let input = long_names(dir.path());
    let central = dir.path().join("c");
    let r = helpers::centralized(&input, &central, &[]);
    assert_eq!(r.code, 3, "the names over the limit fail: exit 3\n{r}");
    let rows = rows_by_path(&central);
    assert_eq!(rows.len(), LENGTHS.len() + 1);
    for (path, row) in &rows {
        let fits = base_len(path) + 4 <= 255;
        let status = row["status"].as_str().expect("status");
        if fits {
            assert_eq!(status, "ok", "{} bytes: {row}", base_len(path));
        } else {
            assert_eq!(status, "failed", "{} bytes: {row}", base_len(path));
            let reason = row["reason"].as_str().expect("reason");
            assert!(
                reason.contains("255") && reason.contains(&(base_len(path) + 4).to_string()),
                "the reason names the limit and the length: {reason}"
            );
        }
    }
    for (name, extra) in [
        ("shared", vec!["--workers", "2"]),
        ("stream", vec!["--workers", "2", "--transfer", "stream"]),
    ] {
        let out = dir.path().join(name);
        let r = run_local(&input, &out, &extra);
        assert_eq!(r.code, 3, "{name}\n{r}");
        assert_same_dataset(&central, &out);
        assert!(
            !r.stderr.contains("PERMISSION_DENIED") && !r.stderr.contains("unsafe"),
            "{name}: an honest worker was refused\n{r}"
        );
    }
}

#[test]
fn failure_reasons_do_not_hold_the_output_root() {
    let dir = helpers::tempdir();
    let input = long_names(dir.path());
    // An output that cannot be written: a folder already has its name.
    let blocked = |out: &Path| {
        std::fs::create_dir_all(out.join("plain.png.npy").join("x")).expect("mkdir");
    };
    let absolute = dir.path().join("abs");
    blocked(&absolute);
    let r = helpers::centralized(&input, &absolute, &[]);
    assert_eq!(r.code, 3, "{r}");
    let rows = rows_by_path(&absolute);
    let reason = rows["plain.png"]["reason"].as_str().expect("a reason");
    assert!(
        !reason.contains(&*dir.path().to_string_lossy()),
        "the reason holds the output root: {reason}"
    );
    assert!(
        reason.contains("plain.png.npy"),
        "the reason names the output: {reason}"
    );
    // The same job with the output typed relative to the working folder,
    // and through the master in both transfer modes: the same rows.
    let want = std::fs::read(absolute.join("manifest.jsonl")).expect("manifest");
    for (name, mode) in [
        ("rel", None),
        ("shared", Some("shared")),
        ("stream", Some("stream")),
    ] {
        let out = dir.path().join(name);
        blocked(&out);
        let mut cmd = Command::new(bin());
        match mode {
            None => cmd.arg("centralized"),
            Some(t) => cmd.args(["run", "--workers", "2", "--transfer", t]),
        };
        let st = cmd
            .args(["--quiet", "--input"])
            .arg(&input)
            .args(["--output", name])
            .current_dir(dir.path())
            .env("IMGNORM_LOG", "warn")
            .stdout(Stdio::null())
            .status()
            .expect("run imgnorm");
        assert_eq!(st.code(), Some(3), "{name}");
        let got = std::fs::read_to_string(out.join("manifest.jsonl")).expect("manifest");
        // In stream mode the master writes the file, and the row says so.
        let got = got.replace("master could not write the output: ", "");
        assert_eq!(
            got,
            String::from_utf8_lossy(&want),
            "{name}: the manifest differs"
        );
    }
}
