//! CPU shares for a benchmark's node processes: each node in a control group of its own
//! with a CFS bandwidth quota (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`), so that N
//! nodes get N machines' worth of CPU instead of sharing this one's two. Without it,
//! adding a node to a store on one small machine only divides the same CPUs further.
//!
//! [`NodeShares`] watches the node processes (a frontend's children, launched at the
//! start or later, by a scale; or a single-process store) and puts each new one in its
//! group; dropping it moves them back
//! to the root group and removes the groups. Making groups needs root and a writable cpu
//! controller: where there is none, [`NodeShares::start`] says why, and the benchmark
//! stops rather than measure something else.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};

/// The CFS period the quotas are set against (longer where a share needs it: a quota
/// is at least 1 ms). Short, so that a node out of its quota stalls for a few
/// milliseconds, as a slower machine would delay it, rather than for most of a 100 ms
/// period (the default), which stalls every client waiting on that node at once: a
/// client that sends to every node then waits for whichever is throttled.
const PERIOD_US: u64 = 10_000;

/// How often the watcher looks for new node processes.
const WATCH: Duration = Duration::from_millis(20);

/// The cpu controller's hierarchy.
#[derive(Clone, Debug)]
enum Hierarchy {
    /// cgroup v2: one tree, `cpu.max`.
    V2(PathBuf),
    /// cgroup v1: the cpu controller's own tree, `cpu.cfs_quota_us`.
    V1(PathBuf),
}

impl Hierarchy {
    /// The cpu controller mounted here, if it can be written to.
    fn find() -> anyhow::Result<Hierarchy> {
        let v2 = Path::new("/sys/fs/cgroup");
        let controllers = std::fs::read_to_string(v2.join("cgroup.controllers"));
        if let Ok(controllers) = controllers {
            if !controllers.split_whitespace().any(|c| c == "cpu") {
                bail!(
                    "cgroup v2 is mounted at {} without the cpu controller",
                    v2.display()
                );
            }
            // Groups made below the root get the cpu controller only if the root hands
            // it down (often already so).
            let subtree = v2.join("cgroup.subtree_control");
            let handed = std::fs::read_to_string(&subtree).unwrap_or_default();
            if !handed.split_whitespace().any(|c| c == "cpu") {
                std::fs::write(&subtree, "+cpu").with_context(|| {
                    format!("enabling the cpu controller in {}", subtree.display())
                })?;
            }
            return Ok(Hierarchy::V2(v2.to_owned()));
        }
        for dir in ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"] {
            let dir = Path::new(dir);
            if dir.join("cpu.cfs_quota_us").exists() {
                return Ok(Hierarchy::V1(dir.to_owned()));
            }
        }
        bail!("no cpu controller found under /sys/fs/cgroup (neither cgroup v2 nor v1's cpu)")
    }

    fn root(&self) -> &Path {
        match self {
            Hierarchy::V2(root) | Hierarchy::V1(root) => root,
        }
    }

    /// Makes group `name` limited to `share` CPUs.
    fn make(&self, name: &str, share: f64) -> anyhow::Result<PathBuf> {
        let group = self.root().join(name);
        std::fs::create_dir(&group).with_context(|| format!("making {}", group.display()))?;
        let period = PERIOD_US.max((1_000.0 / share).ceil() as u64);
        let quota = ((share * period as f64).round() as u64).max(1_000);
        let set = |file: &str, value: String| {
            std::fs::write(group.join(file), &value)
                .with_context(|| format!("writing {value} to {}", group.join(file).display()))
        };
        let limited = match self {
            Hierarchy::V2(_) => set("cpu.max", format!("{quota} {period}")),
            Hierarchy::V1(_) => set("cpu.cfs_period_us", period.to_string())
                .and_then(|()| set("cpu.cfs_quota_us", quota.to_string())),
        };
        if let Err(e) = limited {
            let _ = std::fs::remove_dir(&group);
            return Err(e);
        }
        Ok(group)
    }

    /// Moves process `pid` (every thread of it) into `group`.
    fn enter(group: &Path, pid: u32) -> anyhow::Result<()> {
        std::fs::write(group.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving process {pid} into {}", group.display()))
    }

    /// Moves what is left in `group` back to the root, then removes it (a process still
    /// exiting may hold it for a moment: tried for up to a second).
    fn remove(&self, group: &Path) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(self.root().join("cgroup.procs"), pid);
            }
            if std::fs::remove_dir(group).is_ok() || !group.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "sesa: could not remove {} (remove it by hand)",
            group.display()
        );
    }
}

/// What the watcher did: the groups it made (node pid, group), and the first error.
#[derive(Default)]
struct Made {
    groups: Vec<(u32, PathBuf)>,
    error: Option<String>,
}

/// Each node process of a frontend in a CPU share of its own, while this lives.
pub struct NodeShares {
    hierarchy: Hierarchy,
    made: Arc<Mutex<Made>>,
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl NodeShares {
    /// Gives every process `nodes` returns, now and later (it is asked again and
    /// again: a frontend's children, say), `share` CPUs of its own (0.15: 15 ms of CPU
    /// time per 100 ms).
    ///
    /// # Errors
    /// `share` is not positive, or no cpu controller can be written to here (not root,
    /// none mounted): the message says which.
    pub fn start(
        nodes: impl Fn() -> Vec<u32> + Send + 'static,
        share: f64,
    ) -> anyhow::Result<NodeShares> {
        if !(share > 0.0 && share.is_finite()) {
            bail!("a CPU share must be a positive number of CPUs, not {share}");
        }
        let hierarchy = Hierarchy::find().context("cannot give nodes CPU shares of their own")?;
        // One group is made and removed first: a hierarchy we may not write to fails
        // here, with its reason, instead of in the watcher.
        let probe = format!("sesa-bench-{}-probe", std::process::id());
        let group = hierarchy
            .make(&probe, share)
            .context("cannot give nodes CPU shares of their own")?;
        hierarchy.remove(&group);
        let made = Arc::new(Mutex::new(Made::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (hierarchy, made, stop) = (hierarchy.clone(), made.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for pid in nodes() {
                        let mut m = made.lock().unwrap_or_else(|p| p.into_inner());
                        if m.groups.iter().any(|(p, _)| *p == pid) {
                            continue;
                        }
                        let name = format!("sesa-bench-{}-{pid}", std::process::id());
                        let entered = hierarchy.make(&name, share).and_then(|group| {
                            m.groups.push((pid, group.clone()));
                            Hierarchy::enter(&group, pid)
                        });
                        if let Err(e) = entered {
                            m.error.get_or_insert(format!("{e:#}"));
                        }
                    }
                    std::thread::sleep(WATCH);
                }
            })
        };
        Ok(NodeShares {
            hierarchy,
            made,
            stop,
            watcher: Some(watcher),
        })
    }

    /// How many node processes are in a share of their own.
    ///
    /// # Errors
    /// One could not be put in its share (the figures would be of unequal nodes).
    pub fn limited(&self) -> anyhow::Result<usize> {
        let m = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = &m.error {
            bail!("a node could not be given its CPU share: {e}");
        }
        Ok(m.groups.len())
    }

    /// Waits up to `within` until `nodes` node processes are in their shares.
    ///
    /// # Errors
    /// Fewer were after `within`, or one could not be.
    pub fn wait_for(&self, nodes: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + within;
        while self.limited()? < nodes {
            if std::time::Instant::now() > deadline {
                bail!(
                    "only {} of {nodes} node processes were in their CPU shares after {within:?}",
                    self.limited()?
                );
            }
            std::thread::sleep(WATCH);
        }
        Ok(())
    }

    /// Which cgroup version the shares are made with, for reports.
    pub fn kind(&self) -> &'static str {
        match self.hierarchy {
            Hierarchy::V2(_) => "cgroup v2 cpu.max",
            Hierarchy::V1(_) => "cgroup v1 cpu.cfs_quota_us",
        }
    }
}

impl Drop for NodeShares {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
        let m = self.made.lock().unwrap_or_else(|p| p.into_inner());
        for (_, group) in &m.groups {
            self.hierarchy.remove(group);
        }
    }
}
