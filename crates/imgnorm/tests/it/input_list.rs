//! `--input-list`: a job whose files are named in a list file instead of
//! found in a folder, with real processes in every mode that takes an input
//! (centralized, run, a serving master's submit): the list's order,
//! duplicates and comments do not matter, the manifest is the folder's, a
//! missing file is one failed row, and an entry outside the input root
//! refuses the job naming its line.
use std::path::Path;
use std::process::Command;

use crate::distributed::{Master, dataset};
use crate::helpers::{self, assert_same_dataset, bin, files_under, imgnorm, manifest};

/// Writes a list naming every file under `input`: shuffled (reversed), some
/// twice, some as absolute paths, with a comment, a blank line and CRLF
/// endings mixed in, plus `extra` entries.
fn list_for(input: &Path, list: &Path, extra: &[&str]) {
    let files = files_under(input);
    let mut text = String::from("# every file of the folder, reversed\n\n");
    for (i, f) in files.iter().rev().enumerate() {
        match i % 3 {
            0 => text.push_str(&format!("{}/{f}\n", input.display())),
            1 => text.push_str(&format!("./{f}\r\n")),
            _ => text.push_str(&format!("{f}\n{f}\n")),
        }
    }
    for e in extra {
        text.push_str(e);
        text.push('\n');
    }
    std::fs::write(list, text).expect("write list");
}

/// `rows` without the row of `path`.
fn without(rows: Vec<serde_json::Value>, path: &str) -> Vec<serde_json::Value> {
    rows.into_iter().filter(|r| r["path"] != path).collect()
}

#[test]
fn a_list_gives_the_folders_dataset_in_every_mode_and_a_missing_file_is_one_failed_row() {
    let dir = helpers::tempdir();
    let input = dataset(dir.path(), 12);
    let folder = dir.path().join("folder");
    let r = helpers::centralized(&input, &folder, &[]);
    assert_eq!(r.code, 3, "fixtures include failures\n{r}");
    let list = dir.path().join("list.txt");
    list_for(&input, &list, &["gone/missing.png"]);
    let inp = input.to_str().expect("utf-8 path");
    let lst = list.to_str().expect("utf-8 path");

    let central = dir.path().join("c");
    let c = helpers::imgnorm([
        "centralized",
        "--quiet",
        "--input",
        inp,
        "--input-list",
        lst,
        "--output",
        central.to_str().expect("utf-8"),
    ]);
    assert_eq!(c.code, 3, "{c}");
    let rows = manifest(&central);
    let gone: Vec<_> = rows
        .iter()
        .filter(|r| r["path"] == "gone/missing.png")
        .collect();
    assert_eq!(gone.len(), 1, "one row for the missing file");
    assert_eq!(gone[0]["status"], "failed", "{}", gone[0]);
    assert_eq!(
        without(rows, "gone/missing.png"),
        manifest(&folder),
        "the list names the folder's files: the folder's rows"
    );
    assert_eq!(c.summary()["images"], manifest(&folder).len() + 1);

    // The list in the input folder, without --input: entries are relative
    // to the list's folder.
    let inner = input.join("files.lst");
    list_for(&input, &inner, &["gone/missing.png"]);
    let run = dir.path().join("r");
    let r = helpers::imgnorm([
        "run",
        "--quiet",
        "--workers",
        "2",
        "--batch-size",
        "4",
        "--input-list",
        inner.to_str().expect("utf-8"),
        "--output",
        run.to_str().expect("utf-8"),
    ]);
    assert_eq!(r.code, 3, "{r}");
    assert_same_dataset(&central, &run);

    // A serving master reads the list as it sees it.
    let master = Master::serve(dir.path());
    let _w = master.worker("w1", 0);
    let sub = dir.path().join("s");
    let s = helpers::imgnorm([
        "submit",
        "--master",
        master.url(),
        "--input",
        inp,
        "--input-list",
        lst,
        "--output",
        sub.to_str().expect("utf-8"),
        "--wait",
    ]);
    assert_eq!(s.code, 3, "{s}");
    assert_same_dataset(&central, &sub);
}

#[test]
fn an_entry_outside_the_input_root_refuses_the_job_naming_its_line() {
    let dir = helpers::tempdir();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).expect("mkdir");
    std::fs::write(input.join("a.png"), b"not really").expect("write");
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "a.png\n../secret.png\n").expect("write list");
    for mode in ["centralized", "run"] {
        let out = dir.path().join(format!("out-{mode}"));
        let r = Command::new(bin())
            .args([mode, "--quiet", "--input"])
            .arg(&input)
            .arg("--input-list")
            .arg(&list)
            .arg("--output")
            .arg(&out)
            .env("IMGNORM_LOG", "warn")
            .output()
            .expect("spawn");
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{mode}: usage error: {err}");
        assert!(
            err.contains("line 2") && err.contains("../secret.png"),
            "{mode}: the error names the line and the entry: {err}"
        );
        assert!(
            !out.join("manifest.jsonl").exists(),
            "{mode}: nothing written"
        );
    }
    // A missing list is an error too, not an empty job.
    let r = imgnorm([
        "centralized",
        "--quiet",
        "--input-list",
        "/nonexistent/list.txt",
        "--output",
        dir.path().join("o").to_str().expect("utf-8"),
    ]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("/nonexistent/list.txt"), "{r}");
}
