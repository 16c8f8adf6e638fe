//! The dashboard router without a network (tower's `oneshot`): API shapes,
//! authentication, uploads (archives, traversal names, links, limits, empty
//! and non-archive bodies), job start/cancel, streamed downloads and the
//! event stream.
use std::io::{Cursor, Write};
use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use imgnorm::http::{self, AppState, HttpConfig, UploadLimits};
use imgnorm::master::{Master, MasterConfig};
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "test-token-0123456789";
const BOUNDARY: &str = "----imgnormTestBoundary";

struct Dash {
    router: Router,
    master: Master,
    data: tempfile::TempDir,
}

fn dash_with(limits: UploadLimits) -> Dash {
    let data = super::helpers::tempdir();
    let master = Master::new(MasterConfig::default()).expect("master");
    let state = AppState::new(
        master.clone(),
        HttpConfig {
            data_dir: data.path().to_path_buf(),
            token: TOKEN.into(),
            limits,
        },
    )
    .expect("state");
    Dash {
        router: http::router(state),
        master,
        data,
    }
}

fn dash() -> Dash {
    dash_with(UploadLimits::default())
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 7]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        z.start_file(*name, opts).expect("entry");
        z.write_all(data).expect("write");
    }
    z.finish().expect("finish").into_inner()
}

/// A tar archive with raw entry names (the `tar` crate's own setters refuse
/// `..`, which is exactly what we need to send).
fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if *kind == tar::EntryType::Symlink {
            h.set_link_name("/etc/passwd").expect("link");
        }
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

fn multipart(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, data) in files {
        write!(
            body,
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .expect("write");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{BOUNDARY}--\r\n").expect("write");
    body
}

async fn send(r: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = r.clone().oneshot(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    (parts.status, parts.headers, bytes.to_vec())
}

fn authed(method: &str, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
}

async fn get_json(r: &Router, uri: &str) -> (StatusCode, Value) {
    let (s, _, b) = send(r, authed("GET", uri).body(Body::empty()).unwrap()).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn upload(r: &Router, name: &str, files: &[(&str, &[u8])]) -> (StatusCode, Value) {
    let req = authed("POST", &format!("/api/v1/datasets?name={name}"))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(multipart(files)))
        .unwrap();
    let (s, _, b) = send(r, req).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn error_of(v: &Value) -> String {
    v["error"].as_str().unwrap_or_default().to_string()
}

/// Every path under `root`, relative, sorted (to prove nothing was left).
fn tree(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.path().strip_prefix(root).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn every_route_but_login_and_assets_needs_the_token() {
    let d = dash();
    for uri in [
        "/api/v1/overview",
        "/api/v1/jobs",
        "/api/v1/jobs/job-1",
        "/api/v1/workers",
        "/api/v1/datasets",
        "/api/v1/events",
        "/api/v1/jobs/job-1/archive",
        "/metrics",
    ] {
        let req = Request::get(uri).body(Body::empty()).unwrap();
        let (s, _, b) = send(&d.router, req).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
        let v: Value = serde_json::from_slice(&b).expect("json error");
        assert!(error_of(&v).contains("authentication required"), "{v}");
        // A wrong token is no better.
        let req = Request::get(uri)
            .header(header::AUTHORIZATION, "Bearer wrong-token-0123456789")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&d.router, req).await.0, StatusCode::UNAUTHORIZED);
    }
    for uri in ["/", "/workers", "/new", "/jobs/job-1"] {
        let (s, h, _) = send(&d.router, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert!(s.is_redirection(), "{uri}: {s}");
        assert_eq!(h[header::LOCATION], "/login");
    }
    let (s, _, b) = send(
        &d.router,
        Request::get("/login").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(String::from_utf8_lossy(&b).contains("name=\"token\""));
    let (s, _, _) = send(
        &d.router,
        Request::get("/assets/app.js").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let upload = Request::post("/api/v1/datasets?name=x")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(multipart(&[("a.png", &png(2, 2))])))
        .unwrap();
    assert_eq!(send(&d.router, upload).await.0, StatusCode::UNAUTHORIZED);
    assert!(tree(&d.data.path().join("datasets")).is_empty());
}

#[tokio::test]
async fn login_sets_an_http_only_cookie_that_the_api_accepts() {
    let d = dash();
    let form = |t: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={t}")))
            .unwrap()
    };
    let (s, h, b) = send(&d.router, form("nope")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.get(header::SET_COOKIE).is_none());
    assert!(String::from_utf8_lossy(&b).contains("Wrong token"));
    let (s, h, _) = send(&d.router, form(TOKEN)).await;
    assert!(s.is_redirection());
    let cookie = h[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let req = Request::get("/api/v1/jobs")
        .header(header::COOKIE, &pair)
        .body(Body::empty())
        .unwrap();
    let (s, _, b) = send(&d.router, req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap(),
        serde_json::json!([])
    );
    let req = Request::get("/")
        .header(header::COOKIE, &pair)
        .body(Body::empty())
        .unwrap();
    let (s, _, b) = send(&d.router, req).await;
    assert_eq!(s, StatusCode::OK);
    assert!(String::from_utf8_lossy(&b).contains("data-page=\"jobs\""));
}

#[tokio::test]
async fn a_zip_upload_keeps_only_images_and_becomes_a_dataset() {
    let d = dash();
    let (a, b) = (png(4, 3), png(5, 2));
    let archive = zip_of(&[
        ("cats/a.png", &a),
        ("dogs/b.png", &b),
        ("README.txt", b"not an image"),
        ("dogs/fake.png", b"text pretending to be a png"),
    ]);
    let (s, v) = upload(
        &d.router,
        "pets",
        &[("pets.zip", &archive), ("c.png", &png(2, 2))],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["images"], 3);
    assert_eq!(v["skipped_total"], 2);
    let root = d.data.path().join("datasets");
    assert_eq!(
        tree(&root),
        [
            "pets",
            "pets/c.png",
            "pets/cats",
            "pets/cats/a.png",
            "pets/dogs",
            "pets/dogs/b.png"
        ]
    );
    assert_eq!(std::fs::read(root.join("pets/cats/a.png")).unwrap(), a);
    let (s, list) = get_json(&d.router, "/api/v1/datasets").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list[0]["name"], "pets");
    assert_eq!(list[0]["files"], 3);
    // The name is taken now.
    let (s, v) = upload(&d.router, "pets", &[("c.png", &png(2, 2))]).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(error_of(&v).contains("already exists"));
    // A tar works too.
    let t = tar_of(&[("x/y.png", tar::EntryType::Regular, &a)]);
    let (s, v) = upload(&d.router, "from-tar", &[("d.tar", &t)]).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(std::fs::read(root.join("from-tar/x/y.png")).unwrap(), a);
}

#[tokio::test]
async fn dangerous_or_malformed_uploads_are_refused_and_leave_nothing() {
    let d = dash_with(UploadLimits {
        max_total: 1 << 20,
        max_files: 4,
        max_file: 64 << 10,
    });
    let img = png(3, 3);
    let big = vec![0x89u8; 100 << 10];
    // (dataset name, uploaded files, expected status, expected message part)
    type Case<'a> = (&'a str, Vec<(&'a str, Vec<u8>)>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "zip-dotdot",
            vec![("a.zip", zip_of(&[("../evil.png", &img)]))],
            StatusCode::BAD_REQUEST,
            "'..'",
        ),
        (
            "zip-nested-dotdot",
            vec![("a.zip", zip_of(&[("ok/../../evil.png", &img)]))],
            StatusCode::BAD_REQUEST,
            "'..'",
        ),
        (
            "zip-absolute",
            vec![("a.zip", zip_of(&[("/tmp/evil.png", &img)]))],
            StatusCode::BAD_REQUEST,
            "absolute",
        ),
        (
            "tar-dotdot",
            vec![(
                "a.tar",
                tar_of(&[("../evil.png", tar::EntryType::Regular, &img)]),
            )],
            StatusCode::BAD_REQUEST,
            "'..'",
        ),
        (
            "tar-absolute",
            vec![(
                "a.tar",
                tar_of(&[("/evil.png", tar::EntryType::Regular, &img)]),
            )],
            StatusCode::BAD_REQUEST,
            "absolute",
        ),
        (
            "tar-symlink",
            vec![(
                "a.tar",
                tar_of(&[("link.png", tar::EntryType::Symlink, b"")]),
            )],
            StatusCode::BAD_REQUEST,
            "not allowed",
        ),
        (
            "tar-device",
            vec![("a.tar", tar_of(&[("dev.png", tar::EntryType::Char, b"")]))],
            StatusCode::BAD_REQUEST,
            "not allowed",
        ),
        (
            "file-dotdot",
            vec![("../evil.png", img.clone())],
            StatusCode::BAD_REQUEST,
            "'..'",
        ),
        (
            "not-a-zip",
            vec![("photos.zip", b"this is not a zip at all".to_vec())],
            StatusCode::BAD_REQUEST,
            "not a valid zip",
        ),
        (
            "not-a-tar",
            vec![("photos.tar", b"this is not a tar".to_vec())],
            StatusCode::BAD_REQUEST,
            "not a valid tar",
        ),
        (
            "tgz",
            vec![("photos.tar.gz", b"\x1f\x8b".to_vec())],
            StatusCode::BAD_REQUEST,
            "not supported",
        ),
        (
            "oversize-file",
            vec![("big.png", big.clone())],
            StatusCode::PAYLOAD_TOO_LARGE,
            "per-file limit",
        ),
        (
            "oversize-entry",
            vec![(
                "a.zip",
                zip_of(&[("big.png", &{
                    let mut b = img.clone();
                    b.extend(vec![0u8; 100 << 10]);
                    b
                })]),
            )],
            StatusCode::PAYLOAD_TOO_LARGE,
            "per-file limit",
        ),
        (
            "too-many",
            vec![(
                "a.zip",
                zip_of(&[
                    ("1.png", &img),
                    ("2.png", &img),
                    ("3.png", &img),
                    ("4.png", &img),
                    ("5.png", &img),
                ]),
            )],
            StatusCode::PAYLOAD_TOO_LARGE,
            "too many files",
        ),
        (
            "no-images",
            vec![("notes.txt", b"hello".to_vec())],
            StatusCode::BAD_REQUEST,
            "no images",
        ),
        ("empty", vec![], StatusCode::BAD_REQUEST, "empty upload"),
    ];
    for (name, files, want, says) in cases {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        let (s, v) = upload(&d.router, name, &files).await;
        assert_eq!(s, want, "{name}: {v}");
        assert!(error_of(&v).contains(says), "{name}: {v}");
    }
    // Over the total limit: the body itself is refused.
    let huge = vec![1u8; 2 << 20];
    let (s, v) = upload(&d.router, "huge", &[("huge.zip", &huge)]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(error_of(&v).contains("limit"), "{v}");
    // No name at all.
    let req = authed("POST", "/api/v1/datasets")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(multipart(&[("a.png", &img)])))
        .unwrap();
    let (s, _, b) = send(&d.router, req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&serde_json::from_slice(&b).unwrap()).contains("name"));
    // Bad dataset names.
    for bad in ["..", ".hidden", "a%2Fb"] {
        let (s, _) = upload(&d.router, bad, &[("a.png", &img)]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Nothing was created anywhere: no dataset, no staging folder, nothing
    // outside the data directory.
    assert_eq!(tree(d.data.path()), ["datasets", "jobs"]);
    assert!(!d.data.path().parent().unwrap().join("evil.png").exists());
}

#[tokio::test]
async fn jobs_start_show_cancel_and_download() {
    let d = dash();
    let (s, v) = upload(
        &d.router,
        "set",
        &[("a.png", &png(2, 2)), ("b.png", &png(3, 1))],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let start = |body: &str| {
        authed("POST", "/api/v1/jobs")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    for (body, want, says) in [
        (r#"{"dataset":"nope"}"#, StatusCode::NOT_FOUND, "no dataset"),
        (
            r#"{"dataset":"../etc"}"#,
            StatusCode::BAD_REQUEST,
            "invalid dataset name",
        ),
        (
            r#"{"dataset":"set","dtype":"f64"}"#,
            StatusCode::BAD_REQUEST,
            "dtype must be one of",
        ),
        (
            r#"{"dataset":"set","dtype":"u8","range":[0,300]}"#,
            StatusCode::BAD_REQUEST,
            "range",
        ),
        (
            r#"{"dataset":"set","bogus":1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (r#"not json"#, StatusCode::BAD_REQUEST, "invalid JSON"),
    ] {
        let (s, _, b) = send(&d.router, start(body)).await;
        assert_eq!(s, want, "{body}: {}", String::from_utf8_lossy(&b));
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert!(error_of(&v).contains(says), "{v}");
    }
    let (s, _, b) = send(
        &d.router,
        start(r#"{"dataset":"set","scope":"channel","dtype":"u8"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["id"], "job-1");
    assert_eq!(v["images"], 2);

    let (s, jobs) = get_json(&d.router, "/api/v1/jobs").await;
    assert_eq!(s, StatusCode::OK);
    let j = &jobs[0];
    for key in [
        "id",
        "state",
        "total",
        "done",
        "percent",
        "images_per_s",
        "elapsed_s",
        "eta_s",
        "failed",
        "dataset",
        "downloadable",
    ] {
        assert!(j.get(key).is_some(), "jobs[0] lacks {key}: {j}");
    }
    assert_eq!(j["dataset"], "set");
    assert_eq!(j["state"], "running");
    let (s, job) = get_json(&d.router, "/api/v1/jobs/job-1").await;
    assert_eq!(s, StatusCode::OK);
    for key in [
        "samples",
        "workers",
        "failures",
        "failures_total",
        "options",
        "stats",
    ] {
        assert!(job.get(key).is_some(), "job lacks {key}: {job}");
    }
    assert_eq!(job["options"]["dtype"], "u8");
    let (s, v) = get_json(&d.router, "/api/v1/jobs/job-9").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    // The archive streams the output folder; links are never followed.
    let out = d.data.path().join("jobs/set-1");
    std::fs::write(out.join("manifest.jsonl"), b"{\"path\":\"a.png\"}\n").unwrap();
    std::fs::create_dir(out.join("sub")).unwrap();
    std::fs::write(out.join("sub/x.npy"), vec![7u8; 300_000]).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", out.join("leak")).unwrap();
    let (s, h, b) = send(
        &d.router,
        authed("GET", "/api/v1/jobs/job-1/archive")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "application/x-tar");
    let mut ar = tar::Archive::new(Cursor::new(b));
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        names.push(e.path().unwrap().display().to_string());
        if names.last().unwrap().ends_with("x.npy") {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            assert_eq!(data, vec![7u8; 300_000]);
        }
    }
    assert_eq!(names, ["job-1/manifest.jsonl", "job-1/sub/x.npy"]);
    let (s, _, b) = send(
        &d.router,
        authed("GET", "/api/v1/jobs/job-1/manifest")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, b"{\"path\":\"a.png\"}\n");

    let cancel = || {
        authed("POST", "/api/v1/jobs/job-1/cancel")
            .body(Body::empty())
            .unwrap()
    };
    let (s, _, _) = send(&d.router, cancel()).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, b) = send(&d.router, cancel()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{}", String::from_utf8_lossy(&b));
    let (_, job) = get_json(&d.router, "/api/v1/jobs/job-1").await;
    assert_eq!(job["state"], "cancelled");
}

#[tokio::test]
async fn outputs_outside_the_data_directory_are_never_served() {
    let d = dash();
    let elsewhere = super::helpers::tempdir();
    let input = elsewhere.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.png"), png(2, 2)).unwrap();
    let (id, _) = d
        .master
        .submit(
            input,
            None,
            elsewhere.path().join("out"),
            imgnorm::wire::Transfer::Shared,
            Default::default(),
        )
        .await
        .expect("submit");
    std::fs::write(elsewhere.path().join("out/manifest.jsonl"), b"secret").unwrap();
    for what in ["archive", "manifest"] {
        let uri = format!("/api/v1/jobs/{}/{what}", id.0);
        let (s, _, b) = send(&d.router, authed("GET", &uri).body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{what}");
        assert!(!String::from_utf8_lossy(&b).contains("secret"));
    }
    let (_, jobs) = get_json(&d.router, "/api/v1/jobs").await;
    assert_eq!(jobs[0]["downloadable"], false);
    assert_eq!(jobs[0]["dataset"], Value::Null);
}

#[tokio::test]
async fn the_event_stream_starts_with_a_full_snapshot() {
    let d = dash();
    let (s, _) = upload(&d.router, "set", &[("a.png", &png(2, 2))]).await;
    assert_eq!(s, StatusCode::CREATED);
    let body = r#"{"dataset":"set"}"#;
    let req = authed("POST", "/api/v1/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(send(&d.router, req).await.0, StatusCode::CREATED);
    let resp = d
        .router
        .clone()
        .oneshot(
            authed("GET", "/api/v1/events?job=job-1")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut stream = resp.into_body().into_data_stream();
    let mut text = String::new();
    // One event, however the body is split into frames.
    while !text.contains("\n\n") {
        let frame = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio_stream::StreamExt::next(&mut stream),
        )
        .await
        .expect("an event within 10 s")
        .expect("stream open")
        .expect("frame");
        text.push_str(&String::from_utf8_lossy(&frame));
    }
    assert!(text.starts_with("event: snapshot\n"), "{text}");
    let data: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let v: Value = serde_json::from_str(&data).expect("snapshot json");
    assert_eq!(v["jobs"][0]["id"], "job-1");
    assert_eq!(v["job"]["id"], "job-1");
    assert!(v["workers"].is_array());
}

#[tokio::test]
async fn metrics_are_prometheus_text_behind_the_token() {
    let d = dash();
    let (s, h, b) = send(
        &d.router,
        authed("GET", "/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/plain; version=0.0.4"),
        "{h:?}"
    );
    let text = String::from_utf8_lossy(&b);
    for line in [
        "imgnorm_up 1",
        "imgnorm_queue_images 0",
        "imgnorm_workers{state=\"alive\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let _ = &d.master;
}
