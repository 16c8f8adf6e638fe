//! The fuzz targets' bodies (`imgnorm::fuzzing`, the same functions
//! `fuzz/fuzz_targets/*.rs` call) over the committed seed and regression
//! corpus in `fuzz/corpus/`, every test fixture under several option sets,
//! and a fixed stream of pseudo-random inputs: the targets cannot rot, and
//! what the fuzzer once found stays fixed, without `cargo fuzz`.
use std::path::{Path, PathBuf};

use imgnorm::fuzzing::{bmp_gif_decode, decode_normalize, jpeg_decode, validate_result, zip_read};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("seed");
            (p, bytes)
        })
        .collect()
}

fn fixture_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("fixtures") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            fixture_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The hand-made seeds of a corpus (named `seed-*`): the cut and flipped
/// variants are made from these only; what the fuzzer found (`fuzz-*`,
/// `regress-*`) is replayed as it is.
fn hand_made(corpus: &[(PathBuf, Vec<u8>)]) -> Vec<&Vec<u8>> {
    corpus
        .iter()
        .filter(|(p, b)| {
            b.len() > 1
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("seed-"))
        })
        .map(|(_, b)| b)
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

#[test]
fn decode_normalize_target_passes_its_corpus_and_the_fixtures() {
    for (path, bytes) in corpus("decode_normalize") {
        eprintln!("{}", path.display());
        decode_normalize(&bytes);
    }
    let mut files = Vec::new();
    fixture_files(&crate::helpers::fixtures(), &mut files);
    files.sort();
    for (i, p) in files.iter().enumerate() {
        let data = std::fs::read(p).expect("fixture");
        // Every option set, under a few of the extensions the first byte picks.
        for k in 0..imgnorm::fuzzing::OPTION_SETS {
            let selector = k | ((i as u8 + k) % 8) << 5;
            let mut input = vec![selector];
            input.extend_from_slice(&data);
            decode_normalize(&input);
        }
    }
}

#[test]
fn validate_result_target_passes_its_corpus_and_random_inputs() {
    for (path, bytes) in corpus("validate_result") {
        eprintln!("{}", path.display());
        validate_result(&bytes);
    }
    for seed in 0..3000u64 {
        validate_result(&noise(seed, (seed % 200) as usize));
    }
}

#[test]
fn jpeg_decode_target_passes_its_corpus_every_cut_and_random_flips() {
    let seeds = corpus("jpeg_decode");
    for (path, bytes) in &seeds {
        eprintln!("{}", path.display());
        jpeg_decode(bytes);
    }
    // Each seed cut short and with bytes flipped: never a crash; the
    // properties of the target hold for every such variant.
    for (i, bytes) in hand_made(&seeds).into_iter().enumerate() {
        for n in (0..bytes.len()).step_by(bytes.len() / 40 + 1) {
            jpeg_decode(&bytes[..n]);
        }
        let flips = noise(i as u64 + 1, 64);
        for pair in flips.chunks(2) {
            let mut bad = bytes.clone();
            let at = 2 + usize::from(pair[0]) * (bad.len() - 2) / 256;
            bad[at] ^= pair[1] | 1;
            jpeg_decode(&bad);
        }
    }
}

#[test]
fn zip_read_target_passes_its_corpus_every_cut_and_random_flips() {
    let seeds = corpus("zip_read");
    for (path, bytes) in &seeds {
        eprintln!("{}", path.display());
        zip_read(bytes);
    }
    for (i, bytes) in hand_made(&seeds).into_iter().enumerate() {
        for n in 0..bytes.len() {
            zip_read(&bytes[..n]);
        }
        let flips = noise(i as u64 + 7, 256);
        for pair in flips.chunks(2) {
            let mut bad = bytes.clone();
            let at = usize::from(pair[0]) * bad.len() / 256;
            bad[at] ^= pair[1] | 1;
            zip_read(&bad);
        }
    }
}

#[test]
fn bmp_gif_decode_target_passes_its_corpus_every_cut_and_random_flips() {
    let seeds = corpus("bmp_gif_decode");
    for (path, bytes) in &seeds {
        eprintln!("{}", path.display());
        bmp_gif_decode(bytes);
    }
    for (i, bytes) in hand_made(&seeds).into_iter().enumerate() {
        for n in (0..bytes.len()).step_by(bytes.len() / 60 + 1) {
            bmp_gif_decode(&bytes[..n]);
        }
        let flips = noise(i as u64 + 7, 400);
        for pair in flips.chunks(2) {
            let mut bad = bytes.clone();
            let at = 1 + usize::from(pair[0]) * (bad.len() - 1) / 256;
            bad[at] ^= pair[1] | 1;
            bmp_gif_decode(&bad);
        }
    }
}
