//! The data store under faults, run as `sesa kv --nodes N` runs it: the production
//! frontend (its roster, SWIM, the store's coordinator and view changes, `sesa scale`
//! through the admin service) and the store application (`sesa_kv::Kv`) on simulated
//! nodes ([`super::app`]), with the clients of `super::clients`, which find the nodes
//! where the frontend's console says they serve. The checker: no acknowledged write
//! lost and no value read that was never written.
//!
//! Unlike the `kv` workload's harness, a node here is never restarted under its id (the
//! frontend never takes a lost id back); lost nodes are replaced by scale requests.

use std::collections::{BTreeMap, BTreeSet};

use sesa_apps::memcache::cluster::{Layout, Placement};
use sesa_frontend::Event;
use sesa_kv::KvFrontend;
use sesa_kv::{Kv, KvSettings};
use sesa_node::app::Apps;

use super::app::{self, AppRun, Watch};
use super::clients::{self, Clients, decode};
use super::*;

/// The clients' machine (not one of the frontend's nodes).
const CLIENTS: u32 = 190;
/// How long the store has after the faults stop before it must have settled.
const SETTLE: Duration = Duration::from_secs(3);

fn apps() -> Apps {
    Apps::new().with::<Kv>()
}

/// What the workload watches: where nodes serve (for the clients), and whether the
/// store has repaired itself since its last change (only then may a node be killed:
/// R = 2 survives one loss at a time).
#[derive(Default)]
struct Store {
    clients: Rc<Clients>,
    /// The last view's members.
    members: BTreeSet<NodeId>,
    /// Nodes started or joined and not in the last view yet.
    joined: BTreeSet<NodeId>,
    /// Members of the last view that were lost or are leaving.
    gone: BTreeSet<NodeId>,
    /// Whether the last view settled (every key on its owners).
    settled: bool,
}

impl Store {
    /// The last view settled, and no node is on its way in or out.
    fn quiet(&self) -> bool {
        self.settled && self.joined.is_empty() && self.gone.is_empty()
    }
}

impl Watch for Store {
    fn events(&mut self, events: &[Event]) {
        let mut serving = self.clients.serving.borrow_mut();
        for event in events {
            match event {
                Event::Serving { node, addr } => {
                    serving.insert(*node, *addr);
                }
                Event::Started { node, .. } | Event::Joined { node, .. } => {
                    self.joined.insert(*node);
                }
                Event::Lost { node, .. } | Event::Leaving { node } | Event::Left { node } => {
                    serving.remove(node);
                    // A node lost before it was in a view changes no view.
                    self.joined.remove(node);
                    if self.members.contains(node) {
                        self.gone.insert(*node);
                    }
                }
                Event::View {
                    members, settled, ..
                } => {
                    self.members = members.iter().copied().collect();
                    self.joined.retain(|n| !self.members.contains(n));
                    self.gone.retain(|n| self.members.contains(n));
                    self.settled = *settled;
                }
                _ => {}
            }
        }
    }

    /// Once every key is on two owners (R = 2): the last view settled with two members
    /// or more, and no node is on its way in or out.
    fn may_kill(&self) -> bool {
        self.quiet() && self.members.len() >= 2
    }

    fn killed(&mut self, node: u32) {
        let node = NodeId::new(node);
        self.clients.serving.borrow_mut().remove(&node);
        self.joined.remove(&node);
        if self.members.contains(&node) {
            self.gone.insert(node);
        }
    }
}

pub(super) fn run(sim: &Sim, options: &Options, faults: &mut Faults) -> (Counts, Vec<String>) {
    let nodes = options.nodes.max(2);
    let settings = settings(64 << 20, 1024);
    let mut run = AppRun::<KvFrontend>::start(sim, nodes, options.cores, apps, settings);
    let clients = Rc::new(Clients::default());
    clients.deletes.set(options.deletes);
    let mut store = Store {
        clients: clients.clone(),
        ..Store::default()
    };
    // Settled for the final reads: a settled view, nothing since, and the frontend has
    // heard of every node that ended (it may be busy with a change meanwhile).
    let settled = |run: &AppRun<KvFrontend>, store: &Store| store.quiet() && !run.exits_unheard();
    let mut failures = Vec::new();
    if !come_up(sim, &mut run, &mut store) {
        failures.push("the store was not up in 30 s of virtual time".into());
    }
    {
        let clients = clients.clone();
        sim.start_node(spec(CLIENTS, 1), move || clients::clients(clients));
    }
    app::fault_phase(sim, options, &mut run, &mut store, faults);
    clients.quiet.set(true);
    run.step(sim, SETTLE, &mut store);
    let limit = sim.now() + Duration::from_secs(60);
    let mut quiet_since = sim.now();
    while sim.now() < limit {
        run.step(sim, Duration::from_millis(20), &mut store);
        if !settled(&run, &store) {
            quiet_since = sim.now();
        } else if sim.now() - quiet_since >= Duration::from_secs(2) {
            break;
        }
    }
    let settled = settled(&run, &store);
    *clients.check.borrow_mut() = Some(BTreeMap::new());
    let limit = sim.now() + Duration::from_secs(60);
    while !clients.check_done.get() && sim.now() < limit {
        run.step(sim, Duration::from_millis(20), &mut store);
    }
    let mut history = std::mem::take(&mut *clients.history.borrow_mut());
    if let Some(Err(e)) = run.result.borrow().as_ref() {
        failures.push(format!("the frontend failed: {e:#}"));
    }
    if !settled {
        failures.push("the store did not settle in 60 s of virtual time after the faults".into());
    }
    if !clients.check_done.get() {
        failures.push("the final reads did not finish in 60 s of virtual time".into());
    }
    for f in failures {
        history.fail(f);
    }
    let reads = clients.check.borrow_mut().take().unwrap_or_default();
    history.finish(&reads, decode)
}

/// The store's settings in a simulation: R = 2, partitioned, items of `memory_bytes`.
fn settings(memory_bytes: usize, max_connections: u64) -> KvSettings {
    KvSettings {
        port: 0,
        listen: [127, 0, 0, 1].into(),
        memory_bytes,
        item_max: 1 << 20,
        max_connections,
        replicas: 2,
        layout: Layout::Partitioned,
        placement: Placement::Rendezvous,
        advertise: None,
    }
}

/// Runs until the store is up (its first view settled on two nodes or more), for up to
/// 30 s of virtual time; whether it is.
fn come_up(sim: &Sim, run: &mut AppRun<KvFrontend>, store: &mut Store) -> bool {
    let up = sim.now() + Duration::from_secs(30);
    while !store.may_kill() && sim.now() < up {
        run.step(sim, Duration::from_millis(20), store);
    }
    store.may_kill()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `sesa sim --workload store` (34 of 200 seeds lost every node): a node
    /// whose connection to the frontend was reset ended, and with it the last copy of
    /// its keys. It dials the frontend again instead, and stays.
    #[test]
    fn a_node_whose_frontend_connection_resets_reconnects_and_stays() {
        let sim = Sim::new(sesa_sim::SimConfig::with_seed(1));
        let mut run = AppRun::<KvFrontend>::start(&sim, 2, 1, apps, settings(16 << 20, 64));
        let mut store = Store::default();
        assert!(
            come_up(&sim, &mut run, &mut store),
            "the store did not come up"
        );
        assert_eq!(sim.reset(ip_of(1), ip_of(0)), 1);
        for _ in 0..250 {
            run.step(&sim, Duration::from_millis(20), &mut store);
        }
        let lost: Vec<String> = run
            .event_lines()
            .into_iter()
            .filter(|l| l.contains("exited") || l.contains("declared down"))
            .collect();
        assert!(lost.is_empty(), "{lost:?}");
        assert_eq!(run.running(&sim), vec![1, 2]);
        assert!(sim.panics().is_empty(), "{:?}", sim.panics());
    }
}
