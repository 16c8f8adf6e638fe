//! The scheduler's name for one phase of a job. A two-phase job (`--scope
//! dataset`, `--standardize`) runs two scheduler jobs one after the other,
//! `job-N.stats` then `job-N`; every lookup from a scheduler id to a job,
//! and from a job to its scheduler id, goes through [`PhaseJob`], so no
//! caller can ask the scheduler about the wrong phase.
use imgnorm_core::ids::JobId;

use super::state::Phase;

/// One phase of job `key`, as the scheduler knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseJob {
    /// Job number (`job-N`).
    pub key: u64,
    /// Which phase.
    pub phase: Phase,
}

impl PhaseJob {
    /// The scheduler's id: `job-N` for the writing phase, `job-N.stats`
    /// for the statistics phase.
    pub fn sched_id(self) -> JobId {
        match self.phase {
            Phase::Stats => JobId(format!("job-{}.stats", self.key)),
            Phase::Write => JobId(format!("job-{}", self.key)),
        }
    }

    /// Reads a scheduler id (or a job id on the wire, which is the same).
    pub fn parse(id: &str) -> Option<PhaseJob> {
        let n = id.strip_prefix("job-")?;
        let (n, phase) = match n.strip_suffix(".stats") {
            Some(n) => (n, Phase::Stats),
            None => (n, Phase::Write),
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(PhaseJob {
            key: n.parse().ok()?,
            phase,
        })
    }
}

/// The number of a job id as users see it (`job-N`; a phase's scheduler id
/// is not a job id).
pub fn job_key(id: &str) -> Option<u64> {
    PhaseJob::parse(id)
        .filter(|p| p.phase == Phase::Write)
        .map(|p| p.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_strangers_are_refused() {
        for phase in [Phase::Stats, Phase::Write] {
            let p = PhaseJob { key: 42, phase };
            assert_eq!(PhaseJob::parse(&p.sched_id().0), Some(p));
        }
        for bad in [
            "job-",
            "job-x",
            "job-1.stat",
            "job-+1",
            "jobs-1",
            "job-1.stats.stats",
        ] {
            assert_eq!(PhaseJob::parse(bad), None, "{bad}");
        }
        assert_eq!(job_key("job-7"), Some(7));
        assert_eq!(job_key("job-7.stats"), None);
    }
}
