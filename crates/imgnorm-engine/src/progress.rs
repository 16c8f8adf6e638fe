//! Live progress on stderr: a bar with rate and ETA on a terminal, a plain line
//! every few seconds otherwise (logs, CI, containers).
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain (non-terminal) line is printed.
const PLAIN_EVERY: Duration = Duration::from_secs(3);

/// Progress of one job.
pub struct Progress {
    total: u64,
    done: u64,
    failed: u64,
    workers: Option<usize>,
    started: Instant,
    bar: Option<ProgressBar>,
    last_plain: Instant,
    quiet: bool,
}

impl Progress {
    /// Progress over `total` files; `quiet` prints nothing.
    pub fn new(total: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{bar:40.cyan/blue} {pos}/{len} images  {per_sec}  ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Progress {
            total,
            done: 0,
            failed: 0,
            workers: None,
            started: Instant::now(),
            bar,
            last_plain: Instant::now(),
            quiet,
        }
    }

    /// Sets the absolute counts (distributed runs report totals).
    pub fn set(&mut self, done: u64, failed: u64, workers: Option<usize>) {
        self.done = done;
        self.failed = failed;
        self.workers = workers;
        self.refresh();
    }

    /// One more file finished.
    pub fn inc(&mut self, failed: bool) {
        self.done += 1;
        self.failed += u64::from(failed);
        self.refresh();
    }

    fn refresh(&mut self) {
        if self.quiet {
            return;
        }
        let msg = self.message();
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
            bar.set_message(msg);
        } else if self.last_plain.elapsed() >= PLAIN_EVERY {
            self.last_plain = Instant::now();
            eprintln!("{}", self.plain_line());
        }
    }

    fn message(&self) -> String {
        let mut m = String::new();
        match self.workers {
            // A job nobody works on would otherwise wait without a word.
            Some(0) if self.done < self.total => {
                m.push_str("waiting: no worker connected (start `imgnorm worker --master URL`)  ");
            }
            Some(w) => m.push_str(&format!("workers {w}  ")),
            None => {}
        }
        if self.failed > 0 {
            m.push_str(&format!("failed {}", self.failed));
        }
        m
    }

    /// The plain progress line.
    pub fn plain_line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        };
        let pct = if self.total > 0 {
            100.0 * self.done as f64 / self.total as f64
        } else {
            100.0
        };
        let eta = if rate > 0.0 {
            format!(
                "{:.0}s",
                (self.total.saturating_sub(self.done)) as f64 / rate
            )
        } else {
            "?".into()
        };
        format!(
            "progress: {}/{} images ({pct:.1}%), {rate:.1} images/s, ETA {eta} {}",
            self.done,
            self.total,
            self.message()
        )
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
