//! The naming service of global EBBs under faults, run through the production frontend
//! ([`super::app`]): its roster, its coordinator of the nodes' id map views, and
//! `sesa_node::run` on every node, whose id map holds the names.
//!
//! Every node creates global EBBs (a `probe`, whose construction data names its creator
//! and a number) and resolves those created anywhere, while nodes are killed, cut off,
//! paused and the application scales. Every resolve is judged: an EBB whose creation
//! was acknowledged before the resolve began must be found, with its data (else the
//! name was *lost*, or the data is *unexpected*); a resolve may fail cleanly (the map
//! refuses while a replica is unreachable or the members change). After the faults,
//! every node resolves every EBB whose creation was acknowledged.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sesa_ebb::NodeShared;
use sesa_exec::global::{GlobalError, GlobalKind, GlobalRef};
use sesa_frontend::roster::{Action, Roster};
use sesa_frontend::{Application, Cluster, Event};
use sesa_node::app::{App, AppError, Apps, NodeContext};

use super::app::{self, AppRun, Watch};
use super::*;

/// A node gives up on an operation after this (its outcome is then unknown).
const OP_LIMIT: Duration = Duration::from_secs(3);
/// How long the application has after the faults stop before the final resolves.
const SETTLE: Duration = Duration::from_secs(8);
/// How long a node SWIM declared down has to answer the frontend before it is lost.
const CONFIRM: Duration = Duration::from_secs(1);
/// How long the final resolves may take.
const FINISH: Duration = Duration::from_secs(120);

/// What the nodes and the frontend of one run share (the simulator runs them all on
/// this thread).
#[derive(Default)]
struct State {
    /// Creations acknowledged, in order: (global id, creator, number).
    created: Vec<(u64, u32, u64)>,
    counts: Counts,
    failures: Vec<String>,
    /// The faults are over: nodes stop creating and resolving.
    quiet: bool,
    /// Nodes are to resolve every acknowledged name (the final check).
    check: bool,
    /// Nodes that finished the final check.
    checked: BTreeSet<u32>,
    /// Nodes killed whose loss the frontend has not handled yet.
    killed: BTreeSet<u32>,
    /// Whether the naming service's newest view is active (every name on its replicas).
    settled: bool,
    /// How many members the application's view has.
    members: usize,
    /// Set when the frontend should return.
    done: bool,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
}

fn state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// The kind of EBB created and resolved: its data is its creator and a number.
struct Probe;

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
struct ProbeData {
    creator: u32,
    n: u64,
}

impl GlobalKind for Probe {
    const TAG: &'static str = "probe";
    type Data = ProbeData;
    type Root = NodeShared<ProbeData>;

    fn root(data: ProbeData) -> NodeShared<ProbeData> {
        NodeShared::new(move || data)
    }
}

/// The node side: create and resolve until asked to leave; the final check when told.
struct Namer;

impl App for Namer {
    const NAME: &'static str = "namer";
    type Settings = ();
    type Outcome = ();

    async fn run(node: NodeContext, _: ()) -> Result<(), AppError> {
        let me = node.id().get();
        let mut next = super::random_stream();
        let mut n = 0;
        while !node.leaving() {
            if state(|s| s.check) {
                final_check(&node, me).await;
                // Stays a member until the run ends (or it is asked to leave).
                while !node.leaving() {
                    sesa_event::sleep(Duration::from_millis(100)).await;
                }
                break;
            }
            if state(|s| s.quiet) {
                sesa_event::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let known = state(|s| s.created.len());
            if known == 0 || next().is_multiple_of(3) {
                n += 1;
                let data = ProbeData { creator: me, n };
                match sesa_event::timeout(OP_LIMIT, node.global().create::<Probe>(data)).await {
                    Some(Ok(r)) => state(|s| {
                        s.created.push((r.id(), me, n));
                        s.counts.acknowledged += 1;
                    }),
                    Some(Err(_)) => state(|s| s.counts.failed += 1),
                    None => state(|s| s.counts.indeterminate += 1),
                }
            } else {
                // Half the time one of the newest names (fresh ones are the ones a view
                // change could lose), else any.
                let pick = match next() % 2 {
                    0 => known - 1 - (next() % known.min(8) as u64) as usize,
                    _ => (next() % known as u64) as usize,
                };
                let (id, creator, n) = state(|s| s.created[pick]);
                let expected = ProbeData { creator, n };
                let got = sesa_event::timeout(OP_LIMIT, resolve(&node, id)).await;
                judge(me, id, expected, got, false);
            }
            sesa_event::sleep(Duration::from_millis(10 + next() % 20)).await;
        }
        Ok(())
    }
}

/// Resolves `id` as a probe on this node: its data.
async fn resolve(node: &NodeContext, id: u64) -> Result<ProbeData, GlobalError> {
    let ebb = node
        .global()
        .resolve(GlobalRef::<Probe>::from_id(id))
        .await?;
    Ok(ebb.try_with(|data| *data)?)
}

/// Judges one resolve of a name acknowledged before it began. A clean failure or no
/// answer is allowed while faults run, not in the final check's last try.
fn judge(
    me: u32,
    id: u64,
    expected: ProbeData,
    got: Option<Result<ProbeData, GlobalError>>,
    last: bool,
) {
    let now = sesa_event::now();
    state(|s| match got {
        Some(Ok(data)) if data == expected => s.counts.acknowledged += 1,
        Some(Ok(data)) => {
            s.counts.unexpected += 1;
            s.failures.push(format!(
                "{now:?}: node {me} resolved {id:#x} to {data:?}, created as {expected:?}"
            ));
        }
        Some(Err(GlobalError::Unknown(_))) => {
            s.counts.lost += 1;
            s.failures.push(format!(
                "{now:?}: node {me} found no EBB named {id:#x} ({expected:?}), whose \
                 creation was acknowledged"
            ));
        }
        Some(Err(e)) if last => {
            s.failures.push(format!(
                "{now:?}: node {me} could not resolve {id:#x} after the faults: {e}"
            ));
        }
        None if last => {
            s.failures.push(format!(
                "{now:?}: node {me} got no answer resolving {id:#x} in {OP_LIMIT:?} after \
                 the faults"
            ));
        }
        Some(Err(_)) => s.counts.failed += 1,
        None => s.counts.indeterminate += 1,
    });
}

/// Resolves every name acknowledged (each tried a few times: a view may be changing).
async fn final_check(node: &NodeContext, me: u32) {
    let created = state(|s| s.created.clone());
    for (id, creator, n) in created {
        let expected = ProbeData { creator, n };
        for attempt in 0..10 {
            let got = sesa_event::timeout(OP_LIMIT, resolve(node, id)).await;
            let settled = matches!(got, Some(Ok(_) | Err(GlobalError::Unknown(_))));
            if settled || attempt == 9 {
                judge(me, id, expected, got, attempt == 9);
                break;
            }
            sesa_event::sleep(Duration::from_millis(500)).await;
        }
    }
    state(|s| s.checked.insert(me));
}

/// The frontend side: an elastic loop (lost nodes replaced, scale requests served)
/// until every member finished the final check.
struct NamesFrontend;

impl Application for NamesFrontend {
    type Node = Namer;
    type Settings = ();
    type Output = ();

    async fn frontend(cx: &mut Cluster<'_>, _: ()) -> anyhow::Result<()> {
        let mut roster = Roster::new(cx.first_nodes().values()).replacing_lost();
        let mut leaving = Vec::new();
        let mut suspects = BTreeSet::new();
        let mut parts = BTreeMap::new();
        cx.accept_scaling(true);
        while !state(|s| s.done) {
            cx.observe(&mut roster);
            while let Some(action) = roster.next_action(sesa_event::now()) {
                let Some(action) = cx.act(&mut roster, action)? else {
                    continue;
                };
                match action {
                    Action::Start { node, .. } => {
                        let part = sesa_event::spawn_local(cx.run_on::<Namer>(&node, &()));
                        roster.started(node.node);
                        parts.insert(node.node, (node, part));
                    }
                    Action::Lost { node, cause } => {
                        state(|s| s.killed.remove(&node.get()));
                        cx.report(Event::Lost {
                            node,
                            cause,
                            then: "its names get new replicas".into(),
                        });
                    }
                    Action::Leave(node) => {
                        let leave = cx.leave(node);
                        leaving.push((node, sesa_event::spawn_local(leave)));
                    }
                    _ => {}
                }
            }
            // SWIM's verdicts (after the losses known are handled, so that the naming
            // service's view is up to date), checked: a node is dropped only if no
            // name can be lost with it (`Cluster::may_drop`); else it stays until it
            // answers or exits. (A process that exited is lost whatever it held.)
            suspects.extend(cx.take_down());
            let mut still = BTreeSet::new();
            for node in std::mem::take(&mut suspects) {
                let members = roster.members();
                if cx.may_drop(node, &members, CONFIRM).await {
                    roster.down(node);
                } else {
                    still.insert(node);
                }
            }
            suspects = still;
            let mut still = Vec::new();
            for (node, handle) in leaving {
                if handle.is_finished() {
                    roster.left(node, matches!(handle.await, Ok(Ok(()))));
                } else {
                    still.push((node, handle));
                }
            }
            leaving = still;

            let members = roster.members();
            // A part runs until its node leaves. One whose call failed (a connection
            // reset, before or after it reached the node) is run again while the node
            // is a member: the node is not lost for that (and may hold names).
            let ended: Vec<NodeId> = parts
                .iter()
                .filter(|(_, (_, part))| part.is_finished())
                .map(|(node, _)| *node)
                .collect();
            for node in ended {
                let Some((register, _)) = parts.remove(&node) else {
                    continue;
                };
                if members.contains(&node) && !state(|s| s.checked.contains(&node.get())) {
                    let part = cx.run_on::<Namer>(&register, &());
                    parts.insert(node, (register, sesa_event::spawn_local(part)));
                }
            }
            state(|s| {
                s.settled = cx.names_settled();
                s.members = members.len();
                if s.check && members.iter().all(|m| s.checked.contains(&m.get())) {
                    s.done = true;
                }
            });
            sesa_event::sleep(Duration::from_millis(10)).await;
        }
        cx.accept_scaling(false);
        Ok(())
    }
}

/// Kills only while every name is on its two replicas and no earlier kill is pending,
/// and scales to no fewer than two nodes: R = 2 survives one loss at a time, and a
/// single member holds the only copy of every name.
struct Names;

impl Watch for Names {
    fn may_kill(&self) -> bool {
        state(|s| s.settled && s.killed.is_empty() && s.members >= 2)
    }

    fn min_nodes(&self) -> u32 {
        2
    }

    fn killed(&mut self, node: u32) {
        state(|s| s.killed.insert(node));
    }
}

fn apps() -> Apps {
    Apps::new().with::<Namer>()
}

pub(super) fn run(sim: &Sim, options: &Options, faults: &mut Faults) -> (Counts, Vec<String>) {
    state(|s| *s = State::default());
    let nodes = options.nodes.max(2);
    let mut run = AppRun::<NamesFrontend>::start(sim, nodes, options.cores, apps, ());
    let mut watch = Names;
    let limit = sim.now() + Duration::from_secs(30);
    while state(|s| s.created.is_empty()) && run.result.borrow().is_none() && sim.now() < limit {
        run.step(sim, Duration::from_millis(20), &mut watch);
    }
    app::fault_phase(sim, options, &mut run, &mut watch, faults);
    state(|s| s.quiet = true);
    let settle = sim.now() + SETTLE;
    while sim.now() < settle {
        run.step(sim, Duration::from_millis(50), &mut watch);
    }
    state(|s| s.check = true);
    let limit = sim.now() + FINISH;
    while run.result.borrow().is_none() && sim.now() < limit {
        run.step(sim, Duration::from_millis(50), &mut watch);
    }
    let mut failures = Vec::new();
    match run.result.borrow_mut().take() {
        None => failures.push(format!(
            "the final resolves did not finish in {FINISH:?} of virtual time"
        )),
        Some(Err(e)) => failures.push(format!("the frontend failed: {e:#}")),
        Some(Ok(())) => {}
    }
    let (counts, mut judged) = state(|s| (s.counts.clone(), std::mem::take(&mut s.failures)));
    judged.truncate(5);
    failures.extend(judged);
    if state(|s| s.created.is_empty()) {
        failures.push("no EBB was ever created".into());
    }
    (counts, failures)
}
