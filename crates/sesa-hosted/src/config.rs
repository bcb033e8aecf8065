//! How a hosted runtime is laid out on the machine.

/// Configuration of a hosted [`Runtime`](crate::Runtime). Every limit is explicit.
#[derive(Clone, Debug)]
pub struct Config {
    /// How many cores (event loops, one thread each). `None`: as many as the process may
    /// run on (`std::thread::available_parallelism`).
    pub cores: Option<usize>,
    /// Pin core `i`'s thread to the `i`-th CPU the process may use, so a core's state
    /// stays in one CPU's caches. Applies only when the node has exactly as many cores
    /// as the process may use CPUs; a smaller or larger node is left to the kernel's
    /// scheduler (pinning it would pile nodes and neighbours onto the same CPUs).
    pub pin_threads: bool,
    /// How many consecutive empty polls of its inbox (each also running the idle
    /// handlers, and yielding to the core's other tasks in between) an idle core makes
    /// before it parks. A polling core answers a cross-core event in well under a
    /// microsecond; waking a parked thread costs tens of microseconds. 0 parks at once.
    /// The spinning is gated by `contended_wait_pct`.
    pub idle_spins: u32,
    /// An idle core spins only while its thread has lately waited for a CPU at most this
    /// share (percent) of the time; above it, the machine's CPUs run more threads than
    /// they can, a spin takes the CPU from the thread that would bring work, and the
    /// core parks at once. 100 spins regardless. Measured (see `contention.rs`): about
    /// under 3% with a CPU to itself, 30-50% with three nodes and their clients on 2 CPUs.
    pub contended_wait_pct: u32,
    /// How many shipped events a core runs before letting its other tasks and I/O run.
    pub events_per_turn: usize,
    /// Stop cleanly on SIGINT and SIGTERM (a second signal exits at once). Installs
    /// process-wide handlers: leave it off for runtimes embedded in tests or libraries.
    pub handle_signals: bool,
    /// Limit of live EBBs on the node (`sesa_ebb::NodeConfig::ebbs_max`).
    pub ebbs_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cores: None,
            pin_threads: true,
            idle_spins: 2_000,
            contended_wait_pct: 10,
            events_per_turn: 64,
            handle_signals: false,
            ebbs_max: 1 << 20,
        }
    }
}

impl Config {
    /// The default configuration with `cores` cores.
    pub fn with_cores(cores: usize) -> Self {
        Config {
            cores: Some(cores),
            ..Config::default()
        }
    }

    pub(crate) fn resolved_cores(&self) -> usize {
        self.cores.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}
