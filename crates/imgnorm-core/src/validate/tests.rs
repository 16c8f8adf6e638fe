//! One test per refusal of [`super`], plus the honest rows that must pass.
use super::*;
use crate::dataset::raw_stats;
use crate::normalize::Pixels;
use crate::options::Geometry;
use crate::stats::{Binning, ChannelStats};

const PATH: &str = "a/x.png";

fn ok_row(w: u32, h: u32, c: u32) -> Record {
    let mut r = Record::bare(PATH, Status::Ok, None);
    r.output = Some(format!("{PATH}.npy"));
    r.format = Some("png".into());
    r.width = Some(w);
    r.height = Some(h);
    r.channels = Some(c);
    r.bit_depth = Some(8);
    r.sample_type = Some(crate::sample::SampleType::Uint8);
    r.min = vec![0.0];
    r.max = vec![255.0];
    r.checksum = Some("0123456789abcdef0123456789abcdef".into());
    r
}

fn stats(w: u32, h: u32, c: u32) -> ImageStats {
    let values = vec![0.5; (w * h) as usize];
    ImageStats {
        channels: vec![ChannelStats::from_values(&values, &Binning::new((0.0, 1.0))); c as usize],
    }
}

fn write<'a>(o: &'a EngineOptions) -> Expected<'a> {
    Expected {
        path: PATH,
        options: o,
        phase: ResultPhase::Write,
    }
}

fn refusal(o: &EngineOptions, r: &Record) -> Refusal {
    let s = stats(
        r.width.unwrap_or(1).min(64),
        r.height.unwrap_or(1).min(64),
        r.channels.unwrap_or(1).clamp(1, 4),
    );
    check_result(&write(o), r, Some(&s), None).expect_err("refused")
}

#[test]
fn an_honest_ok_row_passes() {
    let o = EngineOptions::default();
    let r = ok_row(4, 3, 3);
    assert_eq!(
        check_result(&write(&o), &r, Some(&stats(4, 3, 3)), None),
        Ok(())
    );
}

#[test]
fn honest_failed_and_skipped_rows_pass() {
    let o = EngineOptions::default();
    let mut r = Record::bare(PATH, Status::Failed, Some("decode error: x".into()));
    r.format = Some("png".into());
    assert_eq!(check_result(&write(&o), &r, None, None), Ok(()));
    let r = Record::bare(PATH, Status::Skipped, Some("dry run".into()));
    assert_eq!(check_result(&write(&o), &r, None, None), Ok(()));
}

#[test]
fn another_path_is_refused() {
    let o = EngineOptions::default();
    let mut r = ok_row(4, 3, 3);
    r.path = "a/other.png".into();
    assert!(matches!(refusal(&o, &r), Refusal::Path { .. }));
}

#[test]
fn outputs_other_than_path_npy_are_refused() {
    let o = EngineOptions::default();
    for bad in [
        None,
        Some("/etc/passwd"),
        Some("../a/x.png.npy"),
        Some("a/../../x.png.npy"),
        Some("a\\x.png.npy"),
        Some("a/x.png.npy\0"),
        Some("a/x.png"),
        Some("b/x.png.npy"),
    ] {
        let mut r = ok_row(4, 3, 3);
        r.output = bad.map(String::from);
        assert!(
            matches!(refusal(&o, &r), Refusal::Output { .. }),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn an_unsafe_expected_path_is_refused_even_if_matching() {
    let o = EngineOptions::default();
    let want = Expected {
        path: "../x.png",
        options: &o,
        phase: ResultPhase::Write,
    };
    let mut r = ok_row(4, 3, 3);
    r.path = "../x.png".into();
    r.output = Some("../x.png.npy".into());
    let got = check_result(&want, &r, Some(&stats(4, 3, 3)), None);
    assert!(matches!(got, Err(Refusal::UnsafeOutput(_))), "{got:?}");
}

#[test]
fn not_ok_rows_with_outputs_or_without_reason_are_refused() {
    let o = EngineOptions::default();
    let mut r = Record::bare(PATH, Status::Failed, Some("x".into()));
    r.output = Some(format!("{PATH}.npy"));
    assert!(matches!(refusal(&o, &r), Refusal::NotOkRow { .. }));
    let mut r = Record::bare(PATH, Status::Skipped, Some("x".into()));
    r.checksum = Some("0".repeat(32));
    assert!(matches!(refusal(&o, &r), Refusal::NotOkRow { .. }));
    let r = Record::bare(PATH, Status::Failed, None);
    assert!(matches!(refusal(&o, &r), Refusal::NotOkRow { .. }));
}

#[test]
fn overlong_texts_and_unknown_formats_are_refused() {
    let o = EngineOptions::default();
    // A worker can send any text: `Record::bare` bounds what the engine
    // writes, so the overlong reason is set as a dishonest worker would.
    let mut r = Record::bare(PATH, Status::Failed, None);
    r.reason = Some("x".repeat(MAX_TEXT_BYTES + 1));
    assert!(matches!(
        refusal(&o, &r),
        Refusal::TextTooLong {
            field: "reason",
            ..
        }
    ));
    let mut r = ok_row(4, 3, 3);
    r.warning = Some("w".repeat(MAX_TEXT_BYTES + 1));
    assert!(matches!(
        refusal(&o, &r),
        Refusal::TextTooLong {
            field: "warning",
            ..
        }
    ));
    let mut r = ok_row(4, 3, 3);
    r.format = Some("exe".into());
    assert!(matches!(refusal(&o, &r), Refusal::Format(_)));
}

#[test]
fn impossible_shapes_are_refused() {
    let o = EngineOptions::default();
    for (w, h, c) in [(0, 3, 3), (4, 0, 3), (4, 3, 0), (4, 3, 5)] {
        let r = ok_row(w, h, c);
        assert!(
            matches!(refusal(&o, &r), Refusal::Shape { .. }),
            "{w}x{h}x{c}"
        );
    }
    let r = ok_row(u32::MAX, u32::MAX, 1);
    assert!(matches!(refusal(&o, &r), Refusal::OverPixelLimit { .. }));
    let small = EngineOptions {
        max_pixels: 11,
        ..EngineOptions::default()
    };
    assert!(matches!(
        refusal(&small, &ok_row(4, 3, 3)),
        Refusal::OverPixelLimit { limit: 11, .. }
    ));
}

#[test]
fn channels_the_options_cannot_give_are_refused() {
    let rgb = EngineOptions {
        channels: ChannelMode::Rgb,
        ..EngineOptions::default()
    };
    assert!(matches!(
        refusal(&rgb, &ok_row(4, 3, 4)),
        Refusal::Channels { .. }
    ));
    let gray = EngineOptions {
        channels: ChannelMode::Gray,
        ..EngineOptions::default()
    };
    assert!(matches!(
        refusal(&gray, &ok_row(4, 3, 3)),
        Refusal::Channels { .. }
    ));
    let r = ok_row(4, 3, 1);
    assert_eq!(
        check_result(&write(&gray), &r, Some(&stats(4, 3, 1)), None),
        Ok(())
    );
}

#[test]
fn sizes_the_geometry_cannot_give_are_refused() {
    let with = |resize, crop| EngineOptions {
        geometry: Geometry {
            resize,
            center_crop: crop,
            ..Geometry::default()
        },
        ..EngineOptions::default()
    };
    let cases = [
        (
            with(
                Some(Resize::Exact {
                    width: 4,
                    height: 3,
                }),
                None,
            ),
            (4, 3),
            (5, 3),
        ),
        (with(None, Some((2, 2))), (2, 2), (2, 3)),
        (
            with(Some(Resize::Shorter { size: 8 }), Some((4, 4))),
            (4, 4),
            (8, 8),
        ),
        (
            with(Some(Resize::Shorter { size: 3 }), None),
            (7, 3),
            (7, 4),
        ),
        (
            with(
                Some(Resize::Fit {
                    width: 8,
                    height: 6,
                }),
                None,
            ),
            (8, 2),
            (7, 5),
        ),
        (
            with(
                Some(Resize::Fit {
                    width: 8,
                    height: 6,
                }),
                None,
            ),
            (3, 6),
            (9, 6),
        ),
    ];
    for (o, (gw, gh), (bw, bh)) in cases {
        let good = ok_row(gw, gh, 3);
        assert_eq!(
            check_result(&write(&o), &good, Some(&stats(gw, gh, 3)), None),
            Ok(()),
            "{gw}x{gh} under {:?}",
            o.geometry
        );
        let bad = ok_row(bw, bh, 3);
        assert!(
            matches!(refusal(&o, &bad), Refusal::Geometry { .. }),
            "{bw}x{bh} under {:?}",
            o.geometry
        );
    }
}

#[test]
fn bad_bit_depths_and_extremes_are_refused() {
    let o = EngineOptions::default();
    let mut r = ok_row(4, 3, 3);
    r.bit_depth = Some(12);
    assert!(matches!(
        refusal(&o, &r),
        Refusal::BitDepth {
            bit_depth: Some(12),
            ..
        }
    ));
    let mut r = ok_row(4, 3, 3);
    r.sample_type = None;
    assert!(matches!(refusal(&o, &r), Refusal::BitDepth { .. }));
    let mut r = ok_row(4, 3, 3);
    r.min = vec![0.5];
    assert!(matches!(refusal(&o, &r), Refusal::Extremes(_)));
    // Signed and float rows: values of their type.
    let mut r = ok_row(4, 3, 3);
    r.bit_depth = Some(32);
    r.sample_type = Some(crate::sample::SampleType::Float32);
    r.min = vec![-0.25];
    r.max = vec![f64::from(1e30f32)];
    assert_eq!(
        check_result(&write(&o), &r, Some(&stats(4, 3, 3)), None),
        Ok(())
    );
    r.sample_type = Some(crate::sample::SampleType::Int16);
    assert!(matches!(refusal(&o, &r), Refusal::BitDepth { .. }));
    r.bit_depth = Some(16);
    assert!(matches!(refusal(&o, &r), Refusal::Extremes(_)));
    r.max = vec![32767.0];
    r.min = vec![-32768.0];
    assert_eq!(
        check_result(&write(&o), &r, Some(&stats(4, 3, 3)), None),
        Ok(())
    );
    let mut r = ok_row(4, 3, 3);
    r.min = vec![0.0, 0.0, 0.0];
    assert!(matches!(refusal(&o, &r), Refusal::Extremes(_)));
    let mut r = ok_row(4, 3, 3);
    r.min = vec![9.0];
    r.max = vec![3.0];
    assert!(matches!(refusal(&o, &r), Refusal::Extremes(_)));
    let mut r = ok_row(4, 3, 3);
    r.max = vec![256.0];
    assert!(matches!(refusal(&o, &r), Refusal::Extremes(_)));
    let per_channel = EngineOptions {
        scope: Scope::Channel,
        ..EngineOptions::default()
    };
    assert!(matches!(
        refusal(&per_channel, &ok_row(4, 3, 3)),
        Refusal::Extremes(_)
    ));
}

#[test]
fn malformed_checksums_are_refused() {
    let o = EngineOptions::default();
    for bad in [None, Some("abc"), Some("0123456789ABCDEF0123456789ABCDEF")] {
        let mut r = ok_row(4, 3, 3);
        r.checksum = bad.map(String::from);
        assert!(
            matches!(refusal(&o, &r), Refusal::Checksum),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn missing_or_inconsistent_statistics_are_refused() {
    let o = EngineOptions::default();
    let r = ok_row(4, 3, 3);
    assert_eq!(
        check_result(&write(&o), &r, None, None),
        Err(Refusal::MissingStats)
    );
    let got = check_result(&write(&o), &r, Some(&stats(4, 3, 2)), None);
    assert!(matches!(got, Err(Refusal::Stats(_))), "{got:?}");
    let got = check_result(&write(&o), &r, Some(&stats(5, 3, 3)), None);
    assert!(matches!(got, Err(Refusal::Stats(_))), "{got:?}");
}

#[test]
fn statistics_phase_rows_need_matching_raw_statistics() {
    let o = EngineOptions {
        scope: Scope::Dataset,
        ..EngineOptions::default()
    };
    let want = Expected {
        path: PATH,
        options: &o,
        phase: ResultPhase::Stats,
    };
    let px = [3u8, 9, 7, 200];
    let raw = raw_stats(Pixels::U8(&px), 1);
    let mut r = Record::bare(PATH, Status::Ok, None);
    r.width = Some(2);
    r.height = Some(2);
    r.channels = Some(1);
    r.bit_depth = Some(8);
    r.sample_type = Some(crate::sample::SampleType::Uint8);
    r.min = vec![3.0];
    r.max = vec![200.0];
    assert_eq!(check_result(&want, &r, None, Some(&raw)), Ok(()));
    assert_eq!(
        check_result(&want, &r, None, None),
        Err(Refusal::MissingRaw)
    );
    let mut wide = r.clone();
    wide.width = Some(3);
    let got = check_result(&want, &wide, None, Some(&raw));
    assert!(matches!(got, Err(Refusal::Raw(_))), "{got:?}");
    let mut deep = r.clone();
    deep.bit_depth = Some(16);
    deep.sample_type = Some(crate::sample::SampleType::Uint16);
    deep.sample_type = Some(crate::sample::SampleType::Uint16);
    assert!(matches!(
        check_result(&want, &deep, None, Some(&raw)),
        Err(Refusal::RawBitDepth { .. })
    ));
    let mut with_output = r;
    with_output.output = Some(format!("{PATH}.npy"));
    assert!(matches!(
        check_result(&want, &with_output, None, Some(&raw)),
        Err(Refusal::Output { .. })
    ));
}

#[test]
fn claims_must_match_the_lease() {
    let job = JobId("job-1".into());
    let items = [2, 5, 9];
    let lease = LeaseFacts {
        worker: WorkerId(7),
        job: &job,
        attempt: 2,
        items: &items,
    };
    let honest = Claim {
        worker: WorkerId(7),
        job: "job-1",
        lease: 40,
        attempt: 2,
        item: 5,
    };
    assert_eq!(check_claim(&honest, Some(lease)), Ok(()));
    // A lease that ended is for the scheduler to discard, not a lie.
    assert_eq!(check_claim(&honest, None), Ok(()));
    let other_worker = Claim {
        worker: WorkerId(8),
        ..honest
    };
    assert!(matches!(
        check_claim(&other_worker, Some(lease)),
        Err(Refusal::NotLeaseHolder { .. })
    ));
    let other_job = Claim {
        job: "job-2",
        ..honest
    };
    assert!(matches!(
        check_claim(&other_job, Some(lease)),
        Err(Refusal::WrongJob { .. })
    ));
    let other_attempt = Claim {
        attempt: 1,
        ..honest
    };
    assert!(matches!(
        check_claim(&other_attempt, Some(lease)),
        Err(Refusal::WrongAttempt { .. })
    ));
    let other_item = Claim { item: 6, ..honest };
    assert!(matches!(
        check_claim(&other_item, Some(lease)),
        Err(Refusal::NotInLease { .. })
    ));
}
