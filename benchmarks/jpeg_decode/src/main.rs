//! `jpeg-decode-bench DIR [ROUNDS]`: decodes every file of DIR with zune-jpeg
//! (through `image`, exactly as the engine did before) and with imgnorm's
//! libjpeg-turbo path, in turn, ROUNDS times (default 5), one thread, and
//! prints MP/s per decoder and round.
#[allow(dead_code)]
#[path = "../../../crates/imgnorm-engine/src/jpeg.rs"]
mod jpeg;

use std::io::Cursor;
use std::time::Instant;

use image::{ImageDecoder, ImageFormat, ImageReader};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: jpeg-decode-bench DIR [ROUNDS]");
    let rounds: usize = args.next().map_or(5, |r| r.parse().expect("ROUNDS"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("DIR")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let data: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).expect("read")).collect();
    let mut buf = Vec::new();
    let mut samples = 0u64;
    for d in &data {
        let r = jpeg::Reader::new(d, false, 0).expect("libjpeg-turbo header");
        samples += r.header().output_len() as u64;
        buf.resize(buf.len().max(r.header().output_len()), 0);
    }
    let mp = samples as f64 / 3e6;
    println!("{} files, {mp:.1} MP", data.len());
    for round in 0..rounds {
        let t = Instant::now();
        for d in &data {
            let dec = ImageReader::with_format(Cursor::new(d), ImageFormat::Jpeg)
                .into_decoder()
                .expect("zune header");
            let n = dec.total_bytes() as usize;
            dec.read_image(&mut buf[..n]).expect("zune decode");
        }
        let zune = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for d in &data {
            let r = jpeg::Reader::new(d, false, 0).expect("libjpeg-turbo header");
            let n = r.header().output_len();
            r.decode_into(&mut buf[..n]).expect("libjpeg-turbo decode");
        }
        let turbo = t.elapsed().as_secs_f64();
        println!(
            "round {round}: zune-jpeg {:.0} MP/s, libjpeg-turbo {:.0} MP/s, ratio {:.2}",
            mp / zune,
            mp / turbo,
            zune / turbo
        );
    }
}
