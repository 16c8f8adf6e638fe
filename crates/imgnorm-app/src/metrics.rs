//! The master's metrics in the Prometheus text exposition format (version
//! 0.0.4), rendered on demand from the master's status: jobs, images, queue,
//! workers and the autoscaler. Served on `/metrics` by the HTTP listener; the
//! Kubernetes HorizontalPodAutoscaler example in `deploy/k8s/` scales on them.
use std::fmt::Write as _;

use crate::master::Master;

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", fmt_value(value));
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Renders every metric of `master`.
pub fn render(master: &Master) -> String {
    let s = master.status(None);
    let obs = master.autoscale_observation();
    let mut o = Out(String::with_capacity(4096));

    o.one("imgnorm_up", "gauge", "1 while the master is serving.", 1.0);
    o.one(
        "imgnorm_uptime_seconds",
        "gauge",
        "Seconds since the master started.",
        master.uptime().as_secs_f64(),
    );

    o.family("imgnorm_jobs", "gauge", "Jobs by state.");
    for state in ["queued", "running", "done", "failed", "cancelled"] {
        let n = s.jobs.iter().filter(|j| j.state == state).count();
        o.sample("imgnorm_jobs", &[("state", state)], n as f64);
    }
    o.one(
        "imgnorm_queue_images",
        "gauge",
        "Image passes left over queued and running jobs, both phases of a two-phase job (the autoscaler's backlog).",
        obs.backlog as f64,
    );
    o.one(
        "imgnorm_images_completed_total",
        "counter",
        "Image passes completed since the master started (a two-phase job passes each image once per phase).",
        obs.completed as f64,
    );
    o.family(
        "imgnorm_images_total",
        "counter",
        "Manifest rows written or accepted, by status.",
    );
    for (status, n) in [
        ("ok", s.jobs.iter().map(|j| j.ok).sum::<u64>()),
        ("failed", s.jobs.iter().map(|j| j.failed).sum()),
        ("skipped", s.jobs.iter().map(|j| j.skipped).sum()),
    ] {
        o.sample("imgnorm_images_total", &[("status", status)], n as f64);
    }

    o.family("imgnorm_workers", "gauge", "Workers seen, by state.");
    for state in ["alive", "draining", "dead"] {
        let n = s.workers.iter().filter(|w| w.state == state).count();
        o.sample("imgnorm_workers", &[("state", state)], n as f64);
    }
    o.family(
        "imgnorm_worker_images_done_total",
        "counter",
        "Images accepted from each worker that is not dead.",
    );
    for w in s.workers.iter().filter(|w| w.state != "dead") {
        o.sample(
            "imgnorm_worker_images_done_total",
            &[("worker", &w.name), ("worker_id", &w.worker_id)],
            w.images_done as f64,
        );
    }

    if let Some(a) = master.autoscale_view() {
        o.one(
            "imgnorm_autoscale_desired_workers",
            "gauge",
            "Workers the autoscaling policy wants now (an HPA can follow this).",
            f64::from(a.desired),
        );
        o.one(
            "imgnorm_autoscale_min_workers",
            "gauge",
            "Lower bound of the autoscaler.",
            f64::from(a.min_workers),
        );
        o.one(
            "imgnorm_autoscale_max_workers",
            "gauge",
            "Upper bound of the autoscaler.",
            f64::from(a.max_workers),
        );
        o.family(
            "imgnorm_autoscale_instances",
            "gauge",
            "Worker instances owned by the autoscaler, by phase.",
        );
        for (phase, n) in [
            ("starting", a.starting),
            ("running", a.running),
            ("draining", a.draining),
        ] {
            o.sample(
                "imgnorm_autoscale_instances",
                &[("phase", phase)],
                f64::from(n),
            );
        }
        o.family(
            "imgnorm_autoscale_decisions_total",
            "counter",
            "Changes of the target, by direction.",
        );
        o.sample(
            "imgnorm_autoscale_decisions_total",
            &[("direction", "up")],
            a.scale_ups_total as f64,
        );
        o.sample(
            "imgnorm_autoscale_decisions_total",
            &[("direction", "down")],
            a.scale_downs_total as f64,
        );
        o.family(
            "imgnorm_autoscale_instances_total",
            "counter",
            "Instances started, drained and died.",
        );
        for (event, n) in [
            ("started", a.started_total),
            ("drained", a.stopped_total),
            ("died", a.died_total),
        ] {
            o.sample(
                "imgnorm_autoscale_instances_total",
                &[("event", event)],
                n as f64,
            );
        }
        o.one(
            "imgnorm_autoscale_worker_seconds_total",
            "counter",
            "Sum of the lifetimes of the autoscaler's instances.",
            a.worker_seconds,
        );
        if let Some(r) = a.rate_per_worker {
            o.one(
                "imgnorm_autoscale_rate_per_worker",
                "gauge",
                "Measured images per second per worker.",
                r,
            );
        }
        if let Some(e) = a.eta_s {
            o.one(
                "imgnorm_queue_drain_seconds",
                "gauge",
                "Estimated seconds to drain the queue at the target count.",
                e,
            );
        }
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_labels_are_escaped() {
        assert_eq!(fmt_value(3.0), "3");
        assert_eq!(fmt_value(0.5), "0.5");
        assert_eq!(fmt_value(f64::INFINITY), "+Inf");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn an_idle_master_exports_every_family() {
        let m = Master::new(crate::master::MasterConfig::default()).expect("master");
        let text = render(&m);
        for line in [
            "imgnorm_up 1",
            "imgnorm_jobs{state=\"running\"} 0",
            "imgnorm_queue_images 0",
            "imgnorm_workers{state=\"alive\"} 0",
            "# TYPE imgnorm_images_completed_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // Without an autoscaler, no autoscale family.
        assert!(!text.contains("imgnorm_autoscale_"), "{text}");
        // Every sample line belongs to a declared family.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            assert!(text.contains(&format!("# TYPE {name} ")), "{l}");
        }
    }
}
