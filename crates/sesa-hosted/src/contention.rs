//! Whether a core's thread has the CPU to itself: the gate in front of idle spinning.
//!
//! An idle core spins before it parks (see `InboxTask` in `runtime.rs`) because a
//! spinning core takes a cross-core event in under a microsecond and a parked one in
//! tens (`sesa bench micro`: 0.49 µs against 45 µs for a `spawn_on` round trip). That
//! holds while the core has a CPU of its own. When the machine's CPUs are shared by
//! more threads than they can run (three one-core nodes and their clients on this
//! 2-CPU machine), a spinning core takes the CPU from the very thread that would give
//! it work, and every spin ends when the scheduler takes the CPU back: measured with
//! `sesa bench kv --nodes 3 --connections 6`, spinning 2,000 rounds cost 1.8x the CPU
//! per request of parking at once (13.4 against 7.7 µs at depth 16).
//!
//! The kernel says which case a thread is in: `/proc/thread-self/schedstat` counts the
//! nanoseconds it spent runnable but waiting for a CPU (the run delay). A thread with
//! a CPU of its own waits for one under 3% of the time (a woken thread is not
//! running at once); one on oversubscribed CPUs waits 30-50% (measured on the cases
//! above). [`Contention`] samples that share every [`SAMPLE_EVERY`] and calls the CPU
//! contended above a limit (`Config::contended_wait_pct`).
//!
//! A process under a CPU quota (a cgroup's CFS bandwidth limit) is the other case: when
//! its quota runs out its threads are throttled, not waiting for a CPU, so the run
//! delay stays low while every spin spends time the quota counts (measured on the
//! issue that asked for this: spinning cost 28% of two quota-bound nodes' throughput).
//! [`Throttling`] reads the cgroup's `cpu.stat` every [`THROTTLE_EVERY`]: a process
//! throttled within the last one counts as contended too.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::time::{Duration, Instant};

/// How often the run delay is read again (a `pread` of about a microsecond here).
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// How often the cgroup's throttling is read again (two small files).
pub(crate) const THROTTLE_EVERY: Duration = Duration::from_secs(1);

/// Whether this process's cgroup has lately been throttled for its CPU quota.
struct Throttling {
    /// When it was last read, and its `nr_throttled` then (`None`: no quota found).
    at: Instant,
    throttled: Option<u64>,
    /// Whether the count grew between the last two reads.
    lately: bool,
}

impl Throttling {
    fn new() -> Self {
        Throttling {
            at: Instant::now(),
            throttled: nr_throttled(),
            lately: false,
        }
    }

    /// Whether the process was throttled within the last [`THROTTLE_EVERY`] or so, at
    /// `now` (read again when the last read is that old: the process may have been
    /// moved into a cgroup since it started, as `sesa bench kv --cpu-share` does).
    fn lately(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.at) >= THROTTLE_EVERY {
            let throttled = nr_throttled();
            self.lately = matches!(
                (self.throttled, throttled),
                (Some(before), Some(after)) if after > before
            );
            self.throttled = throttled;
            self.at = now;
        }
        self.lately
    }
}

/// The number of times this process's cgroup was throttled (`nr_throttled` of its
/// `cpu.stat`, cgroup v2 or v1's cpu controller); `None` where it cannot be read.
fn nr_throttled() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let stat = stat_path(&cgroups)
        .into_iter()
        .find_map(|path| std::fs::read_to_string(path).ok())?;
    parse_nr_throttled(&stat)
}

/// Where the `cpu.stat` of the cgroup `/proc/self/cgroup` names may be.
fn stat_path(cgroups: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            paths.push(format!("/sys/fs/cgroup{path}/cpu.stat"));
        } else if controllers.split(',').any(|c| c == "cpu") {
            paths.push(format!("/sys/fs/cgroup/{controllers}{path}/cpu.stat"));
            paths.push(format!("/sys/fs/cgroup/cpu{path}/cpu.stat"));
        }
    }
    paths
}

/// `nr_throttled` from a `cpu.stat`.
fn parse_nr_throttled(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.trim().parse().ok())
}

/// The run-delay gauge of one core's thread.
pub(crate) struct Contention {
    /// `/proc/thread-self/schedstat`, opened on the core's thread (so it is that
    /// thread's); `None` where the kernel does not keep it (no `CONFIG_SCHED_INFO`), and
    /// then the CPU never counts as contended.
    schedstat: Option<File>,
    /// Contended when the thread waited more than this many percent of a sample's time.
    limit_pct: u32,
    /// When the last sample was taken, and the thread's total run delay then (ns).
    at: Instant,
    waited_ns: u64,
    /// The last sample: how long the thread waited (ns) of how long it lasted.
    last: Option<(u64, Duration)>,
    /// The process's cgroup quota, if it is throttled by one.
    throttling: Throttling,
}

impl Contention {
    /// The gauge of the calling thread (call it on the core's own thread).
    pub(crate) fn for_this_thread(limit_pct: u32) -> Self {
        let schedstat = match File::open("/proc/thread-self/schedstat") {
            Ok(file) => Some(file),
            Err(e) => {
                tracing::debug!(error = %e, "no run delay to read: idle cores always spin");
                None
            }
        };
        let mut gauge = Contention {
            schedstat,
            limit_pct,
            at: Instant::now(),
            waited_ns: 0,
            last: None,
            throttling: Throttling::new(),
        };
        gauge.waited_ns = gauge.read_waited_ns().unwrap_or(0);
        gauge
    }

    /// Whether the thread has lately waited for a CPU more than the limit allows: the
    /// last sample's verdict, sampled again when it is [`SAMPLE_EVERY`] old.
    /// Or whether the process's CPU quota throttled it lately.
    pub(crate) fn contended(&mut self) -> bool {
        let now = Instant::now();
        if self.throttling.lately(now) {
            return true;
        }
        if self.schedstat.is_none() {
            return false;
        }
        let elapsed = now.saturating_duration_since(self.at);
        if elapsed >= SAMPLE_EVERY
            && let Some(waited_ns) = self.read_waited_ns()
        {
            self.last = Some((waited_ns.saturating_sub(self.waited_ns), elapsed));
            self.at = now;
            self.waited_ns = waited_ns;
        }
        self.last
            .is_some_and(|(waited, elapsed)| over_limit(waited, elapsed, self.limit_pct))
    }

    /// The share of the last sample's time the thread waited for a CPU (percent); `None`
    /// before the first sample or where the kernel does not say.
    pub(crate) fn waited_pct(&self) -> Option<u32> {
        let (waited, elapsed) = self.last?;
        self.schedstat.as_ref()?;
        Some(share_pct(waited, elapsed))
    }

    fn read_waited_ns(&mut self) -> Option<u64> {
        let file = self.schedstat.as_ref()?;
        let mut buf = [0u8; 96];
        match file.read_at(&mut buf, 0) {
            Ok(n) => {
                let waited = parse_run_delay(&buf[..n]);
                if waited.is_none() {
                    tracing::debug!("unexpected schedstat line: idle cores always spin");
                    self.schedstat = None;
                }
                waited
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading schedstat failed: idle cores always spin");
                self.schedstat = None;
                None
            }
        }
    }
}

/// Whether `waited_ns` out of `elapsed` is more than `limit_pct` percent.
fn over_limit(waited_ns: u64, elapsed: Duration, limit_pct: u32) -> bool {
    let elapsed_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    u128::from(waited_ns) * 100 > u128::from(elapsed_ns) * u128::from(limit_pct)
}

/// `waited_ns` as a share of `elapsed`, in percent (at most 100).
fn share_pct(waited_ns: u64, elapsed: Duration) -> u32 {
    let elapsed_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
    (u128::from(waited_ns) * 100 / u128::from(elapsed_ns)).min(100) as u32
}

/// The run delay (ns) from a schedstat line: `<on-CPU ns> <run-delay ns> <timeslices>`.
fn parse_run_delay(line: &[u8]) -> Option<u64> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split_ascii_whitespace();
    fields.next()?.parse::<u64>().ok()?;
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_line() {
        assert_eq!(parse_run_delay(b"70890965 503289 107\n"), Some(503_289));
        assert_eq!(parse_run_delay(b"1 2 3"), Some(2));
        assert_eq!(parse_run_delay(b"70890965\n"), None);
        assert_eq!(parse_run_delay(b"x 2 3"), None);
        assert_eq!(parse_run_delay(b""), None);
    }

    #[test]
    fn finds_the_cgroups_cpu_stat_and_its_throttling() {
        assert_eq!(
            stat_path("0::/sesa-bench-1-2\n"),
            ["/sys/fs/cgroup/sesa-bench-1-2/cpu.stat"]
        );
        assert_eq!(
            stat_path("12:pids:/\n4:cpu:/sesa-bench-1-2\n3:cpuset:/\n"),
            [
                "/sys/fs/cgroup/cpu/sesa-bench-1-2/cpu.stat",
                "/sys/fs/cgroup/cpu/sesa-bench-1-2/cpu.stat"
            ]
        );
        assert_eq!(
            stat_path("5:cpu,cpuacct:/\n"),
            [
                "/sys/fs/cgroup/cpu,cpuacct/cpu.stat",
                "/sys/fs/cgroup/cpu/cpu.stat"
            ]
        );
        assert!(stat_path("garbage").is_empty());
        let v1 = "nr_periods 120\nnr_throttled 37\nthrottled_time 9100000\n";
        assert_eq!(parse_nr_throttled(v1), Some(37));
        let v2 = "usage_usec 100\nnr_periods 5\nnr_throttled 2\nthrottled_usec 300\n";
        assert_eq!(parse_nr_throttled(v2), Some(2));
        assert_eq!(parse_nr_throttled("usage_usec 1\n"), None);
    }

    #[test]
    fn limit_is_a_share_of_the_sample() {
        let ms10 = Duration::from_millis(10);
        assert!(!over_limit(1_000_000, ms10, 10), "10% is not over 10%");
        assert!(over_limit(1_000_001, ms10, 10));
        assert!(!over_limit(0, ms10, 0), "no wait is never over");
        assert!(over_limit(1, ms10, 0));
        // No overflow at the extremes.
        assert!(over_limit(u64::MAX, ms10, u32::MAX));
        assert!(!over_limit(u64::MAX, Duration::MAX, 100));
        assert!(!over_limit(10_000_000, ms10, 100), "100% never spins less");
        assert_eq!(share_pct(2_500_000, ms10), 25);
        assert_eq!(share_pct(20_000_000, ms10), 100, "capped");
        assert_eq!(share_pct(1, Duration::ZERO), 100);
    }

    /// Two busy threads on one CPU each wait about half the time: contended.
    #[test]
    fn sharing_a_cpu_is_contended() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let Some(cpu) = core_affinity::get_core_ids().and_then(|ids| ids.first().copied()) else {
            return; // affinity unknown here: nothing to arrange
        };
        let stop = Arc::new(AtomicBool::new(false));
        let busy = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let pinned = core_affinity::set_for_current(cpu);
                while pinned && !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
                pinned
            })
        };
        let measured = std::thread::spawn(move || {
            if !core_affinity::set_for_current(cpu) {
                return None;
            }
            let mut gauge = Contention::for_this_thread(10);
            gauge.schedstat.as_ref()?;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if gauge.contended() {
                    assert!(gauge.waited_pct().is_some_and(|pct| pct >= 10));
                    return Some(true);
                }
                std::hint::spin_loop();
            }
            Some(false)
        })
        .join()
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        let pinned = busy.join().unwrap();
        if pinned && let Some(contended) = measured {
            assert!(contended, "two busy threads on one CPU, and no wait seen");
        }
    }
}
