//! The global id map under faults: no acknowledged set lost, no value read that was
//! never written.
//!
//! Every node runs the executive's `GlobalIdMap` (R = 2) and a client. A client writes
//! only its own keys (four per node id), one set at a time, with values that only grow,
//! and reads any key. So for each key the final value must be one that some set wrote
//! (else: *unexpected*), and not older than the newest acknowledged set (else: *lost*).

use std::collections::{BTreeMap, BTreeSet};

use sesa_exec::GlobalIdMap;
use sesa_exec::idmap::Member;

use super::history::{History, InFlight};
use super::*;

/// Keys each node id writes.
const KEYS_PER_WRITER: u64 = 4;
/// A client gives up on an operation after this (its outcome is then unknown).
const OP_LIMIT: Duration = Duration::from_secs(2);
/// How long the cluster has to settle after the faults stop, before the final reads.
const SETTLE: Duration = Duration::from_secs(3);

/// An id map value: the 8 bytes of a `u64`, little-endian.
fn decode(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_le_bytes)
}

#[derive(Default)]
struct Shared {
    roster: Roster<Member>,
    history: RefCell<History<u64>>,
    /// Node ids that have written (their keys are read by every client).
    writers: RefCell<BTreeSet<u32>>,
    /// Set when the clients must stop (before the final reads).
    quiet: Cell<bool>,
    /// The final reads: requested, then filled by a member.
    check: RefCell<Option<BTreeMap<u64, Option<Vec<u8>>>>>,
    check_started: Cell<bool>,
    check_done: Cell<bool>,
    /// The roster version each node last finished rebalancing for.
    rebalanced: RefCell<BTreeMap<u32, u64>>,
    /// The roster version each node last installed.
    installed: RefCell<BTreeMap<u32, u64>>,
    /// Nodes asked to leave that have not handed their keys over yet.
    leaving: RefCell<BTreeSet<u32>>,
    /// The newest roster version every member finished rebalancing for, and its
    /// members (the id map's settled view).
    settled: RefCell<(u64, Vec<Member>)>,
}

impl Shared {
    /// Whether every one of `members` finished rebalancing for roster `version`.
    fn rebalanced_all(&self, version: u64, members: &BTreeMap<u32, Member>) -> bool {
        let done = self.rebalanced.borrow();
        members.keys().all(|id| done.get(id) == Some(&version))
    }
}

struct IdMapCluster {
    shared: Rc<Shared>,
    cores: usize,
}

impl Cluster for IdMapCluster {
    fn start(&mut self, sim: &Sim, id: u32, generation: u64) -> NodeKey {
        let shared = self.shared.clone();
        sim.start_node(spec(id, self.cores), move || {
            node_main(shared, id, generation)
        })
    }

    fn lost(&mut self, _sim: &Sim, id: u32, _generation: u64) {
        self.shared.roster.remove(id);
        self.shared.leaving.borrow_mut().remove(&id);
    }

    fn leave(&mut self, _sim: &Sim, id: u32) -> bool {
        // Keep at least two members, so every key keeps two replicas.
        if self.shared.roster.members.borrow().len() <= 2 {
            return false;
        }
        self.shared.leaving.borrow_mut().insert(id);
        self.shared.roster.remove(id)
    }

    fn faultable(&self) -> Vec<u32> {
        self.shared.roster.ids()
    }

    fn reachable(&self) -> Vec<u32> {
        self.faultable()
    }

    fn settled(&self) -> bool {
        let (version, members) = self.shared.roster.snapshot();
        self.shared.leaving.borrow().is_empty() && self.shared.rebalanced_all(version, &members)
    }
}

pub(super) fn run(sim: &Sim, options: &Options, faults: &mut Faults) -> (Counts, Vec<String>) {
    let shared = Rc::new(Shared::default());
    let mut cluster = IdMapCluster {
        shared: shared.clone(),
        cores: options.cores,
    };
    let mut lives = BTreeMap::new();
    for id in 1..=options.nodes.max(2) {
        let key = cluster.start(sim, id, 1);
        lives.insert(id, Life { key, generation: 1 });
    }
    fault_phase(sim, options, &mut cluster, &mut lives, faults);
    // Quiet: clients stop, in-flight operations end, replicas settle.
    shared.quiet.set(true);
    sim.run_for(SETTLE);
    *shared.check.borrow_mut() = Some(BTreeMap::new());
    let finished = sim.run_until(Duration::from_secs(60), || shared.check_done.get());
    let mut history = std::mem::take(&mut *shared.history.borrow_mut());
    if !finished {
        history.fail("the final reads did not finish in 60 s of virtual time".into());
    }
    let reads = shared.check.borrow_mut().take().unwrap_or_default();
    history.finish(&reads, decode)
}

async fn node_main(shared: Rc<Shared>, id: u32, generation: u64) {
    let Some(messenger) = messenger(id, generation).await else {
        return;
    };
    let Ok(map) = GlobalIdMap::start(messenger, NodeId::new(id), 2).await else {
        return;
    };
    // Registration: the node is in the cluster from here on.
    shared.roster.insert(id, map.member());
    // The node's client starts once the map is up: a settled view known to it.
    let mut client_task = None;
    let (mut seen, mut seen_settled) = (None, None);
    loop {
        let (version, members) = shared.roster.snapshot();
        if !members.contains_key(&id) {
            // Asked to leave: hand our keys to the members that stay, then stop.
            mesh(messenger, id, members.keys().copied()).await;
            map.set_members(version, members.values().copied().collect());
            if let Some(Ok(_)) = sesa_event::timeout(OP_LIMIT * 5, map.rebalance()).await {
                shared.leaving.borrow_mut().remove(&id);
                return;
            }
            sesa_event::sleep(Duration::from_millis(20)).await;
            continue;
        }
        mesh(messenger, id, members.keys().copied()).await;
        if seen != Some(version) {
            map.set_members(version, members.values().copied().collect());
            shared.installed.borrow_mut().insert(id, version);
            if let Some(Ok(_)) = sesa_event::timeout(OP_LIMIT * 5, map.rebalance()).await {
                seen = Some(version);
                shared.rebalanced.borrow_mut().insert(id, version);
                if shared.rebalanced_all(version, &members) && shared.settled.borrow().0 < version {
                    *shared.settled.borrow_mut() = (version, members.values().copied().collect());
                }
            }
        }
        // The roster is the cluster's authority: a view every member installed is
        // acted on.
        let all_installed = {
            let installed = shared.installed.borrow();
            members.keys().all(|m| installed.get(m) == Some(&version))
        };
        if all_installed {
            map.activate(version);
        }
        let settled = shared.settled.borrow().clone();
        if seen_settled != Some(settled.0) {
            seen_settled = Some(settled.0);
            map.set_settled(settled.1);
        }
        if client_task.is_none() && settled.0 > 0 {
            client_task = Some(sesa_event::spawn_local(client(
                shared.clone(),
                map.clone(),
                id,
            )));
        }
        if members.keys().next() == Some(&id) && !shared.check_started.get() {
            let requested = shared.check.borrow().is_some();
            if requested {
                shared.check_started.set(true);
                final_reads(&shared, &map).await;
            }
        }
        sesa_event::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every key ever written, retrying each until a replica answers.
async fn final_reads(shared: &Shared, map: &GlobalIdMap) {
    let keys: Vec<u64> = shared.history.borrow().keys();
    for key in keys {
        for _ in 0..10 {
            if let Some(Ok(got)) = sesa_event::timeout(OP_LIMIT, map.get(key)).await {
                if let Some(check) = shared.check.borrow_mut().as_mut() {
                    check.insert(key, got.map(|v| v.value));
                }
                break;
            }
        }
    }
    shared.check_done.set(true);
}

async fn client(shared: Rc<Shared>, map: GlobalIdMap, id: u32) {
    shared.writers.borrow_mut().insert(id);
    let debug = std::env::var_os("SESA_SIM_DEBUG").is_some();
    let mut rng = sesa_event::random_u64();
    let mut next = move || {
        // xorshift64*: the client's own stream, seeded from the platform (the seed).
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    while !shared.quiet.get() {
        if next() % 2 == 0 {
            let key = u64::from(id) * 16 + next() % KEYS_PER_WRITER;
            let op = InFlight::begin(&shared.history, key);
            let value = op.value.to_le_bytes().to_vec();
            let r = sesa_event::timeout(OP_LIMIT, map.set(key, value)).await;
            if debug {
                eprintln!("{:?} node {id} set key {key}: {r:?}", sesa_event::now());
            }
            match r {
                Some(Ok(_)) => op.acked(),
                Some(Err(_)) => op.failed(),
                None => {} // Unknown (recorded when `op` drops).
            }
        } else {
            let writers: Vec<u32> = shared.writers.borrow().iter().copied().collect();
            let writer = writers[(next() % writers.len() as u64) as usize];
            let key = u64::from(writer) * 16 + next() % KEYS_PER_WRITER;
            // Every read is judged: it may not be older than a set acknowledged before
            // it began (the map is to be linearizable per key).
            let floor = shared.history.borrow().floor(&key);
            match sesa_event::timeout(OP_LIMIT, map.get(key)).await {
                Some(Ok(Some(got))) => {
                    let value = decode(&got.value);
                    let mut history = shared.history.borrow_mut();
                    history.read_since(&key, floor, value, Some(&got.value));
                }
                Some(Ok(None)) => {
                    if debug {
                        eprintln!(
                            "{:?} node {id} read key {key}: nothing (floor {floor:?})",
                            sesa_event::now()
                        );
                    }
                    shared
                        .history
                        .borrow_mut()
                        .read_since(&key, floor, None, None)
                }
                _ => {}
            }
        }
        let pause = Duration::from_millis(5 + next() % 45);
        sesa_event::sleep(pause).await;
    }
}
