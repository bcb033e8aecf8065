//! The store's frontend side (`sesa kv --nodes N`): the data store on an elastic
//! cluster of node processes.
//!
//! The nodes hold the keys (`sesa_apps::memcache::cluster`); the frontend owns the
//! membership. It starts the store on every node, hands out views of the store's nodes,
//! and changes the view when a node joins (`sesa scale`, or by hand), is asked to leave,
//! or is lost (its process exited, or SWIM declared it down). After each change it waits
//! until every node has moved its keys, printing the progress, then lets the nodes stop
//! asking the previous owners for keys that are still moving (`Settle`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Kv, KvSettings, Serving, StoreStatus};
use anyhow::bail;
use sesa_apps::memcache::cluster::{self as store, Coordinator, Member};
use sesa_exec::{MessengerRef, NodeId};
use sesa_frontend::roster::{Action, Roster};
use sesa_frontend::{Application, Cluster, Event};

/// The store's frontend: the loop below, which serves until the frontend is stopped.
pub struct KvFrontend;

impl Application for KvFrontend {
    type Node = Kv;
    type Settings = KvSettings;
    /// The store never finishes: it serves until it is stopped, or fails.
    type Output = std::convert::Infallible;

    async fn frontend(
        cx: &mut Cluster<'_>,
        settings: KvSettings,
    ) -> anyhow::Result<std::convert::Infallible> {
        frontend(cx, settings).await
    }
}

/// How long a node SWIM declared down has to answer a direct call before it is removed.
const CONFIRM: Duration = Duration::from_secs(1);
/// The longest a view change waits for a lost node's process to be gone (the roster
/// stops it with a grace of 2 s, then kills it).
const FENCE_WAIT: Duration = Duration::from_secs(5);
/// How long after a view that did not settle it is sent again.
const RETRY: Duration = Duration::from_secs(1);
/// How often a node declared down but kept (it may hold the only copy of some keys) is
/// looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// The members the store lost since its newest settled view (the last one in which
/// every key was on all its owners): whether a node declared down may be dropped.
///
/// Dropping a member drops its copies. A node that exited is gone either way, but one
/// only declared down (cut off from the frontend, paused) may be alive and hold the last
/// copy of some keys; while the store could lose keys by dropping it, it stays in the
/// views, and writes to the keys it owns are refused until it answers again (the
/// store's replication never acknowledges a write its owners do not all hold).
#[derive(Debug, Default)]
struct Losses {
    /// Whether the newest view settled.
    settled: bool,
    /// Members lost (or being removed) since the newest settled view.
    since_settled: std::collections::BTreeSet<NodeId>,
}

impl Losses {
    /// Whether one more member may be dropped from a store of `members` members with
    /// `replicas` owners per key: every key still has a copy on a remaining member.
    fn may_drop(&self, members: usize, replicas: u32) -> bool {
        let owners = (replicas as usize).min(members);
        self.settled && self.since_settled.len() + 1 < owners
    }

    fn lost(&mut self, node: NodeId) {
        self.since_settled.insert(node);
    }

    fn view(&mut self, settled: bool) {
        self.settled = settled;
        if settled {
            self.since_settled.clear();
        }
    }
}

/// Whether `member` answers a call within `within`.
async fn answers(messenger: MessengerRef, member: Member, within: Duration) -> bool {
    let call = store::call(messenger, member, store::StoreRequest::Progress);
    sesa_event::timeout(within, call)
        .await
        .is_some_and(|reply| reply.is_ok())
}

/// The frontend's loop for the store: the roster decides who is in; this loop starts
/// the store on each node, sends the views, and hands a leaving node's keys over before
/// it goes. Runs until the frontend is stopped (Ctrl-C), or fails when every node is
/// lost.
async fn frontend(
    cx: &mut Cluster<'_>,
    settings: KvSettings,
) -> anyhow::Result<std::convert::Infallible> {
    // The store's member on each node it runs on.
    let mut members: BTreeMap<NodeId, Member> = BTreeMap::new();
    let status = Arc::new(Mutex::new(StoreStatus {
        listen: Some(settings.listen),
        ..StoreStatus::default()
    }));
    cx.show_status("store", status.clone(), StoreStatus::lines);
    let mut roster = Roster::new(cx.first_nodes().values());
    let mut coordinator = Coordinator::new(
        cx.messenger(),
        settings.replicas,
        settings.layout,
        settings.placement,
    );
    let mut losses = Losses::default();
    // Nodes declared down and not removed yet (see `Losses`), and when each was last
    // kept (`None`: not looked at yet; once kept, the console was told it stays).
    let mut suspects: BTreeMap<NodeId, Option<sesa_event::Instant>> = BTreeMap::new();
    // A view that did not settle is sent again (`retry_at`); the nodes asked to leave
    // meanwhile are held back until then (their keys have not all moved).
    let mut held: Vec<NodeId> = Vec::new();
    // Nodes lost but maybe alive (declared down, or their part failed), stopped by the
    // frontend: no view goes out without them before their process is gone, or one
    // cut off from the frontend would go on answering reads of keys it no longer gets
    // the writes of.
    let mut fencing: BTreeMap<NodeId, sesa_event::Instant> = BTreeMap::new();
    let mut retry_at: Option<sesa_event::Instant> = None;
    cx.accept_scaling(true);
    loop {
        cx.observe(&mut roster);
        // Members whose process just exited are lost already (the roster's report of
        // it comes below): a node declared down now must be weighed against them.
        for node in members.keys().filter(|n| cx.has_exited(**n)) {
            losses.lost(*node);
        }
        for node in cx.take_down() {
            if members.contains_key(&node) {
                suspects.entry(node).or_insert(None);
            }
        }
        let due: Vec<NodeId> = suspects
            .iter()
            .filter(|(_, at)| at.is_none_or(|at| sesa_event::now() - at >= RECHECK))
            .map(|(node, _)| *node)
            .collect();
        for node in due {
            let Some(&member) = members.get(&node) else {
                suspects.remove(&node);
                continue;
            };
            // Removing a node drops a copy of its keys: on SWIM's word alone, a few
            // nodes busy for a second could all be removed at once and the keys lost
            // with them. A node that still answers is slow, not down.
            if answers(cx.messenger(), member, CONFIRM).await {
                cx.report(Event::Note(format!(
                    "node {node} was declared down but answers; it stays"
                )));
                suspects.remove(&node);
                continue;
            }
            // A loss not known yet (a node crashed a moment ago, its exit not reported
            // yet) would make this a second one: every other member must answer first.
            let mut others_answer = true;
            for other in members.values().filter(|m| m.node != node) {
                if !answers(cx.messenger(), *other, CONFIRM).await {
                    others_answer = false;
                    break;
                }
            }
            if !others_answer || !losses.may_drop(members.len(), settings.replicas) {
                let told = suspects.get(&node).is_some_and(Option::is_some);
                if !told {
                    cx.report(Event::Note(format!(
                        "node {node} was declared down, but it may hold the only copy of \
                         some keys: it stays until it answers or exits (writes to its keys \
                         are refused meanwhile)"
                    )));
                }
                suspects.insert(node, Some(sesa_event::now()));
                continue;
            }
            suspects.remove(&node);
            losses.lost(node);
            roster.down(node);
        }
        while let Some(action) = roster.next_action(sesa_event::now()) {
            let Some(action) = cx.act(&mut roster, action)? else {
                continue;
            };
            match action {
                Action::Start { node, .. } => match cx.run_on::<Kv>(&node, &settings).await {
                    Ok(Serving { addr, member }) => {
                        cx.report(Event::Serving {
                            node: node.node,
                            addr,
                        });
                        update_status(&status, |s| {
                            s.ports.insert(node.node, addr.port());
                        });
                        members.insert(node.node, member);
                        roster.started(node.node);
                    }
                    Err(e) => roster.start_failed(node.node, &format!("{e:#}")),
                },
                Action::Lost { node, cause } => {
                    if roster.is_ours(node) && !cx.has_exited(node) {
                        fencing.insert(node, sesa_event::now());
                    }
                    losses.lost(node);
                    suspects.remove(&node);
                    members.remove(&node);
                    cx.report(Event::Lost {
                        node,
                        cause,
                        then: "its keys get new replicas".into(),
                    });
                }
                Action::ChangeView {
                    members: ids,
                    leaving,
                } => {
                    fence(cx, &mut roster, &mut fencing).await;
                    for node in &leaving {
                        cx.report(Event::Leaving { node: *node });
                    }
                    // Every node still holding keys that is not in the view hands them
                    // over with it: those asked to leave now, and those asked before
                    // whose move has not settled yet.
                    let leaving: Vec<NodeId> = members
                        .keys()
                        .filter(|n| !ids.contains(n))
                        .copied()
                        .collect();
                    let (view, leaving) = pick(&members, &ids, &leaving);
                    // No member to hand the keys to (the last one was lost while the
                    // others were leaving, and its replacements are not up yet): the
                    // nodes leaving keep them, out of any view, until one is (the roster
                    // sends the next view then). A view without members would settle at
                    // once and let them go with every key (`sesa sim --workload store
                    // --faults wide --seed 19804`).
                    if view.is_empty() && !leaving.is_empty() {
                        cx.report(Event::Note(format!(
                            "no member to take the keys of the {} node(s) leaving: they \
                             keep them until a node joins",
                            leaving.len()
                        )));
                        continue;
                    }
                    let next = Some((&view, leaving.as_slice()));
                    let settled =
                        change_view(cx, &status, &mut coordinator, next, &settings).await?;
                    losses.view(settled);
                    retry_at = (!settled).then(|| sesa_event::now() + RETRY);
                }
                // A leaving node has moved its keys away with the view; it stops by
                // itself once asked, and ours are also stopped if they do not.
                Action::Leave(node) if losses.settled => {
                    let_go(cx, &mut roster, &mut members, node).await;
                }
                Action::Leave(node) => held.push(node),
                Action::Left { node, clean } => {
                    if !clean {
                        cx.report(Event::Note(format!("node {node} did not answer its leave")));
                    }
                    cx.report(Event::Left { node });
                }
                Action::Launch | Action::Stop { .. } | Action::Scaled { .. } => {}
            }
        }
        // A view that did not settle (a node did not take it, or keys did not all move in
        // time) is sent again: until it settles, some keys may not be on their owners, and
        // a node leaving could take the last copy with it.
        if retry_at.is_some_and(|at| sesa_event::now() >= at) {
            let settled = change_view(cx, &status, &mut coordinator, None, &settings).await?;
            losses.view(settled);
            retry_at = (!settled).then(|| sesa_event::now() + RETRY);
        }
        if losses.settled {
            for node in std::mem::take(&mut held) {
                let_go(cx, &mut roster, &mut members, node).await;
            }
        }
        if roster.is_empty() {
            bail!("every node of the store was lost");
        }
        sesa_event::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks `node` to leave (its keys have moved) and tells the roster how that went.
async fn let_go(
    cx: &Cluster<'_>,
    roster: &mut Roster,
    members: &mut BTreeMap<NodeId, Member>,
    node: NodeId,
) {
    let clean = cx.leave(node).await.is_ok();
    members.remove(&node);
    roster.left(node, clean);
}

/// Waits until every node in `fencing` has exited (the roster had it stopped when it
/// was lost), for up to [`FENCE_WAIT`] each.
async fn fence(
    cx: &mut Cluster<'_>,
    roster: &mut Roster,
    fencing: &mut BTreeMap<NodeId, sesa_event::Instant>,
) {
    loop {
        fencing
            .retain(|node, since| !cx.has_exited(*node) && sesa_event::now() - *since < FENCE_WAIT);
        if fencing.is_empty() {
            return;
        }
        sesa_event::sleep(Duration::from_millis(20)).await;
        cx.observe(roster);
    }
}

/// The store's members with ids `ids`, by id, and those with ids `leaving` (ids of
/// nodes lost meanwhile left out).
fn pick(
    members: &BTreeMap<NodeId, Member>,
    ids: &[NodeId],
    leaving: &[NodeId],
) -> (BTreeMap<NodeId, Member>, Vec<Member>) {
    let get = |id: &NodeId| members.get(id).copied();
    (
        ids.iter().filter_map(get).map(|m| (m.node, m)).collect(),
        leaving.iter().filter_map(get).collect(),
    )
}

/// Changes the store's figures (what `sesa status` reads when asked).
fn update_status(status: &Mutex<StoreStatus>, f: impl FnOnce(&mut StoreStatus)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
}

/// The rebalance bar, on a terminal only (elsewhere, one line a second).
fn progress_bar() -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    // The template is a constant: it parses, or every bar would be missing.
    let style = indicatif::ProgressStyle::with_template(
        "sesa: {msg} [{wide_bar}] {pos}/{len} keys looked at ({elapsed})",
    )
    .ok()?;
    bar.set_style(style.progress_chars("=> "));
    Some(bar)
}

/// How the store places keys, as `sesa status` and the log say it: the layout, and
/// ketama placement where it is used.
fn layout_name(settings: &KvSettings) -> String {
    match (settings.layout, settings.placement) {
        (store::Layout::Partitioned, store::Placement::Ketama) => "Partitioned (ketama)".into(),
        (layout, _) => format!("{layout:?}"),
    }
}

/// Sends the next view (`next`: of its members, to them and to the nodes leaving) to
/// the store's nodes through its coordinator, or (`None`) the newest one again, waits
/// until each has moved its keys (a progress bar on a terminal, else a line a second),
/// then settles it. Returns whether it settled (every key on its owners in the view).
async fn change_view(
    cx: &Cluster<'_>,
    status: &Mutex<StoreStatus>,
    coordinator: &mut Coordinator,
    next: Option<(&BTreeMap<NodeId, Member>, &[Member])>,
    settings: &KvSettings,
) -> anyhow::Result<bool> {
    let newest = coordinator.view().map_or(0, |v| v.epoch);
    let epoch = if next.is_some() { newest + 1 } else { newest };
    let members: BTreeMap<NodeId, Member> = match next {
        Some((members, _)) => members.clone(),
        None => coordinator
            .view()
            .map(|v| v.members.iter().map(|m| (m.node, *m)).collect())
            .unwrap_or_default(),
    };
    update_status(status, |s| {
        s.epoch = epoch;
        s.replicas = settings.replicas.min(members.len() as u32).max(1);
        s.layout = layout_name(settings);
        s.ports.retain(|node, _| members.contains_key(node));
    });
    let bar = (epoch > 1).then(progress_bar).flatten();
    let mut last_said = sesa_event::now();
    let progress = |r: &store::Rebalance| {
        update_status(status, |s| s.rebalance = (r.epoch > 1).then(|| r.clone()));
        if r.epoch == 1 {
            return;
        }
        if let Some(bar) = &bar {
            bar.set_length(r.keys_total);
            bar.set_position(r.keys_seen.min(r.keys_total));
            bar.set_message(format!(
                "view {}: {} of {} node(s) done, {} copies sent",
                r.epoch, r.nodes_done, r.nodes, r.copies_sent
            ));
        } else if !r.finished && sesa_event::now() - last_said >= Duration::from_secs(1) {
            last_said = sesa_event::now();
            cx.report(Event::Note(r.line()));
        }
    };
    let r = match next {
        Some((members, leaving)) => coordinator.change(members, leaving, progress).await,
        None => match coordinator.resume(progress).await {
            Some(r) => r,
            None => return Ok(true),
        },
    };
    let ids = members.keys().copied().collect();
    if let Some(view) = coordinator.view().filter(|v| v.epoch == 1) {
        cx.report(Event::View {
            epoch,
            members: ids,
            settled: true,
            detail: format!(
                "the store is up on {} node(s), {} owner(s) per key, {} layout",
                view.members.len(),
                view.replicas,
                layout_name(settings)
            ),
        });
        return Ok(true);
    }
    if let Some(bar) = &bar {
        if r.finished {
            bar.finish_and_clear();
        } else {
            bar.abandon();
        }
    }
    let detail = match r.finished {
        true => r.line(),
        false if r.untaken > 0 => format!(
            "view {}: {} node(s) did not take it (lost?); the next view leaves them out",
            r.epoch, r.untaken
        ),
        false => format!(
            "view {}: {} node(s) still moving keys after {:?}",
            r.epoch,
            r.nodes - r.nodes_done,
            coordinator.limit
        ),
    };
    cx.report(Event::View {
        epoch,
        members: ids,
        settled: r.finished,
        detail,
    });
    Ok(r.finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_dropped_only_while_every_key_keeps_a_copy() {
        let mut losses = Losses::default();
        // Before any view settled: keys may be on one owner only.
        assert!(!losses.may_drop(3, 2));
        losses.view(true);
        assert!(losses.may_drop(3, 2));
        // The last member holds every key's last copy.
        assert!(!losses.may_drop(1, 2));
        // With one owner per key, no member can go.
        assert!(!losses.may_drop(3, 1));
        // One loss since the settled view: a second could take both copies of a key.
        losses.lost(NodeId::new(2));
        assert!(!losses.may_drop(3, 2));
        assert!(losses.may_drop(4, 3));
        // A view that does not settle keeps the count; one that settles clears it.
        losses.view(false);
        assert!(!losses.may_drop(4, 3));
        losses.view(true);
        assert!(losses.may_drop(3, 2));
    }
}
