//! Limits on what crosses the network between master, workers and clients,
//! in one place, each derived from the protocol's chunk size (see
//! docs/DISTRIBUTED.md, "Limits"). The memory budget of a worker's engine
//! threads is [`imgnorm_engine::budget`]; per-image pixel limits are engine options.

/// Stream mode: input files up to this size travel inside the lease; larger
/// ones are fetched in chunks with `ReadInput`.
pub const INLINE_INPUT_MAX: usize = 4 * 1024 * 1024;
/// Stream mode: chunk size for inputs and outputs.
pub const CHUNK: usize = 4 * 1024 * 1024;

/// Largest number of images in one lease (`--batch-size`): bounds a lease
/// message together with [`imgnorm_core::paths::MAX_PATH_BYTES`].
pub const MAX_BATCH_SIZE: u64 = 4096;

/// Stream mode: input bytes carried inline by one lease. A file goes inline
/// when it is at most [`INLINE_INPUT_MAX`] and the lease's inline total stays
/// within this; the others are fetched with `ReadInput` in [`CHUNK`]s.
pub const LEASE_INLINE_MAX: usize = 4 * INLINE_INPUT_MAX;

/// Largest message a worker or a client sends to the master (the master's
/// decoding limit): an `OutputChunk` is [`CHUNK`] bytes of data plus a few
/// fields; an `ImageDone` is a few KiB (a path of at most 4 KiB, reason and
/// warning of at most 16 KiB each, statistics of at most 4 × 256 counters).
/// 1 MiB of margin above the chunk.
pub const TO_MASTER_MAX: usize = CHUNK + (1 << 20);

/// Largest message the master sends (its encoding limit, the workers' and
/// clients' decoding limit): a stream-mode lease carries at most
/// [`LEASE_INLINE_MAX`] (16 MiB) of inputs plus [`MAX_BATCH_SIZE`] items
/// of at most 4 KiB of path each (≈ 16.1 MiB) and the job spec; an
/// `InputChunk` is one [`CHUNK`]. About 33 MiB at most, doubled for margin
/// (status answers of a long-lived master with very many jobs grow too).
pub const FROM_MASTER_MAX: usize = 64 << 20;

/// Longest worker name or host name kept from a `Hello` (longer ones are
/// cut at a character boundary).
pub const MAX_NAME_BYTES: usize = 256;

/// Stream mode: output files one session may have open at once on the
/// master (an honest worker has one per engine thread at most).
pub const MAX_OPEN_OUTPUTS: usize = 256;

/// Results a session may have refused before the master disconnects it
/// (see `master/service.rs`). An honest worker never gets one.
pub const MAX_REFUSALS: u32 = 3;

// Checked when compiling: the largest lease (inline inputs, every item with
// a path of the longest length, 64 KiB of spec) fits half the limit, and an
// output chunk with its fields fits the other way.
const _: () = {
    let items = MAX_BATCH_SIZE as usize * (imgnorm_core::paths::MAX_PATH_BYTES + 32);
    assert!(LEASE_INLINE_MAX + items + (64 << 10) < FROM_MASTER_MAX / 2 + (1 << 20));
    assert!(CHUNK + 64 < TO_MASTER_MAX);
};

/// `s` cut to at most `max` bytes at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Largest `.npy` file the job's options allow: a header plus the largest
/// image (`--max-pixels`) at 4 channels of the output type.
pub fn max_npy_bytes(o: &imgnorm_core::options::EngineOptions) -> u64 {
    o.max_pixels
        .saturating_mul(4)
        .saturating_mul(o.dtype.size() as u64)
        .saturating_add(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
    }
}
