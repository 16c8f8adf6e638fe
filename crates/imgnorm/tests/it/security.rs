//! Transport security with real processes on loopback: workers without the
//! secret or with a wrong one are refused and exit (while a worker with it
//! finishes the job), TLS end to end with a generated self-signed
//! certificate (gRPC, `submit`, `status`, `health` and the dashboard), a
//! worker trusting another certificate fails clearly, and plain text off
//! loopback is refused unless `--insecure`.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::distributed::{FAST, assert_once_each, dataset};
use crate::helpers::{self, assert_same_dataset, bin, poll_until};

const SECRET: &str = "it-secret-0123456789abcdef";
const TOKEN: &str = "it-dashboard-token-0123456789";

/// A child process whose stderr is collected; killed when dropped.
struct Spawned {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// Ends at the end of stderr, that is when the process has exited.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Spawned {
    /// Starts `imgnorm args...` with IMGNORM_SECRET set to `secret` (or
    /// removed) and the given extra environment.
    fn start(args: &[&str], secret: Option<&str>) -> Spawned {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("IMGNORM_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("IMGNORM_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(s) = secret {
            cmd.env("IMGNORM_SECRET", s);
        }
        let mut child = cmd.spawn().expect("spawn imgnorm");
        let pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Spawned {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The rest of the first stderr line starting with `prefix`.
    fn line(&self, prefix: &str) -> String {
        let mut found = None;
        let ok = poll_until(Duration::from_secs(30), || {
            found = self
                .stderr()
                .lines()
                .find_map(|l| l.strip_prefix(prefix).map(|r| r.trim().to_string()));
            found.is_some()
        });
        assert!(ok, "no line {prefix:?} on stderr:\n{}", self.stderr());
        found.unwrap_or_default()
    }

    /// The exit code, waiting up to `timeout`; all of stderr is read then.
    fn exit_code(&mut self, timeout: Duration) -> i32 {
        let mut code = None;
        let ok = poll_until(timeout, || match self.child.try_wait() {
            Ok(Some(st)) => {
                code = Some(st.code().unwrap_or(-1));
                true
            }
            _ => false,
        });
        assert!(ok, "still running after {timeout:?}:\n{}", self.stderr());
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        code.unwrap_or(-1)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_secret(dir: &Path) -> String {
    let f = dir.join("secret");
    std::fs::write(&f, format!("{SECRET}\n")).expect("write secret");
    f.display().to_string()
}

#[test]
fn workers_without_or_with_a_wrong_secret_are_refused_and_exit() {
    let dir = helpers::tempdir();
    let input = dataset(dir.path(), 24);
    let (c, out) = (dir.path().join("c"), dir.path().join("out"));
    let r = helpers::centralized(&input, &c, &[]);
    assert_eq!(r.code, 3, "{r}");
    let secret_file = write_secret(dir.path());
    let (i, o) = (input.display().to_string(), out.display().to_string());
    let mut args = vec![
        "master",
        "-q",
        "--listen",
        "127.0.0.1:0",
        "--input",
        &i,
        "--output",
        &o,
        "--secret-file",
        &secret_file,
    ];
    args.extend_from_slice(FAST);
    let mut master = Spawned::start(&args, None);
    let url = format!("http://{}", master.line("imgnorm master listening on "));

    for (secret, expected) in [
        (None, "the master refused this worker: missing secret"),
        (
            Some("not-the-secret-0123456789"),
            "the master refused this worker: wrong secret",
        ),
    ] {
        let mut w = Spawned::start(&["worker", "--master", &url, "--name", "intruder"], secret);
        let code = w.exit_code(Duration::from_secs(30));
        let err = w.stderr();
        assert_ne!(code, 0, "a refused worker exits with an error:\n{err}");
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
        if let Some(s) = secret {
            assert!(!err.contains(s), "the secret is never printed:\n{err}");
        }
    }
    // Clients need it too.
    let r = helpers::imgnorm(["status", "--master", &url]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("missing secret"), "{r}");

    let _good = Spawned::start(
        &["worker", "--master", &url, "--name", "good"],
        Some(SECRET),
    );
    assert_eq!(master.exit_code(Duration::from_secs(90)), 3);
    assert_same_dataset(&c, &out);
    assert_once_each(&out, &input);
    let log = master.stderr();
    assert!(!log.contains(SECRET), "the master never logs the secret");
    assert!(
        log.contains("refused a call without a secret")
            && log.contains("refused a call with a wrong secret"),
        "the master logs refusals:\n{log}"
    );
}

#[test]
fn tls_end_to_end_with_a_self_signed_certificate() {
    let dir = helpers::tempdir();
    let input = dataset(dir.path(), 20);
    let (c, out) = (dir.path().join("c"), dir.path().join("out"));
    let r = helpers::centralized(&input, &c, &[]);
    assert_eq!(r.code, 3, "{r}");
    let tls = dir.path().join("tls");
    let (tls_dir, data) = (
        tls.display().to_string(),
        dir.path().join("data").display().to_string(),
    );
    let secret_file = write_secret(dir.path());
    let mut master = Spawned::start(
        &[
            "master",
            "--serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--token",
            TOKEN,
            "--tls-self-signed",
            &tls_dir,
            "--tls-san",
            "imgnorm.test",
            "--secret-file",
            &secret_file,
        ],
        None,
    );
    let addr = master.line("imgnorm master listening on ");
    let dash = master.line("imgnorm dashboard listening on ");
    assert!(dash.starts_with("https://"), "{dash}");
    let cert = tls.join("cert.pem");
    let ca = cert.display().to_string();
    let names = std::fs::read_to_string(tls.join("names.txt")).expect("names.txt");
    assert!(names.lines().any(|n| n == "imgnorm.test"), "{names}");
    let url = format!("https://{addr}");

    // The health probe answers over TLS, without the secret.
    let r = helpers::imgnorm(["health", "--master", &url, "--tls-ca", &ca]);
    assert_eq!((r.code, r.stdout.trim()), (0, "SERVING"), "{r}");

    // A worker trusting another certificate stops at once, saying why.
    let other = dir.path().join("other");
    imgnorm::security::ServerTls::self_signed(&other, &[]).expect("other cert");
    let other_ca = other.join("cert.pem").display().to_string();
    let mut w = Spawned::start(
        &["worker", "--master", &url, "--tls-ca", &other_ca],
        Some(SECRET),
    );
    assert_ne!(w.exit_code(Duration::from_secs(30)), 0);
    let err = w.stderr();
    assert!(
        err.contains("certificate is not trusted") && err.contains("--tls-ca"),
        "{err}"
    );
    // Plain text to a TLS master is no way around it either.
    let r = helpers::imgnorm([
        "status",
        "--master",
        &format!("http://{addr}"),
        "--secret",
        SECRET,
    ]);
    assert_eq!(r.code, 2, "{r}");

    let _w = Spawned::start(
        &[
            "worker",
            "--master",
            &url,
            "--tls-ca",
            &ca,
            "--name",
            "tls-worker",
        ],
        Some(SECRET),
    );
    let (i, o) = (input.display().to_string(), out.display().to_string());
    let submit = Command::new(bin())
        .args(["submit", "--wait", "--master", &url, "--tls-ca", &ca])
        .args(["--input", &i, "--output", &o])
        .env("IMGNORM_SECRET", SECRET)
        .output()
        .expect("submit");
    assert_eq!(
        submit.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    assert_same_dataset(&c, &out);
    assert_once_each(&out, &input);
    let r = helpers::imgnorm([
        "status", "--json", "--master", &url, "--tls-ca", &ca, "--secret", SECRET,
    ]);
    assert_eq!(r.code, 0, "{r}");
    let s: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(s["workers"][0]["name"], "tls-worker", "{s}");

    // The dashboard answers over https with the same certificate.
    let pem = std::fs::read(&cert).expect("read cert");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (login, overview) = rt.block_on(async {
        imgnorm::storage::install_crypto_provider();
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("pem")])
            .build()
            .expect("client");
        let login = client
            .get(format!("{dash}/login"))
            .send()
            .await
            .expect("GET /login over https");
        let overview = client
            .get(format!("{dash}/api/v1/overview"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET /api/v1/overview over https");
        (
            login.status().as_u16(),
            serde_json::from_str::<serde_json::Value>(&overview.text().await.expect("body"))
                .expect("json"),
        )
    });
    assert_eq!(login, 200);
    assert!(overview.is_object(), "{overview}");

    // SIGTERM still stops the master (and its TLS dashboard) promptly.
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(master.child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(master.exit_code(Duration::from_secs(15)), 0);
    assert!(!master.stderr().contains(SECRET));
}

#[test]
fn plain_text_off_loopback_needs_insecure() {
    let dir = helpers::tempdir();
    let secret_file = write_secret(dir.path());
    let tls = dir.path().join("tls").display().to_string();
    let serve = |extra: &[&str]| {
        let mut args = vec!["master", "--serve"];
        args.extend_from_slice(extra);
        helpers::imgnorm(args)
    };
    let r = serve(&["--listen", "0.0.0.0:0"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr
            .contains("refusing to serve gRPC unencrypted on 0.0.0.0:")
            && r.stderr.contains("--insecure"),
        "{r}"
    );
    assert!(!r.stderr.contains("listening on"), "{r}");
    let r = serve(&["--listen", "0.0.0.0:0", "--tls-self-signed", &tls]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("without a shared secret"), "{r}");
    let r = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--http",
        "0.0.0.0:0",
        "--token",
        TOKEN,
        "--data-dir",
        &dir.path().join("data").display().to_string(),
    ]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr
            .contains("refusing to serve the dashboard unencrypted"),
        "{r}"
    );
    // With TLS and a secret it starts; with --insecure it starts plain.
    for extra in [
        vec!["--tls-self-signed", &tls, "--secret-file", &secret_file],
        vec!["--insecure"],
    ] {
        let mut args = vec!["master", "--serve", "--listen", "0.0.0.0:0"];
        args.extend(extra);
        let m = Spawned::start(&args, None);
        m.line("imgnorm master listening on 0.0.0.0:");
    }
    // Clients: plain http:// to a host that is not loopback is refused
    // before any connection (the address below is never dialled).
    for args in [
        vec!["worker", "--master", "http://192.0.2.1:50051"],
        vec!["status", "--master", "http://192.0.2.1:50051"],
    ] {
        let r = helpers::imgnorm(&args);
        assert_eq!(r.code, 2, "{r}");
        assert!(
            r.stderr
                .contains("refusing to connect to http://192.0.2.1:50051 unencrypted"),
            "{r}"
        );
    }
    let r = helpers::imgnorm([
        "worker",
        "--master",
        "http://127.0.0.1:1",
        "--tls-ca",
        "x.pem",
    ]);
    assert!(r.stderr.contains("--tls-ca is for https://"), "{r}");
}
