//! HTML of the dashboard: the login form (sets the HttpOnly cookie), and
//! small server-rendered page shells that `assets/app.js` fills from
//! `/api/v1` and keeps live with server-sent events. Assets are embedded in
//! the binary; nothing is fetched from elsewhere.
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{AppState, COOKIE};

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn shell(title: &str, nav: &str, page: &str, attrs: &str, body: &str) -> Html<String> {
    let link = |href: &str, key: &str, label: &str| {
        let cur = if key == nav {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{cur}>{label}</a>")
    };
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · imgnorm</title>
<link rel="stylesheet" href="/assets/app.css">
</head><body>
<header class="top"><a class="brand" href="/">imgnorm</a>
<nav>{jobs}{workers}{new}</nav>
<span id="live" class="live" title="live updates">offline</span>
<form method="post" action="/logout" class="logout"><button class="ghost">Log out</button></form>
</header>
<main id="app" data-page="{page}" {attrs}>{body}</main>
<script src="/assets/app.js"></script>
</body></html>"#,
        title = esc(title),
        jobs = link("/", "jobs", "Jobs"),
        workers = link("/workers", "workers", "Workers"),
        new = link("/new", "new", "New job"),
    ))
}

/// `GET /`: the jobs list.
pub async fn jobs_page() -> Html<String> {
    shell(
        "Jobs",
        "jobs",
        "jobs",
        "",
        r#"<h1>Jobs</h1><section id="jobs" class="card"><p class="muted">Loading…</p></section>"#,
    )
}

/// `GET /jobs/{id}`: one job, live.
pub async fn job_page(Path(id): Path<String>) -> Html<String> {
    shell(
        &id,
        "jobs",
        "job",
        &format!("data-job=\"{}\"", esc(&id)),
        &format!(
            r#"<h1>Job <span class="mono">{}</span> <span id="state" class="badge"></span></h1>
<section class="card"><div id="progress"></div><div id="numbers" class="numbers"></div><div id="actions" class="actions"></div></section>
<section class="card"><h2>Throughput</h2><div id="chart" class="chart"></div></section>
<section class="card"><h2>Workers</h2><div id="workers"></div></section>
<section class="card"><h2>Failures</h2><div id="failures"></div></section>
<section class="card" id="results-card" hidden><h2>Dataset statistics</h2><div id="stats"></div></section>"#,
            esc(&id)
        ),
    )
}

/// `GET /workers`: every worker seen.
pub async fn workers_page() -> Html<String> {
    shell(
        "Workers",
        "workers",
        "workers",
        "",
        r#"<h1>Workers</h1><section id="workers" class="card"><p class="muted">Loading…</p></section>"#,
    )
}

/// `GET /new`: upload a dataset, start a job.
pub async fn new_page() -> Html<String> {
    shell(
        "New job",
        "new",
        "new",
        "",
        r#"<h1>New job</h1>
<div class="grid2">
<section class="card"><h2>1. Upload a dataset</h2>
<form id="upload-form">
<label>Dataset name <input id="up-name" name="name" required pattern="[A-Za-z0-9_][A-Za-z0-9._\-]{0,63}" placeholder="e.g. cats-2026"></label>
<label>Images, or a .zip / .tar archive <input id="up-files" type="file" multiple accept="image/*,.zip,.tar"></label>
<button id="up-submit" type="submit">Upload</button>
<p id="up-msg" class="msg" role="status"></p>
</form></section>
<section class="card"><h2>2. Start a job</h2>
<form id="job-form">
<label>Dataset <select id="job-dataset" required></select></label>
<div class="row">
<label>Scope <select id="job-scope"><option value="image">image (like OpenCV)</option><option value="channel">per channel</option></select></label>
<label>Output type <select id="job-dtype"><option>f32</option><option>f16</option><option>u8</option><option>u16</option></select></label>
</div>
<div class="row">
<label>Channels <select id="job-channels"><option value="keep">as stored</option><option value="rgb">RGB</option><option value="gray">gray</option></select></label>
<label>Range <input id="job-range" placeholder="default (0,1 for floats)"></label>
</div>
<label>Output format <select id="job-format"><option value="npy">one .npy per image</option><option value="webdataset">webdataset shards</option><option value="stack">one stacked array</option></select></label>
<button id="job-submit" type="submit">Start job</button>
<p id="job-msg" class="msg" role="status"></p>
</form></section>
</div>"#,
    )
}

fn login_html(error: Option<&str>) -> Html<String> {
    let err = error
        .map(|e| format!("<p class=\"msg error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · imgnorm</title><link rel="stylesheet" href="/assets/app.css"></head>
<body class="login"><main><form method="post" action="/login" class="card">
<h1>imgnorm</h1><p class="muted">Enter the dashboard access token (<code>--token</code> or <code>IMGNORM_TOKEN</code>, or the one the master printed).</p>
{err}<label>Access token <input id="token" name="token" type="password" autocomplete="current-password" required autofocus></label>
<button id="login" type="submit">Log in</button></form></main></body></html>"#
    ))
}

/// `GET /login`.
pub async fn login_form() -> Html<String> {
    login_html(None)
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The access token.
    pub token: String,
}

/// `POST /login`: sets the HttpOnly cookie and goes to the jobs page.
pub async fn login(State(s): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let mut h = axum::http::HeaderMap::new();
    let bearer = format!("Bearer {}", f.token.trim());
    if let Ok(v) = bearer.parse() {
        h.insert(header::AUTHORIZATION, v);
    }
    if !super::authorized(&h, &s.config().token) {
        return (StatusCode::UNAUTHORIZED, login_html(Some("Wrong token."))).into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        f.token.trim()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// `POST /logout`: clears the cookie.
pub async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

/// `GET /assets/{file}`: the embedded stylesheet and script.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, ctype) = match file.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
