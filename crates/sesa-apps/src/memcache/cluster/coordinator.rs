//! The frontend's side: sending views to the nodes and following their moves.

use super::*;

/// The frontend's side of membership changes: it numbers the views, sends each to the
/// store's nodes, waits until they have moved their keys, and settles it. Portable: the
/// `sesa kv` frontend and the simulator's store workload drive the same code.
pub struct Coordinator {
    messenger: MessengerRef,
    replicas: u32,
    layout: Layout,
    placement: Placement,
    /// The newest view sent.
    last: Option<View>,
    /// The newest view that settled: every key on all its owners. The nodes keep the
    /// keys they held in it until the next one settles.
    settled: Option<View>,
    /// The newest change and the nodes leaving with it, while it has not settled.
    pending: Option<(ViewChange, Vec<Member>)>,
    /// How long a change may take before the coordinator stops waiting for it.
    pub limit: Duration,
}

impl Coordinator {
    /// A coordinator of a store with `replicas` owners per key, `layout` and (for a
    /// partitioned one) `placement`.
    pub fn new(
        messenger: MessengerRef,
        replicas: u32,
        layout: Layout,
        placement: Placement,
    ) -> Self {
        Coordinator {
            messenger,
            replicas,
            layout,
            placement,
            last: None,
            settled: None,
            pending: None,
            limit: Duration::from_secs(120),
        }
    }

    /// The last view sent.
    pub fn view(&self) -> Option<&View> {
        self.last.as_ref()
    }

    /// Sends the next view (of `members`) to every member and to `leaving`, waits until
    /// each has moved its keys, calling `progress` with the figures after every round
    /// (every 20 ms), then settles the view. Returns the last figures (`finished` is
    /// false if [`limit`](Self::limit) passed first, or some node did not take the view:
    /// the view is then not settled, and [`Coordinator::resume`] waits for it again).
    /// The change's previous view is the newest settled one: the keys move from where
    /// they all were.
    pub async fn change(
        &mut self,
        members: &BTreeMap<NodeId, Member>,
        leaving: &[Member],
        progress: impl FnMut(&Rebalance),
    ) -> Rebalance {
        let view = View::new(
            self.last.as_ref().map_or(0, |v| v.epoch) + 1,
            members.values().copied().collect(),
            self.replicas.min(members.len() as u32).max(1),
            self.layout,
            self.placement,
        );
        self.last = Some(view.clone());
        let change = ViewChange {
            view,
            previous: self.settled.clone(),
        };
        let pending = (change, leaving.to_vec());
        self.pending = Some(pending.clone());
        self.drive(pending, progress).await
    }

    /// Sends the newest change again (to nodes that did not take it) and waits for its
    /// move once more; `None` if it settled already.
    pub async fn resume(&mut self, progress: impl FnMut(&Rebalance)) -> Option<Rebalance> {
        let pending = self.pending.clone()?;
        Some(self.drive(pending, progress).await)
    }

    /// [`Coordinator::change`]'s work on the pending change (and the nodes leaving).
    async fn drive(
        &mut self,
        (change, leaving): (ViewChange, Vec<Member>),
        mut progress: impl FnMut(&Rebalance),
    ) -> Rebalance {
        let (epoch, leaving) = (change.view.epoch, leaving.as_slice());
        let members: BTreeMap<NodeId, Member> =
            change.view.members.iter().map(|m| (m.node, *m)).collect();
        let started = sesa_event::now();
        let messenger = self.messenger;
        // First every node connects to every other (a new one's connections are being
        // made by the membership layer, each node on its own time), so that they all
        // take the view within moments of one another: a node that had it would ship
        // requests of the new view to one still connecting, where they would wait (a
        // quarter of a second with the whole store stalled, measured, when nodes were
        // sent the view straight away). One that fails here is told the view anyway, and
        // its failure to take it is handled below.
        if epoch > 1 {
            let calls: Vec<_> = members
                .values()
                .chain(leaving)
                .map(|m| {
                    let (m, connect) = (*m, StoreRequest::Connect(change.view.clone()));
                    sesa_event::spawn_local(async move { call(messenger, m, connect).await })
                })
                .collect();
            for call in calls {
                let _ = call.await;
            }
        }
        // Every node must take the view: one that misses it (a connection being
        // re-established, say) would own keys without knowing. Those that fail are asked
        // again for up to `VIEW_WAIT`; a node still silent then is lost, and the next
        // view (the frontend's, when it notices) handles it.
        let mut told: Vec<Member> = Vec::new();
        let mut untold: Vec<Member> = members.values().chain(leaving).copied().collect();
        // Nodes that never took the view.
        let untaken;
        loop {
            let calls: Vec<_> = untold
                .iter()
                .map(|m| {
                    let (m, install) = (*m, StoreRequest::View(change.clone()));
                    let install = async move { call(messenger, m, install).await };
                    (m, sesa_event::spawn_local(install))
                })
                .collect();
            let mut failed = Vec::new();
            for (m, call) in calls {
                match call.await {
                    Ok(Ok(_)) => told.push(m),
                    Ok(Err(e)) => failed.push((m, e.to_string())),
                    Err(e) => failed.push((m, e.to_string())),
                }
            }
            if failed.is_empty() || sesa_event::now() - started > VIEW_WAIT {
                // A leaving node that cannot be reached (it died while leaving) does not
                // hold the move up: its keys have other owners, which move them.
                untaken = failed
                    .iter()
                    .filter(|(m, _)| members.contains_key(&m.node))
                    .count();
                for (m, e) in failed {
                    tracing::warn!(node = %m.node, epoch, error = %e, "view not taken");
                }
                break;
            }
            untold = failed.into_iter().map(|(m, _)| m).collect();
            sesa_event::sleep(Duration::from_millis(20)).await;
        }
        // Acted on only once every member took it: a member that has not (its view
        // older) may still act as a key's owner there, and two nodes acting as a key's
        // primary under two views could each acknowledge writes the other does not see.
        // A view not taken by some member is not acted on (its requests wait, then are
        // refused) until it is, or a newer view leaves that member out.
        if untaken == 0 {
            let calls: Vec<_> = told
                .iter()
                .map(|m| {
                    let (m, activate) = (*m, StoreRequest::Activate { epoch });
                    sesa_event::spawn_local(async move { call(messenger, m, activate).await })
                })
                .collect();
            for call in calls {
                // One that missed it (lost since) is handled as one that did not move
                // its keys: the view does not settle, and is sent again.
                let _ = call.await;
            }
        }
        let mut r = Rebalance {
            epoch,
            nodes: told.len() as u32,
            untaken: untaken as u32,
            ..Rebalance::default()
        };
        if untaken > 0 {
            // Not settled, nor acted on: the caller sends it again (its moves wait for
            // the members that have not taken it) or a newer view.
            r.elapsed_ms = (sesa_event::now() - started).as_millis() as u64;
            progress(&r);
            return r;
        }
        if epoch > 1 {
            // Since when some node has not answered how far it is (`None`: all did).
            let mut silent_since: Option<sesa_event::Instant> = None;
            loop {
                r = Rebalance {
                    epoch,
                    nodes: told.len() as u32,
                    untaken: untaken as u32,
                    ..Rebalance::default()
                };
                let (mut waiting, mut silent) = (0, false);
                for m in &told {
                    let Ok(StoreReply::Progress(p)) =
                        call(messenger, *m, StoreRequest::Progress).await
                    else {
                        // Not done for all that is known: settling without its keys
                        // moved would lose them. If it stays silent, the change is left
                        // unsettled (sent again, or replaced by a view without it).
                        waiting += 1;
                        silent = true;
                        continue;
                    };
                    if p.epoch == epoch && !p.done {
                        waiting += 1;
                    }
                    r.keys_total += p.keys_total;
                    r.keys_seen += p.keys_seen;
                    r.copies_sent += p.copies_sent;
                    r.keys_dropped += p.keys_dropped;
                    r.failures += p.failures;
                }
                r.nodes_done = r.nodes - waiting;
                // Done only if every node of the change took the view: one that did not
                // (lost after it was chosen) may own keys nobody has moved.
                r.finished = waiting == 0 && untaken == 0;
                r.elapsed_ms = (sesa_event::now() - started).as_millis() as u64;
                progress(&r);
                // The nodes that took the view are done (or time is up, or one has not
                // answered for `VIEW_WAIT`): the ones that did not are left to the next
                // view, or to this one sent again.
                if !silent {
                    silent_since = None;
                }
                let now = sesa_event::now();
                let silent_too_long = silent && now - *silent_since.get_or_insert(now) > VIEW_WAIT;
                if waiting == 0 || silent_too_long || sesa_event::now() - started > self.limit {
                    break;
                }
                sesa_event::sleep(Duration::from_millis(20)).await;
            }
        } else {
            // The first view: nothing to move, nothing to settle; done once taken.
            r.finished = untaken == 0;
            r.nodes_done = r.nodes;
            progress(&r);
            if r.finished {
                self.settled = Some(change.view);
                self.pending = None;
            }
            return r;
        }
        // Settled only when every node moved its keys: until then the nodes keep the
        // keys they held in the settled view, and new owners pull from them.
        if r.finished {
            for m in &told {
                let _ = call(messenger, *m, StoreRequest::Settle { epoch }).await;
            }
            self.settled = Some(change.view);
            self.pending = None;
        }
        r
    }
}
