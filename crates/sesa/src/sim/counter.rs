//! The elastic counter under faults: the exact total once the faults stop.
//!
//! Node 0 is the frontend: it holds the `WorkPool` (the same EBB `sesa run counter`
//! uses) and serves it through its messenger. Every other node runs the same worker
//! loop as a real node (`elastic::count_from_pool`): lease a chunk, count it on every
//! core through its counter EBB, report it. Crashed nodes' leases go back to the pool
//! (as the real frontend does when a node is lost); a node asked to leave finishes its
//! chunk first. The frontend is not crashed (a frontend's loss ends the application,
//! as in production); partitions may cut it off from any worker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sesa_ebb::NodeShared;

use super::*;
use sesa_counter::frontend::{PoolAddress, WorkPool, count_from_pool};

/// Chunks of counting in the pool, per initial worker and virtual second of faults: a
/// worker gets through about 600 a second (two round trips each), so the count runs
/// through the whole fault phase.
const CHUNKS_PER_NODE_SECOND: u64 = 700;
/// Increments per chunk (small: the simulator runs every core's counting on one thread).
const CHUNK: u64 = 64;
/// The frontend's node id.
const FRONTEND: u32 = 0;

#[derive(Default)]
struct Shared {
    /// The pool's address, once the frontend serves it.
    pool: Cell<Option<PoolAddress>>,
    /// Workers in the cluster (the frontend meshes with them).
    roster: Roster<()>,
    /// Worker lives lost since the frontend last looked: their leases go back.
    lost: RefCell<Vec<(u32, u64)>>,
    /// The pool's (tally, finished), read by the frontend every round.
    tally: Cell<(i64, bool)>,
    /// Each life's "leave now" flag (the departure event of a planned leave).
    leaving: RefCell<BTreeMap<u32, Arc<AtomicBool>>>,
    /// Workers whose loop returned an error (the frontend unreachable): restarted.
    errors: Cell<u64>,
}

struct CounterCluster {
    shared: Rc<Shared>,
    cores: usize,
}

impl Cluster for CounterCluster {
    fn start(&mut self, sim: &Sim, id: u32, generation: u64) -> NodeKey {
        let shared = self.shared.clone();
        let leaving = Arc::new(AtomicBool::new(false));
        self.shared.leaving.borrow_mut().insert(id, leaving.clone());
        sim.start_node(spec(id, self.cores), move || {
            worker(shared, id, generation, leaving)
        })
    }

    fn lost(&mut self, _sim: &Sim, id: u32, generation: u64) {
        self.shared.roster.remove(id);
        self.shared.lost.borrow_mut().push((id, generation));
    }

    fn leave(&mut self, _sim: &Sim, id: u32) -> bool {
        if self.shared.roster.members.borrow().len() <= 1 {
            return false;
        }
        match self.shared.leaving.borrow().get(&id) {
            Some(flag) => {
                flag.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    fn faultable(&self) -> Vec<u32> {
        self.shared.roster.ids()
    }

    fn reachable(&self) -> Vec<u32> {
        // Workers talk only to the frontend: cut them off from it.
        vec![FRONTEND]
    }

    fn settled(&self) -> bool {
        true // The pool on the frontend is the only state; workers hold none.
    }
}

pub(super) fn run(sim: &Sim, options: &Options, faults: &mut Faults) -> (Counts, Vec<String>) {
    let shared = Rc::new(Shared::default());
    let total = u64::from(options.nodes.max(1))
        * CHUNKS_PER_NODE_SECOND
        * options.faults.as_secs().max(1)
        * CHUNK;
    {
        let shared = shared.clone();
        sim.start_node(spec(FRONTEND, 1), move || frontend(shared, total));
    }
    let mut cluster = CounterCluster {
        shared: shared.clone(),
        cores: options.cores,
    };
    let mut lives = BTreeMap::new();
    for id in 1..=options.nodes.max(1) {
        let key = cluster.start(sim, id, 1);
        lives.insert(id, Life { key, generation: 1 });
    }
    fault_phase(sim, options, &mut cluster, &mut lives, faults);
    // Quiet: every worker that is in the roster keeps counting until the pool is done.
    // A worker that left on purpose is gone; make sure someone is left to count.
    if !lives.values().any(|l| sim.is_running(l.key)) {
        let id = lives.keys().max().copied().unwrap_or(0) + 1;
        cluster.start(sim, id, 1);
        faults.note(sim, "join", format!("node {id} (someone must count)"));
    }
    let finished = sim.run_until(Duration::from_secs(120), || shared.tally.get().1);
    let (tally, _) = shared.tally.get();
    let mut failures = Vec::new();
    if !finished {
        failures.push(format!(
            "the count did not finish in 120 s of virtual time after the faults (tally {tally} of {total})"
        ));
    } else if tally != total as i64 {
        failures.push(format!("the total is {tally}, not {total}"));
    }
    let counts = Counts {
        acknowledged: total,
        lost: (total as i64 - tally).max(0) as u64,
        unexpected: (tally - total as i64).max(0) as u64,
        indeterminate: 0,
        failed: shared.errors.get(),
    };
    (counts, failures)
}

/// The frontend: serves the pool, requeues lost workers' leases, meshes with workers.
async fn frontend(shared: Rc<Shared>, total: u64) {
    let Some(messenger) = messenger(FRONTEND, 1).await else {
        return;
    };
    let Ok((pool, root)) = NodeShared::create(move || WorkPool::with_chunk(total, CHUNK)) else {
        return;
    };
    if messenger.serve(pool).await.is_err() || pool.try_with(|_| ()).is_err() {
        return;
    }
    let Some(work) = root.rep() else { return };
    shared.pool.set(Some(PoolAddress {
        node: FRONTEND,
        pool: pool.id().raw(),
    }));
    loop {
        for (node, generation) in std::mem::take(&mut *shared.lost.borrow_mut()) {
            work.requeue_life(node, generation);
        }
        shared.tally.set((work.tally(), work.finished()));
        sesa_event::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker: registers, then counts from the pool until it is done or asked to leave.
async fn worker(shared: Rc<Shared>, id: u32, generation: u64, leaving: Arc<AtomicBool>) {
    let Some(messenger) = messenger(id, generation).await else {
        return;
    };
    let pool = loop {
        if let Some(pool) = shared.pool.get() {
            break pool;
        }
        sesa_event::sleep(Duration::from_millis(10)).await;
    };
    // Workers dial the frontend (the higher id dials the lower).
    loop {
        mesh(messenger, id, std::iter::once(FRONTEND)).await;
        if messenger
            .peers()
            .await
            .is_ok_and(|p| p.iter().any(|p| p.node == FRONTEND))
        {
            break;
        }
        sesa_event::sleep(Duration::from_millis(50)).await;
    }
    shared.roster.insert(id, ());
    loop {
        match count_from_pool(messenger, pool, leaving.clone()).await {
            Ok(_) => break,
            Err(_) => {
                // The frontend was unreachable (a partition reset the connection, say):
                // redial and go on, as a node whose call failed would be restarted.
                shared.errors.set(shared.errors.get() + 1);
                sesa_event::sleep(Duration::from_millis(50)).await;
                mesh(messenger, id, std::iter::once(FRONTEND)).await;
            }
        }
    }
    shared.roster.remove(id);
}
