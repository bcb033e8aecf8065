//! The frontend's part in the naming service of global EBBs: it is the single authority
//! over the global id map's members (`sesa_exec::GlobalIdMap`, run by every node).
//!
//! The map's entries live on the nodes (each on two of them); the frontend only decides
//! who the members are. Each change of the application's members (the first nodes, then
//! every view its roster hands out) becomes a numbered view of the map, driven in two
//! steps, as the store's views are:
//!
//! 1. every member, and every node taken out to leave, *installs* the view (from then
//!    on it refuses gets and sets made under an older one) and copies its entries to
//!    their replicas in it ([`Control::InstallNames`]); a leaving node so hands its
//!    entries over before it is asked to leave;
//! 2. once every member answered, every member *activates* it
//!    ([`Control::ActivateNames`]): no node acts under a view that another member has
//!    not installed, and every entry is on its replicas in it.
//!
//! A member that does not answer keeps the view from activating (gets and sets wait,
//! then fail as "changing"); the step is tried again every [`RETRY`] until it
//! succeeds or a newer view (one without the node, once the roster has lost it)
//! replaces it. The simulator's `idmap` workload checks the same protocol under faults,
//! and its `names` workload checks this coordinator through the production frontend.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sesa_ebb::{CoreId, NodeId};
use sesa_exec::{Client, Member, MessengerRef};
use sesa_node::{Control, ControlReply, ControlService, NamesView, Register};

use crate::events::{Event, EventSink};

/// How long a node has to install a view and copy its entries over (it waits up to
/// 10 s to be connected to the members: this is longer, to hear why it was not).
const INSTALL_WAIT: Duration = Duration::from_secs(15);
/// How long a node has to answer an activation.
const ACTIVATE_WAIT: Duration = Duration::from_secs(2);
/// Pause before a view that did not activate is tried again.
pub const RETRY: Duration = Duration::from_secs(1);

/// The views wanted and reached (shared by the [`Names`] handle and its driver).
#[derive(Default)]
struct State {
    /// The newest view wanted: its number and members.
    epoch: u64,
    members: Vec<Register>,
    /// Nodes out of the view that still have to hand their entries over.
    leaving: Vec<Register>,
    /// The newest view activated on every member.
    active: u64,
    /// Nodes that have installed a view without them (their entries are handed over).
    handed_over: BTreeSet<NodeId>,
}

/// The frontend's handle on the naming service's views. Dropping it stops its driver.
pub(crate) struct Names {
    state: Arc<Mutex<State>>,
}

impl Names {
    /// Starts the driver of the views (on this core); there are no members yet.
    pub(crate) fn start(messenger: MessengerRef, events: Arc<dyn EventSink>) -> Names {
        let state = Arc::new(Mutex::new(State::default()));
        sesa_event::spawn_local(drive(messenger, Arc::downgrade(&state), events));
        Names { state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wants a view of `members` (a new number), with `leaving` taken out of it to hand
    /// their entries over. Those taken out before and not yet handed over still do.
    pub(crate) fn change(&self, members: Vec<Register>, leaving: Vec<Register>) {
        let mut s = self.lock();
        s.epoch += 1;
        for node in leaving {
            if !s.leaving.iter().any(|l| l.node == node.node) {
                s.leaving.push(node);
            }
        }
        s.leaving
            .retain(|l| !members.iter().any(|m| m.node == l.node));
        s.members = members;
    }

    /// Node `node` is gone (lost, or left): it has nothing more to hand over.
    pub(crate) fn gone(&self, node: NodeId) {
        let mut s = self.lock();
        s.leaving.retain(|l| l.node != node);
        s.handed_over.remove(&node);
    }

    /// Whether the newest view wanted is active.
    pub(crate) fn settled(&self) -> bool {
        let s = self.lock();
        s.active == s.epoch
    }

    /// Resolves once node `node` has handed its entries over (or never had to), or
    /// after `wait` (false then).
    pub(crate) fn handed_over(
        &self,
        node: NodeId,
        wait: Duration,
    ) -> impl Future<Output = bool> + 'static {
        let state = Arc::downgrade(&self.state);
        async move {
            let deadline = sesa_event::now() + wait;
            loop {
                let Some(shared) = state.upgrade() else {
                    return false;
                };
                {
                    let s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    if s.handed_over.contains(&node) || !s.leaving.iter().any(|l| l.node == node) {
                        return true;
                    }
                }
                if sesa_event::now() > deadline {
                    return false;
                }
                sesa_event::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The driver: takes the newest view wanted to active, again and again.
async fn drive(messenger: MessengerRef, state: Weak<Mutex<State>>, events: Arc<dyn EventSink>) {
    let mut complained = None;
    loop {
        let Some(shared) = state.upgrade() else {
            return; // The frontend is done.
        };
        let wanted = {
            let s = shared.lock().unwrap_or_else(|p| p.into_inner());
            let pending: Vec<Register> = (s.leaving.iter())
                .filter(|l| !s.handed_over.contains(&l.node))
                .cloned()
                .collect();
            // Nothing to do until the next change: no copies made.
            (s.epoch != s.active || !pending.is_empty()).then(|| {
                (
                    s.epoch,
                    s.active,
                    s.members.clone(),
                    s.leaving.clone(),
                    pending,
                )
            })
        };
        drop(shared);
        let Some((epoch, active, members, leaving, pending)) = wanted else {
            sesa_event::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if epoch == active {
            // The view is active; a node taken out that could not hand its names over
            // yet (it may hold the only copy of some) is asked again, until it has or
            // is gone.
            let pause = match hand_over(messenger, epoch, &members, &pending, &state).await {
                true => Duration::from_millis(10),
                false => RETRY,
            };
            sesa_event::sleep(pause).await;
            continue;
        }
        match change(messenger, epoch, &members, &leaving, &state).await {
            Ok(()) => {
                if let Some(shared) = state.upgrade() {
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.active = s.active.max(epoch);
                }
                complained = None;
            }
            Err(why) if why == SUPERSEDED => {}
            Err(why) => {
                // Said once per view; tried again until it goes through or a newer
                // view replaces it.
                if complained != Some(epoch) {
                    events.report(Event::Note(format!(
                        "the naming service's view {epoch} is not active yet: {why}; \
                         trying again"
                    )));
                    complained = Some(epoch);
                }
                sesa_event::sleep(RETRY).await;
            }
        }
    }
}

/// Installs view `epoch` (of `members`) on `members` and `leaving`, then activates it on
/// `members`. A leaving node that installed it has handed its entries over; one that
/// did not is asked again later (it is not a member: the view does not wait for it).
async fn change(
    messenger: MessengerRef,
    epoch: u64,
    members: &[Register],
    leaving: &[Register],
    state: &Weak<Mutex<State>>,
) -> Result<(), String> {
    let view = view_of(epoch, members);
    let nodes: Vec<Register> = members.iter().chain(leaving).cloned().collect();
    install(messenger, &view, &nodes, state).await?;
    let activate = Control::ActivateNames(view);
    let activations: Vec<_> = members
        .iter()
        .map(|r| (r.node, call(messenger, r, activate.clone(), ACTIVATE_WAIT)))
        .collect();
    answered(&activations, epoch, state).await?;
    let mut failed = None;
    for (node, call) in activations {
        match call.await.unwrap_or_else(|e| Err(format!("{e}"))) {
            Ok(ControlReply::NamesActive) => {}
            Ok(other) => failed = Some(format!("node {node} answered {other:?}")),
            Err(why) => failed = Some(format!("node {node}: {why}")),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Asks the leaving nodes not done yet, `pending`, to install view `epoch` (of
/// `members`, already active): that hands their entries over. Whether all did.
async fn hand_over(
    messenger: MessengerRef,
    epoch: u64,
    members: &[Register],
    pending: &[Register],
    state: &Weak<Mutex<State>>,
) -> bool {
    install(messenger, &view_of(epoch, members), pending, state)
        .await
        .is_ok_and(|()| {
            state.upgrade().is_some_and(|shared| {
                let s = shared.lock().unwrap_or_else(|p| p.into_inner());
                pending.iter().all(|l| s.handed_over.contains(&l.node))
            })
        })
}

/// The view `epoch` of the id map with `members`.
fn view_of(epoch: u64, members: &[Register]) -> NamesView {
    NamesView {
        epoch,
        members: (members.iter())
            .map(|r| Member {
                node: r.node,
                store: r.names,
            })
            .collect(),
    }
}

/// Installs `view` on `nodes`. Members (of the view) must all take it; a node out of
/// it that takes it has handed its entries over, and one that does not is left for
/// later (an error only if a member failed).
async fn install(
    messenger: MessengerRef,
    view: &NamesView,
    nodes: &[Register],
    state: &Weak<Mutex<State>>,
) -> Result<(), String> {
    let request = Control::InstallNames(view.clone());
    let calls: Vec<_> = (nodes.iter())
        .map(|r| (r.node, call(messenger, r, request.clone(), INSTALL_WAIT)))
        .collect();
    answered(&calls, view.epoch, state).await?;
    let mut failed = None;
    for (node, call) in calls {
        let member = view.members.iter().any(|m| m.node == node);
        match (call.await.unwrap_or_else(|e| Err(format!("{e}"))), member) {
            (Ok(ControlReply::NamesInstalled(_)), false) => {
                if let Some(shared) = state.upgrade() {
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.handed_over.insert(node);
                }
            }
            (Ok(ControlReply::NamesInstalled(_)), true) | (_, false) => {}
            (Ok(other), true) => failed = Some(format!("node {node} answered {other:?}")),
            (Err(why), true) => failed = Some(format!("node {node}: {why}")),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Waits until every one of `calls` has its answer, unless a view newer than `epoch`
/// is wanted meanwhile: that one goes first (this one may wait on a node it drops).
async fn answered<T>(
    calls: &[(NodeId, sesa_event::JoinHandle<T>)],
    epoch: u64,
    state: &Weak<Mutex<State>>,
) -> Result<(), String> {
    while !calls.iter().all(|(_, call)| call.is_finished()) {
        let newest = state
            .upgrade()
            .map(|shared| shared.lock().unwrap_or_else(|p| p.into_inner()).epoch);
        if newest.is_none_or(|newest| newest > epoch) {
            return Err(SUPERSEDED.into());
        }
        sesa_event::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Why a view was left for a newer one.
const SUPERSEDED: &str = "a newer view is wanted";

/// Sends `request` to node `r`'s control EBB (at once; the answer within `wait`).
fn call(
    messenger: MessengerRef,
    r: &Register,
    request: Control,
    wait: Duration,
) -> sesa_event::JoinHandle<Result<ControlReply, String>> {
    let node = Client::<ControlService>::new(messenger, r.node, CoreId::new(0), r.control);
    sesa_event::spawn_local(async move {
        match sesa_event::timeout(wait, node.call(request)).await {
            Some(Ok(reply)) => Ok(reply),
            Some(Err(e)) => Err(format!("{e}")),
            None => Err(format!("no answer in {wait:?}")),
        }
    })
}
