//! The store's frontend side (`sesa kv --nodes N`): the data store on an elastic
//! cluster of node processes.
//!
//! The nodes hold the keys (`sesa_apps::memcache::cluster`); the frontend owns the
//! membership. It starts the store on every node, hands out views of the store's nodes,
//! and changes the view when a node joins (`sesa scale`, or by hand), is asked to leave,
//! or is lost (its process exited, or SWIM declared it down). After each change it waits
//! until every node has moved its keys, printing the progress, then lets the nodes stop
//! asking the previous owners for keys that are still moving (`SETTLE`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Kv, KvSettings, Serving, StoreStatus};
use anyhow::{anyhow, bail};
use sesa_apps::memcache::cluster::{self as store, Coordinator, Member};
use sesa_exec::MessengerRef;
use sesa_frontend::{Application, Cluster, Event, JOIN_TIMEOUT, Register};

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
    let call = store::call(messenger, member, store::PROGRESS, Vec::new());
    sesa_event::timeout(within, call)
        .await
        .is_some_and(|reply| reply.is_ok())
}

/// Starts the store on a registered node; its port and view member.
async fn start_store(
    cx: &Cluster<'_>,
    r: &Register,
    settings: &KvSettings,
) -> anyhow::Result<(u16, Member)> {
    let Serving { port, member } = cx.run_on::<Kv>(r, settings).await?;
    Ok((port, member))
}

/// The frontend's loop for the store: runs until the frontend is stopped (Ctrl-C), or
/// fails when every node is lost.
async fn frontend(
    cx: &mut Cluster<'_>,
    settings: KvSettings,
) -> anyhow::Result<std::convert::Infallible> {
    let first = cx.first_nodes().clone();
    let mut members: BTreeMap<u32, Member> = BTreeMap::new();
    // Nodes ever part of the store (a lost node that registered is not taken back).
    let mut known: BTreeSet<u32> = BTreeSet::new();
    let mut launched: BTreeSet<u32> = first.keys().copied().collect();
    let status = Arc::new(Mutex::new(StoreStatus {
        listen: Some(settings.listen),
        ..StoreStatus::default()
    }));
    cx.show_status("store", status.clone(), StoreStatus::lines);
    for r in first.values() {
        let (port, member) = start_store(cx, r, &settings).await?;
        serving(&status, r.node, settings.listen, port);
        members.insert(r.node, member);
        known.insert(r.node);
    }
    let mut coordinator = Coordinator::new(cx.messenger(), settings.replicas, settings.layout);
    change_view(cx, &status, &mut coordinator, &members, &[], &settings).await?;
    cx.accept_scaling(true);
    let mut pending: Option<(u64, u32, Instant)> = None;
    loop {
        // Lost nodes: their process exited, or SWIM declared them down.
        let mut lost = Vec::new();
        while let Some((node, status)) = cx.exited() {
            if members.remove(&node).is_some() {
                cx.report(Event::Lost {
                    node,
                    cause: format!("exited ({status})"),
                    then: "its keys get new replicas".into(),
                });
                lost.push(node);
            }
        }
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
            members.remove(&node);
            cx.report(Event::Lost {
                node,
                cause: "declared down and silent".into(),
                then: "its keys get new replicas".into(),
            });
            cx.stop_node(node, Duration::from_secs(2));
            lost.push(node);
        }
        if members.is_empty() {
            bail!("every node of the store was lost");
        }
        // Newcomers: launched by a scale request, or joined by hand.
        let mut joined = Vec::new();
        for r in cx.registered() {
            if known.insert(r.node) {
                cx.report(Event::Joined {
                    node: r.node,
                    cores: r.cores,
                });
                match start_store(cx, &r, &settings).await {
                    Ok((port, member)) => {
                        serving(&status, r.node, settings.listen, port);
                        members.insert(r.node, member);
                        joined.push(r.node);
                    }
                    Err(e) => {
                        cx.report(Event::Note(format!("node {} cannot serve: {e:#}", r.node)))
                    }
                }
            }
        }
        if !lost.is_empty() || !joined.is_empty() {
            change_view(cx, &status, &mut coordinator, &members, &[], &settings).await?;
        }
        // Scale requests.
        if let Some((target, request)) = cx.take_scale_request() {
            let since = Instant::now();
            let target_n = target as usize;
            for _ in members.len()..target_n {
                launched.insert(cx.launch()?);
            }
            if members.len() > target_n {
                // The newest nodes leave: they move their keys away first.
                let leaving: Vec<Member> = members
                    .values()
                    .rev()
                    .take(members.len() - target_n)
                    .copied()
                    .collect();
                for m in &leaving {
                    members.remove(&m.node);
                    cx.report(Event::Leaving { node: m.node });
                }
                change_view(cx, &status, &mut coordinator, &members, &leaving, &settings).await?;
                for m in &leaving {
                    let_go(cx, m.node, launched.contains(&m.node)).await;
                }
            }
            pending = Some((request, target, since));
        }
        if let Some((request, target, since)) = pending {
            let took = since.elapsed();
            if members.len() == target as usize {
                let epoch = coordinator.view().map_or(0, |v| v.epoch);
                let outcome = format!("{target} node(s) in {} ms (view {epoch})", took.as_millis());
                cx.scale_served(request, outcome);
                pending = None;
            } else if took > JOIN_TIMEOUT {
                let have = members.len();
                cx.scale_served(
                    request,
                    format!("only {have} of {target} node(s) after {took:?}"),
                );
                pending = None;
            }
        }
        sesa_event::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints the line clients (and tests) look for, and notes the port for `sesa status`.
fn serving(status: &Mutex<StoreStatus>, node: u32, listen: std::net::IpAddr, port: u16) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "node {node} listening on {}",
        std::net::SocketAddr::new(listen, port)
    );
    let _ = out.flush();
    update_status(status, |s| {
        s.ports.insert(node, port);
    });
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

/// Stops a node that has left the store: it is asked to leave (it stops by itself), and
/// our own process is also stopped through the provider if it does not.
async fn let_go(cx: &mut Cluster<'_>, node: u32, ours: bool) {
    let _ = cx.leave(node).await;
    if ours {
        cx.stop_node(node, Duration::from_secs(5));
    }
}

/// Sends the next view (of `members`) to every member and to `leaving` through the
/// store's coordinator, waits until each has moved its keys (a progress bar on a
/// terminal, else a line a second), then settles it.
async fn change_view(
    cx: &Cluster<'_>,
    status: &Mutex<StoreStatus>,
    coordinator: &mut Coordinator,
    members: &BTreeMap<u32, Member>,
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
    let mut last_said = Instant::now();
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
            } else if !r.finished && last_said.elapsed() >= Duration::from_secs(1) {
                last_said = Instant::now();
                cx.report(Event::Note(r.line()));
            }
        })
        .await
        .map_err(|e| anyhow!("view {epoch}: {e}"))?;
    if let Some(view) = coordinator.view().filter(|v| v.epoch == 1) {
        cx.report(Event::Note(format!(
            "the store is up on {} node(s), {} owner(s) per key, {:?} layout",
            view.members.len(),
            view.replicas,
            view.layout
        )));
        return Ok(());
    }
    if let Some(bar) = &bar {
        if r.finished {
            bar.finish_and_clear();
        } else {
            bar.abandon();
        }
    }
    if r.finished {
        cx.report(Event::Note(r.line()));
    } else {
        cx.report(Event::Note(format!(
            "view {}: {} node(s) still moving keys after {:?}",
            r.epoch,
            r.nodes - r.nodes_done,
            coordinator.limit
        )));
    }
    Ok(())
}
