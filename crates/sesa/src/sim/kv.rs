//! The data store under faults: with R = 2 and at most one owner of a key lost at a
//! time, no acknowledged write lost and no value read that was never written.
//!
//! The store is the real one: each store node runs `sesa_apps::memcache` (the per-core
//! `Kv`, the cluster `Node`, `serve_every_core` on its address), and node 0 is the
//! frontend, driving views with the same `Coordinator` as `sesa kv`. The clients are
//! `super::clients`'.
//!
//! Unlike `sesa kv`'s frontend, which never takes a lost node id back, this one lets a
//! crashed node rejoin under its id with a new generation (a restart); it first sends a
//! view without the node, so the rejoined, empty node is a new owner that gets copies.

use std::collections::BTreeMap;

use super::clients::{self, Clients, decode};
use super::*;
use sesa_apps::memcache::cluster::{self as store, Coordinator, Layout, Member, Placement};
use sesa_apps::memcache::protocol::Limits;
use sesa_apps::memcache::server::{self, Kv, KvConfig};

/// The frontend's node id.
const FRONTEND: u32 = 0;
/// The clients' node id (never faulted: clients stand outside the cluster).
const CLIENTS: u32 = 200;
/// The port store nodes serve clients on.
const CLIENT_PORT: u16 = 11211;
/// How long the cluster has to settle after the faults stop, before the final reads.
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Shared {
    /// Store nodes that registered (started their store) and are not known lost.
    registered: RefCell<BTreeMap<u32, Member>>,
    /// Store nodes lost since the frontend last looked.
    lost: RefCell<Vec<u32>>,
    /// Store nodes asked to leave, not yet taken out of the view.
    leave: RefCell<Vec<u32>>,
    /// Whether the frontend's last view change finished and nothing waits.
    settled: Cell<bool>,
    clients: Rc<Clients>,
}

struct KvCluster {
    shared: Rc<Shared>,
    cores: usize,
}

impl Cluster for KvCluster {
    fn start(&mut self, sim: &Sim, id: u32, generation: u64) -> NodeKey {
        let shared = self.shared.clone();
        let cores = self.cores;
        sim.start_node(spec(id, cores), move || store_node(shared, id, generation))
    }

    fn lost(&mut self, _sim: &Sim, id: u32, _generation: u64) {
        self.shared.registered.borrow_mut().remove(&id);
        self.shared.lost.borrow_mut().push(id);
        self.shared.settled.set(false);
    }

    fn leave(&mut self, _sim: &Sim, id: u32) -> bool {
        if self.shared.registered.borrow().len() <= 2 {
            return false;
        }
        self.shared.registered.borrow_mut().remove(&id);
        self.shared.leave.borrow_mut().push(id);
        self.shared.settled.set(false);
        true
    }

    fn faultable(&self) -> Vec<u32> {
        self.shared.registered.borrow().keys().copied().collect()
    }

    fn reachable(&self) -> Vec<u32> {
        let mut ids = self.faultable();
        ids.extend([FRONTEND, CLIENTS]);
        ids
    }

    fn settled(&self) -> bool {
        self.shared.settled.get()
    }
}

pub(super) fn run(sim: &Sim, options: &Options, faults: &mut Faults) -> (Counts, Vec<String>) {
    let shared = Rc::new(Shared::default());
    shared.clients.deletes.set(options.deletes);
    {
        let shared = shared.clone();
        sim.start_node(spec(FRONTEND, 1), move || frontend(shared));
    }
    let mut cluster = KvCluster {
        shared: shared.clone(),
        cores: options.cores,
    };
    let mut lives = BTreeMap::new();
    for id in 1..=options.nodes.max(2) {
        let key = cluster.start(sim, id, 1);
        lives.insert(id, Life { key, generation: 1 });
    }
    {
        let shared = shared.clone();
        let clients = shared.clients.clone();
        sim.start_node(spec(CLIENTS, 1), move || clients::clients(clients));
    }
    fault_phase(sim, options, &mut cluster, &mut lives, faults);
    shared.clients.quiet.set(true);
    sim.run_for(SETTLE);
    let settled = sim.run_until(Duration::from_secs(60), || shared.settled.get());
    *shared.clients.check.borrow_mut() = Some(BTreeMap::new());
    let finished = sim.run_until(Duration::from_secs(60), || shared.clients.check_done.get());
    let mut history = std::mem::take(&mut *shared.clients.history.borrow_mut());
    if !settled {
        history.fail("the store did not settle in 60 s of virtual time after the faults".into());
    }
    if !finished {
        history.fail("the final reads did not finish in 60 s of virtual time".into());
    }
    let reads = shared.clients.check.borrow_mut().take().unwrap_or_default();
    history.finish(&reads, decode)
}

/// The frontend: the store's coordinator. Sends a view when nodes register, are lost
/// or leave, and waits for each move to finish.
async fn frontend(shared: Rc<Shared>) {
    let Some(messenger) = messenger(FRONTEND, 1).await else {
        return;
    };
    let mut coordinator =
        Coordinator::new(messenger, 2, Layout::Partitioned, Placement::Rendezvous);
    let mut members: BTreeMap<NodeId, Member> = BTreeMap::new();
    // Whether the last view change finished moving keys; if not, when it is sent again
    // (a member that did not take it holds up its activation, as `sesa kv`'s frontend
    // knows).
    let mut last_done = true;
    let mut retry_at = sesa_event::now();
    loop {
        let lost: Vec<u32> = std::mem::take(&mut *shared.lost.borrow_mut());
        let leaving_ids: Vec<u32> = std::mem::take(&mut *shared.leave.borrow_mut());
        let mut changed = false;
        for id in lost {
            changed |= members.remove(&NodeId::new(id)).is_some();
        }
        let mut leaving = Vec::new();
        for id in leaving_ids {
            if let Some(m) = members.remove(&NodeId::new(id)) {
                leaving.push(m);
                changed = true;
            }
        }
        // Newcomers only in a view of their own, after any loss: a node lost and back
        // under the same id must first leave the view, or the view would look unchanged
        // and nobody would copy its keys to its new, empty life. (The `sesa kv`
        // frontend never takes a lost node id back; this one lets it rejoin.)
        if !changed {
            for (id, m) in shared.registered.borrow().iter() {
                if members.get(&NodeId::new(*id)) != Some(m) {
                    members.insert(NodeId::new(*id), *m);
                    changed = true;
                }
            }
        }
        if changed && !members.is_empty() {
            shared.settled.set(false);
            let debug = std::env::var_os("SESA_SIM_DEBUG").is_some();
            if debug {
                eprintln!(
                    "{:?} frontend: view {} of {:?}, leaving {:?}",
                    sesa_event::now(),
                    coordinator.view().map_or(0, |v| v.epoch) + 1,
                    members.keys().collect::<Vec<_>>(),
                    leaving.iter().map(|m| m.node).collect::<Vec<_>>()
                );
            }
            let r = coordinator.change(&members, &leaving, |_| {}).await;
            if debug {
                eprintln!("{:?} frontend: {:?}", sesa_event::now(), r);
            }
            *shared.clients.serving.borrow_mut() = members
                .keys()
                .map(|&id| (id, SocketAddr::new(ip_of(id.get()).into(), CLIENT_PORT)))
                .collect();
            let done = r.finished;
            last_done = done;
            // A leaving node stops once its keys have moved.
            for m in &leaving {
                let _ = store::call(messenger, *m, store::StoreRequest::Progress).await;
            }
            let more = !shared.lost.borrow().is_empty()
                || !shared.leave.borrow().is_empty()
                || shared
                    .registered
                    .borrow()
                    .iter()
                    .any(|(id, m)| members.get(&NodeId::new(*id)) != Some(m));
            shared.settled.set(done && !more);
        } else if !last_done && sesa_event::now() >= retry_at {
            retry_at = sesa_event::now() + Duration::from_secs(1);
            if let Some(r) = coordinator.resume(|_| {}).await {
                last_done = r.finished;
            }
            shared.settled.set(last_done);
        } else if !changed {
            shared.settled.set(last_done);
        }
        sesa_event::sleep(Duration::from_millis(20)).await;
    }
}

/// A store node: its store, served to clients on its address; registers with the
/// frontend; keeps connected to the frontend and the other store nodes.
async fn store_node(shared: Rc<Shared>, id: u32, generation: u64) {
    let Some(messenger) = messenger(id, generation).await else {
        return;
    };
    let config = KvConfig {
        limits: Limits::default(),
        memory_bytes: 64 << 20,
        max_connections: 1024,
        pid: 0,
    };
    let Ok(kv) = Kv::create(&config) else { return };
    let Ok((node, kv)) = store::Node::start(messenger, kv).await else {
        return;
    };
    let addr = SocketAddr::new(ip_of(id).into(), CLIENT_PORT);
    if server::serve_every_core(kv, addr).await.is_err() {
        return;
    }
    let mut registered = false;
    loop {
        let mut peers: Vec<u32> = shared.registered.borrow().keys().copied().collect();
        peers.push(FRONTEND);
        mesh(messenger, id, peers.into_iter()).await;
        if !registered
            && messenger
                .peers()
                .await
                .is_ok_and(|p| p.iter().any(|p| p.node == NodeId::FRONTEND))
        {
            shared.registered.borrow_mut().insert(id, node.member());
            shared.settled.set(false);
            registered = true;
        }
        sesa_event::sleep(Duration::from_millis(20)).await;
    }
}
