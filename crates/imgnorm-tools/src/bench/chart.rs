//! The benchmark charts, each as PNG and SVG: median time vs workers (with
//! min–max bars), and speedup vs workers with the ideal line and the core
//! count. Drawn with `plotters`; the PNG text uses an embedded DejaVu Sans
//! (no system fonts needed), and the PNG is encoded from the raw RGB buffer
//! with the `image` crate we already depend on.
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::report::{Results, Summary};
use super::{BenchError, Mode};

/// DejaVu Sans (license in `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

const SIZE: (u32, u32) = (900, 560);

fn ensure_font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| "the embedded font does not parse".to_string())
    })
    .clone()
}

/// A line on a chart: its name, colour and points `(workers, y, min, max)`.
struct Line {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64, f64, f64)>,
}

fn lines(results: &Results, speedup: bool) -> Vec<Line> {
    let of = |modes: &[Mode]| -> Vec<&Summary> {
        results
            .summary
            .iter()
            .filter(|s| modes.contains(&s.mode))
            .collect()
    };
    let point = |s: &Summary| {
        if speedup {
            (s.workers as f64, s.speedup, s.speedup, s.speedup)
        } else {
            (s.workers as f64, s.median_s, s.min_s, s.max_s)
        }
    };
    let mut out = Vec::new();
    let rust = of(&[Mode::Distributed]);
    if !rust.is_empty() {
        out.push(Line {
            name: "imgnorm run (N workers x 1 thread)".into(),
            color: RGBColor(0xd6, 0x27, 0x28),
            points: rust.into_iter().map(point).collect(),
        });
    }
    if !speedup {
        for s in of(&[Mode::Centralized]) {
            out.push(Line {
                name: "imgnorm centralized (1 thread)".into(),
                color: RGBColor(0x1f, 0x77, 0xb4),
                points: vec![point(s)],
            });
        }
    }
    let py = of(&[Mode::Python, Mode::PythonPool]);
    if !py.is_empty() {
        out.push(Line {
            name: if speedup {
                "Python OpenCV pool (vs 1 process)".into()
            } else {
                "Python OpenCV (1 process, then Pool of N)".into()
            },
            color: RGBColor(0x2c, 0xa0, 0x2c),
            points: py.into_iter().map(point).collect(),
        });
    }
    for (mode, color) in [
        (Mode::Dask, RGBColor(0x94, 0x67, 0xbd)),
        (Mode::Ray, RGBColor(0xff, 0x7f, 0x0e)),
        (Mode::Daft, RGBColor(0x8c, 0x56, 0x4b)),
    ] {
        let runs = of(&[mode]);
        if !runs.is_empty() {
            out.push(Line {
                name: if speedup {
                    format!("{} (vs OpenCV, 1 process)", mode.label())
                } else {
                    mode.label().to_string()
                },
                color,
                points: runs.into_iter().map(point).collect(),
            });
        }
    }
    out
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    results: &Results,
    speedup: bool,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let data = lines(results, speedup);
    let max_w = results
        .summary
        .iter()
        .map(|s| s.workers)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let cores = results.machine.cores_available as f64;
    let y_max = if speedup {
        max_w.max(cores)
    } else {
        data.iter()
            .flat_map(|l| l.points.iter().map(|p| p.3))
            .fold(0.0, f64::max)
    } * 1.1;
    let title = if speedup {
        format!("Speedup vs workers ({} usable cores)", cores)
    } else {
        format!(
            "Time vs workers ({} images, {} usable cores)",
            results.dataset.files, cores
        )
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_w + 0.5, 0.0..y_max.max(1e-3))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_labels((max_w as usize + 2).min(14))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("worker processes (1 engine thread each)")
        .y_desc(if speedup {
            "speedup (x)"
        } else {
            "median wall time (s)"
        })
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(e)?;
    if speedup {
        let grey = RGBColor(0x88, 0x88, 0x88);
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (max_w, max_w)],
                grey.stroke_width(1),
            ))
            .map_err(e)?
            .label("ideal (speedup = workers)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey));
        let black = RGBColor(0x33, 0x33, 0x33);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, cores), (max_w + 0.5, cores)],
                6,
                4,
                black.stroke_width(1),
            ))
            .map_err(e)?
            .label(format!("core count ({cores}): the ceiling"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], black));
    }
    for l in &data {
        let c = l.color;
        if l.points.len() == 1 && !speedup {
            // A single-process baseline: a horizontal reference line.
            let y = l.points[0].1;
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, y), (max_w + 0.5, y)],
                    8,
                    4,
                    c.stroke_width(2),
                ))
                .map_err(e)?
                .label(format!("{} = {:.2} s", l.name, y))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c));
        } else {
            chart
                .draw_series(LineSeries::new(
                    l.points.iter().map(|p| (p.0, p.1)),
                    c.stroke_width(2),
                ))
                .map_err(e)?
                .label(l.name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c));
        }
        chart
            .draw_series(
                l.points
                    .iter()
                    .map(|p| Circle::new((p.0, p.1), 4, c.filled())),
            )
            .map_err(e)?;
        chart
            .draw_series(
                l.points
                    .iter()
                    .filter(|p| p.3 > p.2)
                    .map(|p| PathElement::new([(p.0, p.2), (p.0, p.3)], c.stroke_width(1))),
            )
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(if speedup {
            SeriesLabelPosition::UpperLeft
        } else {
            SeriesLabelPosition::UpperRight
        })
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

fn png(results: &Results, speedup: bool, path: &Path) -> Result<(), BenchError> {
    let fail = |message: String| BenchError::Chart {
        path: path.to_path_buf(),
        message,
    };
    ensure_font().map_err(fail)?;
    let (w, h) = SIZE;
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        draw(root, results, speedup).map_err(fail)?;
    }
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| fail("pixel buffer has the wrong size".into()))?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| fail(e.to_string()))
}

fn svg(results: &Results, speedup: bool, path: &Path) -> Result<(), BenchError> {
    let fail = |message: String| BenchError::Chart {
        path: path.to_path_buf(),
        message,
    };
    ensure_font().map_err(fail)?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        draw(root, results, speedup).map_err(fail)?;
    }
    std::fs::write(path, text).map_err(|source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `time_vs_workers.{png,svg}` and `speedup_vs_workers.{png,svg}`.
pub fn write_all(results: &Results, out: &Path) -> Result<(), BenchError> {
    for (name, speedup) in [("time_vs_workers", false), ("speedup_vs_workers", true)] {
        png(results, speedup, &out.join(format!("{name}.png")))?;
        svg(results, speedup, &out.join(format!("{name}.svg")))?;
    }
    Ok(())
}
