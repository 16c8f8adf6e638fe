//! Dashboard uploads against a real `master --serve --http` process: a zip
//! whose central directory lists 400 000 empty entries is refused (413)
//! without the master's peak memory (VmHWM) growing by more than a few MiB,
//! because the directory is checked while it is streamed, not parsed whole
//! first.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::{self, bin, poll_until};

const TOKEN: &str = "it-upload-token-0123456789abcdef";

/// A master with its dashboard; killed when dropped.
struct Served {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(data: &std::path::Path) -> (Served, String) {
        let mut child = Command::new(bin())
            .args(["master", "--serve", "--listen", "127.0.0.1:0"])
            .args(["--http", "127.0.0.1:0", "--token", TOKEN, "--data-dir"])
            .arg(data)
            .env("IMGNORM_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn master");
        let pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        let s = Served { child, stderr };
        let mut addr = None;
        let ok = poll_until(Duration::from_secs(60), || {
            let text = s.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone();
            addr = text.lines().find_map(|l| {
                l.strip_prefix("imgnorm dashboard listening on http://")
                    .map(|r| r.trim().trim_end_matches('/').to_string())
            });
            addr.is_some()
        });
        assert!(ok, "no dashboard address:\n{}", s.stderr.lock().unwrap());
        (s, addr.unwrap_or_default())
    }

    /// Peak resident memory so far, in KiB.
    fn vm_hwm_kib(&self) -> u64 {
        let st = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        st.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmHWM")
    }
}

/// A zip of `n` empty stored entries `eNNNNNN.png`, with ZIP64 end records
/// (more than 65 535 entries), built by hand: local headers, then the
/// central directory.
fn many_entry_zip(n: u32) -> Vec<u8> {
    let name = |i: u32| format!("e{i:07}.png");
    let mut z = Vec::with_capacity(n as usize * 100 + 200);
    let mut offsets = Vec::with_capacity(n as usize);
    for i in 0..n {
        offsets.push(z.len() as u32);
        let nm = name(i);
        z.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        z.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date
        z.extend_from_slice(&[0; 12]); // crc, sizes
        z.extend_from_slice(&(nm.len() as u16).to_le_bytes());
        z.extend_from_slice(&[0, 0]);
        z.extend_from_slice(nm.as_bytes());
    }
    let cd_start = z.len() as u64;
    for (i, off) in offsets.iter().enumerate() {
        let nm = name(i as u32);
        z.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        z.extend_from_slice(&[20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // made by unix, needed, flags, method, time, date
        z.extend_from_slice(&[0; 12]); // crc, sizes
        z.extend_from_slice(&(nm.len() as u16).to_le_bytes());
        z.extend_from_slice(&[0; 8]); // extra, comment, disk, internal
        z.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
        z.extend_from_slice(&off.to_le_bytes());
        z.extend_from_slice(nm.as_bytes());
    }
    let cd_size = z.len() as u64 - cd_start;
    let z64 = z.len() as u64;
    z.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
    z.extend_from_slice(&44u64.to_le_bytes());
    z.extend_from_slice(&[45, 3, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    z.extend_from_slice(&u64::from(n).to_le_bytes());
    z.extend_from_slice(&u64::from(n).to_le_bytes());
    z.extend_from_slice(&cd_size.to_le_bytes());
    z.extend_from_slice(&cd_start.to_le_bytes());
    z.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
    z.extend_from_slice(&0u32.to_le_bytes());
    z.extend_from_slice(&z64.to_le_bytes());
    z.extend_from_slice(&1u32.to_le_bytes());
    z.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    z.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    z.extend_from_slice(&[0xff; 8]);
    z.extend_from_slice(&[0, 0]);
    z
}

/// POSTs `zip` as the one file of a multipart upload; the status code and
/// the body.
fn post_zip(addr: &str, name: &str, zip: &[u8]) -> (u16, String) {
    let boundary = "imgnorm-it-boundary-7d1f";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}.zip\"\r\nContent-Type: application/zip\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let len = head.len() + zip.len() + tail.len();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).ok();
    write!(
        s,
        "POST /api/v1/datasets?name={name} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    s.write_all(head.as_bytes()).expect("write");
    for c in zip.chunks(256 << 10) {
        if s.write_all(c).is_err() {
            break; // answered early
        }
    }
    let _ = s.write_all(tail.as_bytes());
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

#[test]
fn a_zip_of_400k_empty_entries_is_refused_in_bounded_memory() {
    let dir = helpers::tempdir();
    let data = dir.path().join("data");
    let (master, addr) = Served::start(&data);
    let zip = many_entry_zip(400_000);
    assert!(zip.len() > 30 << 20, "{} bytes", zip.len());
    // A small valid upload first: the master's memory after serving one.
    let small = many_entry_zip(3);
    let (code, body) = post_zip(&addr, "warmup", &small);
    assert_eq!(code, 400, "three empty entries are no images: {body}");
    let before = master.vm_hwm_kib();
    let (code, body) = post_zip(&addr, "many", &zip);
    let after = master.vm_hwm_kib();
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("too many files"), "{body}");
    let grew_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!("master peak {before} -> {after} KiB");
    assert!(
        grew_mib < 8.0,
        "the master's peak memory grew by {grew_mib:.1} MiB for one refused upload ({before} -> {after} KiB)"
    );
    // Nothing of the refused upload is left behind.
    let left: Vec<_> = std::fs::read_dir(data.join("datasets"))
        .expect("datasets")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(master);
}
