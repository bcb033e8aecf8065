//! The elastic counter under faults, run as `sesa run counter --nodes N` runs it: the
//! production frontend (its roster, work pool, SWIM membership and admin service) on
//! simulated nodes ([`super::app`]), with nodes killed, cut off, and added or asked to
//! leave by scale requests while they count. The checker: the frontend finishes, and
//! its total is exactly what the first nodes' cores were given.

use sesa_counter::Counter;
use sesa_counter::frontend::{CounterFrontend, ElasticCount};
use sesa_frontend::Event;
use sesa_node::app::Apps;

use super::app::{self, AppRun};
use super::*;

/// Chunks of counting in the pool, per initial node and virtual second of faults: a
/// node gets through about 600 a second (two round trips each), so the count runs
/// through the whole fault phase.
const CHUNKS_PER_NODE_SECOND: u64 = 700;
/// Increments per chunk (small: the simulator runs every core's counting on one thread).
const CHUNK: u64 = 64;
/// How long the count has to finish after the faults stop.
const FINISH: Duration = Duration::from_secs(120);

fn apps() -> Apps {
    Apps::new().with::<Counter>()
}

pub(super) fn run(sim: &Sim, options: &Options, faults: &mut Faults) -> (Counts, Vec<String>) {
    let nodes = options.nodes.max(1);
    let cores = options.cores.max(1);
    let incs = CHUNKS_PER_NODE_SECOND * options.faults.as_secs().max(1) * CHUNK / cores as u64;
    let total = u64::from(nodes) * cores as u64 * incs;
    let count = ElasticCount { incs, chunk: CHUNK };
    let mut run = AppRun::<CounterFrontend>::start(sim, nodes, cores, apps, count);
    let mut failures = Vec::new();
    // Faults start once the first nodes have joined (a node lost before that fails the
    // start, as `sesa run` does).
    let joined = |run: &AppRun<CounterFrontend>| {
        let events = run.events.events();
        events
            .iter()
            .filter(|e| matches!(e, Event::Joined { .. }))
            .count()
            >= nodes as usize
    };
    let limit = sim.now() + Duration::from_secs(30);
    while !joined(&run) && run.result.borrow().is_none() && sim.now() < limit {
        run.step(sim, Duration::from_millis(20), &mut ());
    }
    if !joined(&run) {
        failures.push("the first nodes did not join in 30 s of virtual time".into());
    }
    app::fault_phase(sim, options, &mut run, &mut (), faults);
    let limit = sim.now() + FINISH;
    while run.result.borrow().is_none() && sim.now() < limit {
        run.step(sim, Duration::from_millis(50), &mut ());
    }
    let tally = match run.result.borrow_mut().take() {
        None => {
            failures.push(format!(
                "the count did not finish in {FINISH:?} of virtual time after the faults"
            ));
            0
        }
        Some(Err(e)) => {
            failures.push(format!("the frontend failed: {e:#}"));
            0
        }
        Some(Ok(tally)) => {
            if tally != total as i64 {
                failures.push(format!("the total is {tally}, not {total}"));
            }
            tally
        }
    };
    let scaled = run.scaled.borrow();
    let counts = Counts {
        acknowledged: total,
        lost: (total as i64 - tally).max(0) as u64,
        unexpected: (tally - total as i64).max(0) as u64,
        indeterminate: 0,
        failed: scaled.iter().filter(|(_, a)| a.is_err()).count() as u64,
        stale: 0,
    };
    (counts, failures)
}
