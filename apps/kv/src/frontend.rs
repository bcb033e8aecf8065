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
    let mut coordinator = Coordinator::new(cx.messenger(), settings.replicas, settings.layout);
    cx.accept_scaling(true);
    loop {
        cx.observe(&mut roster);
        for node in cx.take_down() {
            let Some(&member) = members.get(&node) else {
                continue;
            };
            // Removing a node drops a copy of its keys: on SWIM's word alone, a few
            // nodes busy for a second could all be removed at once and the keys lost
            // with them. A node that still answers is slow, not down.
            if answers(cx.messenger(), member, CONFIRM).await {
                cx.report(Event::Note(format!(
                    "node {node} was declared down but answers; it stays"
                )));
                continue;
            }
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
                    let pick = |ids: &[NodeId]| -> Vec<Member> {
                        ids.iter()
                            .filter_map(|id| members.get(id).copied())
                            .collect()
                    };
                    let view = pick(&ids).into_iter().map(|m| (m.node, m)).collect();
                    let leaving = pick(&leaving);
                    for m in &leaving {
                        cx.report(Event::Leaving { node: m.node });
                    }
                    change_view(cx, &status, &mut coordinator, &view, &leaving, &settings).await?;
                }
                // A leaving node has moved its keys away with the view; it stops by
                // itself once asked, and ours are also stopped if they do not.
                Action::Leave(node) => {
                    let clean = cx.leave(node).await.is_ok();
                    members.remove(&node);
                    roster.left(node, clean);
                }
                Action::Left { node, clean } => {
                    if !clean {
                        cx.report(Event::Note(format!("node {node} did not answer its leave")));
                    }
                    cx.report(Event::Left { node });
                }
                Action::Launch | Action::Stop { .. } | Action::Scaled { .. } => {}
            }
        }
        if roster.is_empty() {
            bail!("every node of the store was lost");
        }
        sesa_event::sleep(Duration::from_millis(20)).await;
    }
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

/// Sends the next view (of `members`) to every member and to `leaving` through the
/// store's coordinator, waits until each has moved its keys (a progress bar on a
/// terminal, else a line a second), then settles it.
async fn change_view(
    cx: &Cluster<'_>,
    status: &Mutex<StoreStatus>,
    coordinator: &mut Coordinator,
    members: &BTreeMap<NodeId, Member>,
    leaving: &[Member],
    settings: &KvSettings,
) -> anyhow::Result<()> {
    let epoch = coordinator.view().map_or(0, |v| v.epoch) + 1;
    update_status(status, |s| {
        s.epoch = epoch;
        s.replicas = settings.replicas.min(members.len() as u32).max(1);
        s.layout = format!("{:?}", settings.layout);
        s.ports.retain(|node, _| members.contains_key(node));
    });
    let bar = (epoch > 1).then(progress_bar).flatten();
    let mut last_said = sesa_event::now();
    let r = coordinator
        .change(members, leaving, |r| {
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
        })
        .await;
    let ids = members.keys().copied().collect();
    if let Some(view) = coordinator.view().filter(|v| v.epoch == 1) {
        cx.report(Event::View {
            epoch,
            members: ids,
            settled: true,
            detail: format!(
                "the store is up on {} node(s), {} owner(s) per key, {:?} layout",
                view.members.len(),
                view.replicas,
                view.layout
            ),
        });
        return Ok(());
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
    Ok(())
}
