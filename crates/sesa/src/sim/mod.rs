//! `sesa sim`: workloads with checkers, run on the deterministic simulator under random
//! faults, one seed at a time or in sweeps.
//!
//! Each workload runs the real executive (messenger, id map, work pool) on simulated
//! nodes (`sesa_sim`); the simulator is the only difference from production. The
//! counter and the store (`store`) run whole, frontend included (`app`:
//! `sesa_frontend::drive` with a provider of simulated nodes, so the production
//! roster, scale policy and store coordinator run under the sweeps); the id map, and
//! the store once more (`kv`: with nodes restarted under their ids, which the
//! production frontend never does), run under a harness of their own. A run:
//! 1. starts the cluster and its clients;
//! 2. for the *fault phase*, draws faults from the seed: a node crashes (and restarts
//!    later with a new generation), two nodes are cut apart (and healed), the
//!    connections between two nodes are reset (lost packets, as a stream shows them), a
//!    node joins, a node leaves on purpose; at most one node is down or cut off at a time, so each
//!    key keeps a live replica (R = 2); the counter's and the store's schedule is
//!    `app::fault_phase`'s (kills, cuts, resets, and `sesa scale` requests);
//! 3. in the *quiet phase*, heals everything, restarts what is down, and lets the
//!    cluster settle;
//! 4. checks the workload's invariants and reports counts (acknowledged, lost,
//!    indeterminate, unexpected) and any failure.
//!
//! A write whose outcome is unknown (it timed out, or its node crashed) may take effect
//! at any time after it started, also after later writes of the same key (as in Jepsen's
//! register model); the checkers allow its value as a final one. Every other write
//! acknowledged before must show: the final value is the newest acknowledged or later.
//!
//! `SESA_SIM_DEBUG=1` makes the store workload's clients print every connection and set
//! with its virtual time (for reading a replayed failure).
//!
//! For the id map and the store, the harness plays the frontend's part: it keeps the
//! roster of nodes (who is in the cluster, at which address), removes a node it crashed
//! (as the frontend does when a node's process exits or SWIM declares it down), and
//! adds a restarted one when it registers.

mod app;
mod clients;
mod counter;
mod history;
mod idmap;
mod kv;
mod names;
mod store;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use sesa_exec::{Identity, Messenger, MessengerConfig, MessengerRef, NodeId, Secret};
use sesa_sim::{NodeKey, NodeSpec, Sim, SimConfig};

/// The port every simulated node's messenger listens on.
const PORT: u16 = 7000;

/// Which workload a run drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// The global id map: no acknowledged set lost, no value read that was never
    /// written, no read older than a set acknowledged before it began.
    Idmap,
    /// The elastic counter as `sesa run counter` runs it (the production frontend, its
    /// roster and scale requests, on simulated nodes): the exact total once the faults
    /// stop.
    Counter,
    /// The data store (memcached protocol, R = 2) under a harness whose frontend lets
    /// crashed nodes rejoin under their id: no acknowledged write lost, no value read
    /// that was never written, no read older than a write acknowledged before it began.
    Kv,
    /// The data store as `sesa kv` runs it (the production frontend, its roster and
    /// scale requests, on simulated nodes): no acknowledged write lost, no value read
    /// that was never written, no read older than a write acknowledged before it began.
    Store,
    /// Global EBBs created and resolved on every node through the production frontend
    /// (its roster, its views of the nodes' id map): no name whose creation was
    /// acknowledged ever missing, or resolved to other data.
    Names,
}

impl Workload {
    /// The workloads of a sweep of all.
    pub const ALL: [Workload; 5] = [
        Workload::Idmap,
        Workload::Counter,
        Workload::Kv,
        Workload::Store,
        Workload::Names,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::Idmap => "idmap",
            Workload::Counter => "counter",
            Workload::Kv => "kv",
            Workload::Store => "store",
            Workload::Names => "names",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How wide the faults of a run are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Cuts of 0.1 to 1.5 s, shorter than failure detection, and resets on their own.
    #[default]
    Standard,
    /// Cuts from 5 ms to 20 s (log-uniform: as many short as long ones), longer than
    /// every timeout in the system: half of them start with a reset of the cut
    /// connections, a third cut one way only; and pauses of a node (its cores stop, as
    /// SIGSTOP does) as long.
    Wide,
}

/// How a cut is made.
struct Cut {
    lasting: Duration,
    reset: bool,
    one_way: bool,
}

impl Profile {
    /// How long a wide fault lasts: 5 ms * 4000^u, u uniform in [0, 1] (5 ms to 20 s).
    fn lasting(sim: &Sim) -> Duration {
        let u = sim.below(1001) as f64 / 1000.0;
        Duration::from_micros((5_000.0 * 4000f64.powf(u)) as u64)
    }

    fn cut(self, sim: &Sim) -> Cut {
        match self {
            Profile::Standard => Cut {
                lasting: Duration::from_millis(100 + sim.below(1401)),
                reset: false,
                one_way: false,
            },
            Profile::Wide => Cut {
                lasting: Self::lasting(sim),
                reset: sim.below(2) == 0,
                one_way: sim.below(3) == 0,
            },
        }
    }
}

/// Cuts `a` from `b` as the profile draws it (both ways, or from `a` to `b` only;
/// resetting their connections first, if it says so); when to heal.
fn cut(sim: &Sim, profile: Profile, faults: &mut Faults, a: u32, b: u32) -> Duration {
    let Cut {
        lasting,
        reset,
        one_way,
    } = profile.cut(sim);
    if reset {
        let n = sim.reset(ip_of(a), ip_of(b));
        faults.note(
            sim,
            "reset",
            format!("{n} connection(s) between nodes {a} and {b}"),
        );
    }
    let ms = lasting.as_millis();
    if one_way {
        sim.cut_one_way(ip_of(a), ip_of(b));
        faults.note(
            sim,
            "partition",
            format!("from node {a} to node {b} for {ms} ms"),
        );
    } else {
        sim.partition(ip_of(a), ip_of(b));
        faults.note(sim, "partition", format!("nodes {a} and {b} for {ms} ms"));
    }
    sim.now() + lasting
}

/// Pauses node `id` (life `key`) for a wide fault's time; when to resume it.
fn pause(sim: &Sim, faults: &mut Faults, id: u32, key: NodeKey) -> Option<Duration> {
    let lasting = Profile::lasting(sim);
    sim.pause(key).then(|| {
        let ms = lasting.as_millis();
        faults.note(sim, "pause", format!("node {id} for {ms} ms"));
        sim.now() + lasting
    })
}

/// What one run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// The seed: the run is a function of it.
    pub seed: u64,
    /// The workload.
    pub workload: Workload,
    /// Nodes at the start (besides the counter's frontend).
    pub nodes: u32,
    /// Cores per node.
    pub cores: usize,
    /// Virtual time of the fault phase.
    pub faults: Duration,
    /// Whether faults are injected at all (off: a baseline run).
    pub inject: bool,
    /// How wide the faults are.
    pub profile: Profile,
    /// Takes nodes away without waiting for the cluster to repair itself: two replicas
    /// of a key can then be lost at once, which R = 2 cannot survive. For checking the
    /// checkers (they must report the losses), never for judging the system.
    pub careless: bool,
    /// The store's clients delete too (every fourth write of a key is a `delete`).
    pub deletes: bool,
}

impl Options {
    /// The defaults for `workload` with `seed`.
    pub fn new(workload: Workload, seed: u64) -> Self {
        Options {
            seed,
            workload,
            nodes: 3,
            cores: 2,
            faults: Duration::from_secs(8),
            inject: true,
            profile: Profile::Standard,
            careless: false,
            deletes: false,
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "sesa sim --workload {} --seed {} --nodes {} --cores {} --fault-seconds {}",
            self.workload,
            self.seed,
            self.nodes,
            self.cores,
            self.faults.as_secs()
        );
        if !self.inject {
            cmd.push_str(" --no-faults");
        }
        if self.profile == Profile::Wide {
            cmd.push_str(" --faults wide");
        }
        if self.careless {
            cmd.push_str(" --careless");
        }
        if self.deletes {
            cmd.push_str(" --deletes");
        }
        cmd
    }
}

/// The checker's counts, as Jepsen's set checker reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Operations acknowledged as done.
    pub acknowledged: u64,
    /// Acknowledged writes the final state does not hold.
    pub lost: u64,
    /// Operations whose outcome is unknown (timed out, or their node crashed).
    pub indeterminate: u64,
    /// Operations that failed cleanly (an error reply).
    pub failed: u64,
    /// Values read that no operation ever wrote.
    pub unexpected: u64,
    /// Reads older than a write acknowledged before the read began (the store's
    /// clients: every read is judged, not only the final ones).
    pub stale: u64,
}

/// How a run went.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The workload's name.
    pub workload: String,
    /// The hash of the run's schedule (the same seed gives the same hash).
    pub trace_hash: String,
    /// Virtual time the run took.
    pub virtual_ms: u64,
    /// Scheduler turns.
    pub turns: u64,
    /// Faults injected: (what, count).
    pub faults: BTreeMap<&'static str, u64>,
    /// The checker's counts.
    pub counts: Counts,
    /// Broken invariants; empty when the run passed.
    pub failures: Vec<String>,
    /// The faults as they happened, with their virtual times.
    pub events: Vec<String>,
    /// The command that replays the run.
    pub replay: String,
}

impl Outcome {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs one seed of one workload.
pub fn run(options: &Options) -> Outcome {
    let sim = Sim::new(SimConfig::with_seed(options.seed));
    let mut faults = Faults::default();
    let (counts, mut failures) = match options.workload {
        Workload::Idmap => idmap::run(&sim, options, &mut faults),
        Workload::Counter => counter::run(&sim, options, &mut faults),
        Workload::Kv => kv::run(&sim, options, &mut faults),
        Workload::Store => store::run(&sim, options, &mut faults),
        Workload::Names => names::run(&sim, options, &mut faults),
    };
    for panic in sim.panics() {
        failures.push(format!("a node panicked: {panic}"));
    }
    Outcome {
        seed: options.seed,
        workload: options.workload.to_string(),
        trace_hash: format!("{:016x}", sim.trace_hash()),
        virtual_ms: sim.now().as_millis() as u64,
        turns: sim.turns(),
        faults: faults.counts,
        counts,
        failures,
        events: faults.events,
        replay: options.replay_command(),
    }
}

/// The address of node `id` on the simulated network.
/// A client's own random stream (xorshift64*), seeded from the platform: the seed's.
fn random_stream() -> impl FnMut() -> u64 {
    let mut rng = sesa_event::random_u64() | 1;
    move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn ip_of(id: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, (id >> 8) as u8, id as u8)
}

fn spec(id: u32, cores: usize) -> NodeSpec {
    NodeSpec {
        id,
        cores,
        ip: ip_of(id),
    }
}

/// The cluster secret of every simulated node.
fn secret() -> Secret {
    Secret::from_bytes([0x5e; 32])
}

/// A node's messenger, listening on its address.
async fn messenger(id: u32, generation: u64) -> Option<MessengerRef> {
    let me = Identity {
        node: NodeId::new(id),
        generation,
    };
    let messenger = Messenger::create(MessengerConfig::new(me, secret())).ok()?;
    messenger
        .listen(SocketAddr::new(ip_of(id).into(), PORT))
        .await
        .ok()?;
    Some(messenger)
}

/// Who is in the cluster: the harness's (the frontend's) roster, which the nodes follow.
struct Roster<M> {
    version: Cell<u64>,
    members: RefCell<BTreeMap<u32, M>>,
}

impl<M> Default for Roster<M> {
    fn default() -> Self {
        Roster {
            version: Cell::new(0),
            members: RefCell::new(BTreeMap::new()),
        }
    }
}

impl<M: Clone> Roster<M> {
    fn insert(&self, id: u32, member: M) {
        self.members.borrow_mut().insert(id, member);
        self.version.set(self.version.get() + 1);
    }

    fn remove(&self, id: u32) -> bool {
        let removed = self.members.borrow_mut().remove(&id).is_some();
        if removed {
            self.version.set(self.version.get() + 1);
        }
        removed
    }

    fn ids(&self) -> Vec<u32> {
        self.members.borrow().keys().copied().collect()
    }

    fn snapshot(&self) -> (u64, BTreeMap<u32, M>) {
        (self.version.get(), self.members.borrow().clone())
    }
}

/// Connects to every node in `ids` below `me` that `messenger` has no connection to
/// (one connection per pair: the higher id dials the lower).
async fn mesh(messenger: MessengerRef, me: u32, ids: impl Iterator<Item = u32>) {
    let Ok(peers) = messenger.peers().await else {
        return;
    };
    for id in ids.filter(|&id| id < me) {
        if !peers.iter().any(|p| p.node.get() == id) {
            let addr = SocketAddr::new(ip_of(id).into(), PORT);
            // Refused or timed out: the next round tries again.
            let _ = messenger.connect(addr).await;
        }
    }
}

/// The faults of a run: counts by kind, and each with its time.
#[derive(Default)]
struct Faults {
    counts: BTreeMap<&'static str, u64>,
    events: Vec<String>,
}

impl Faults {
    fn note(&mut self, sim: &Sim, kind: &'static str, what: String) {
        *self.counts.entry(kind).or_default() += 1;
        self.events
            .push(format!("{:>8.3} s  {kind} {what}", sim.now().as_secs_f64()));
    }
}

/// One node's lives, as the fault schedule sees them.
#[derive(Clone, Copy, Debug)]
struct Life {
    key: NodeKey,
    generation: u64,
}

/// A fault the schedule is waiting to undo.
#[derive(Clone, Copy, Debug)]
enum Pending {
    Restart { id: u32, at: Duration },
    Heal { at: Duration },
    Resume { key: NodeKey, at: Duration },
}

/// What a workload does when the schedule changes the cluster.
trait Cluster {
    /// Starts (or restarts) node `id` with `generation`.
    fn start(&mut self, sim: &Sim, id: u32, generation: u64) -> NodeKey;
    /// Life `generation` of node `id` was crashed by the schedule (the frontend
    /// notices).
    fn lost(&mut self, sim: &Sim, id: u32, generation: u64);
    /// Node `id` is asked to leave on purpose; `false` if the workload has no planned
    /// leave for it now.
    fn leave(&mut self, sim: &Sim, id: u32) -> bool;
    /// Nodes the schedule may crash, cut off or ask to leave.
    fn faultable(&self) -> Vec<u32>;
    /// Nodes a partition may cut a faultable node off from.
    fn reachable(&self) -> Vec<u32>;
    /// Whether the cluster has repaired itself since the last change (every key back to
    /// its R replicas): only then may the schedule take a node away again, so that at
    /// most one replica of a key is lost at a time.
    fn settled(&self) -> bool;
}

/// Runs the fault phase on `cluster`, then the start of the quiet phase (everything
/// healed, every node that is down restarted). Counts the faults into `faults`.
fn fault_phase(
    sim: &Sim,
    options: &Options,
    cluster: &mut dyn Cluster,
    lives: &mut BTreeMap<u32, Life>,
    faults: &mut Faults,
) {
    let end = sim.now() + options.faults;
    // Faults waiting to be undone: one at a time (two only in careless runs).
    let mut pending: Vec<Pending> = Vec::new();
    let mut next_id = lives.keys().max().copied().unwrap_or(0) + 1;
    let draw = |lo: u64, hi: u64| Duration::from_millis(lo + sim.below(hi - lo + 1));
    let restart = |cluster: &mut dyn Cluster,
                   lives: &mut BTreeMap<u32, Life>,
                   faults: &mut Faults,
                   id: u32| {
        let generation = lives.get(&id).map_or(1, |l| l.generation + 1);
        let key = cluster.start(sim, id, generation);
        lives.insert(id, Life { key, generation });
        faults.note(
            sim,
            "restart",
            format!("node {id} (generation {generation})"),
        );
    };
    while sim.now() < end {
        sim.run_for(draw(50, 400));
        if !options.inject {
            continue;
        }
        // Undo the pending faults when due; the next fault comes in a later round.
        let before = pending.len();
        for p in std::mem::take(&mut pending) {
            match p {
                Pending::Restart { id, at } if sim.now() >= at => {
                    restart(cluster, lives, faults, id);
                }
                Pending::Heal { at } if sim.now() >= at => {
                    sim.heal();
                    faults.note(sim, "heal", String::new());
                }
                Pending::Resume { key, at } if sim.now() >= at => {
                    sim.resume(key);
                    faults.note(sim, "resume", String::new());
                }
                p => pending.push(p),
            }
        }
        if !pending.is_empty() || pending.len() != before {
            continue;
        }
        let candidates = cluster.faultable();
        if candidates.is_empty() {
            continue;
        }
        let victim = candidates[sim.below(candidates.len() as u64) as usize];
        let settled = options.careless || cluster.settled();
        match sim.below(10) {
            0..=2 if settled => {
                // A careless run takes a second node with the first.
                let second = candidates
                    .iter()
                    .copied()
                    .find(|&c| c != victim)
                    .filter(|_| options.careless);
                for id in std::iter::once(victim).chain(second) {
                    if let Some(life) = lives.get(&id).copied()
                        && sim.crash(life.key)
                    {
                        cluster.lost(sim, id, life.generation);
                        faults.note(sim, "crash", format!("node {id}"));
                        pending.push(Pending::Restart {
                            id,
                            at: sim.now() + draw(200, 2000),
                        });
                    }
                }
            }
            3..=5 => {
                if let Some(other) = other_than(sim, cluster, victim) {
                    let at = cut(sim, options.profile, faults, victim, other);
                    pending.push(Pending::Heal { at });
                }
            }
            8 => {
                // Lost packets, as a stream shows them: its connections reset.
                if let Some(other) = other_than(sim, cluster, victim) {
                    let n = sim.reset(ip_of(victim), ip_of(other));
                    faults.note(
                        sim,
                        "reset",
                        format!("{n} connection(s) between nodes {victim} and {other}"),
                    );
                }
            }
            6 => {
                let id = next_id;
                next_id += 1;
                let key = cluster.start(sim, id, 1);
                lives.insert(id, Life { key, generation: 1 });
                faults.note(sim, "join", format!("node {id}"));
            }
            7 if settled && cluster.leave(sim, victim) => {
                faults.note(sim, "leave", format!("node {victim}"));
            }
            9 if options.profile == Profile::Wide => {
                if let Some(life) = lives.get(&victim).copied()
                    && let Some(at) = pause(sim, faults, victim, life.key)
                {
                    pending.push(Pending::Resume { key: life.key, at });
                }
            }
            _ => {}
        }
    }
    // Quiet: heal, and bring back the nodes that are down.
    sim.heal();
    faults.note(sim, "quiet", "(healed)".into());
    for p in pending {
        match p {
            Pending::Restart { id, .. } => restart(cluster, lives, faults, id),
            Pending::Resume { key, .. } => sim.resume(key),
            Pending::Heal { .. } => {}
        }
    }
}

/// A node `victim` can be cut off from, drawn with the run's generator.
fn other_than(sim: &Sim, cluster: &dyn Cluster, victim: u32) -> Option<u32> {
    let others: Vec<u32> = cluster
        .reachable()
        .into_iter()
        .filter(|&i| i != victim)
        .collect();
    (!others.is_empty()).then(|| others[sim.below(others.len() as u64) as usize])
}

/// Runs `seeds` of `workloads` on `jobs` threads (each simulation is single-threaded
/// and independent, so they run side by side) and calls `each` with every outcome, in
/// seed order whatever the order they finish in. Returns the failed ones.
pub fn sweep(
    workloads: &[Workload],
    seeds: std::ops::Range<u64>,
    base: &Options,
    jobs: usize,
    mut each: impl FnMut(&Outcome),
) -> Vec<Outcome> {
    let runs: Vec<Options> = seeds
        .flat_map(|seed| {
            workloads.iter().map(move |&workload| Options {
                seed,
                workload,
                ..base.clone()
            })
        })
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (done, results) = std::sync::mpsc::channel::<(usize, Outcome)>();
    let mut failed = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, runs.len().max(1)) {
            let (runs, next, done) = (&runs, &next, done.clone());
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(options) = runs.get(i) else { break };
                    if done.send((i, run(options))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done);
        // Report in order: hold outcomes that finish before their predecessors.
        let mut held = BTreeMap::new();
        let mut reported = 0;
        for (i, outcome) in results {
            held.insert(i, outcome);
            while let Some(outcome) = held.remove(&reported) {
                each(&outcome);
                if !outcome.passed() {
                    failed.push(outcome);
                }
                reported += 1;
            }
        }
    });
    failed
}
