//! A view change on a node: installing the view, and moving the keys whose owners
//! changed, paced so that clients keep most of the node's cores.

use super::*;

impl Node {
    /// Installs the change's view if it is newer than the current one, once connected to
    /// each of its nodes, and starts moving this node's keys to it.
    pub(super) async fn install(&'static self, change: ViewChange) -> Result<(), StoreError> {
        let ViewChange { view, previous } = change;
        self.connect_to(&view).await?;
        if let Some(settled) = &previous {
            let current = self.current();
            if view.epoch > current.epoch {
                self.drop_leftovers(settled, &current).await;
            }
        }
        let old = {
            let mut views = self.views.write();
            if view.epoch <= views.current.epoch {
                return Ok(());
            }
            let old = core::mem::replace(&mut views.current, Arc::new(view.clone()));
            // Not acted on before every member took it (`StoreRequest::Activate`).
            views.active = false;
            // The cluster's settled view, not this node's last: its owners still hold
            // every key (no node drops a key before the move settles), so the keys move
            // from them, and a new owner (a node that just joined included) pulls from
            // them a key it has not been sent yet.
            views.previous = previous.map(Arc::new);
            match &views.previous {
                Some(settled) => settled.clone(),
                None => old,
            }
        };
        // In the order they began to wait (they wait on for its activation).
        self.wake_view_waiters();
        self.note(|p| {
            *p = Progress {
                epoch: view.epoch,
                done: old.epoch == 0,
                ..Progress::default()
            };
        });
        if old.epoch > 0 {
            sesa_event::spawn_local(self.rebalance((*old).clone(), view));
        }
        Ok(())
    }

    /// Waits until this node is connected to every node of `view` (the membership layer
    /// makes the connections), for up to [`CONNECT_WAIT`].
    pub(super) async fn connect_to(&self, view: &View) -> Result<(), StoreError> {
        let deadline = sesa_event::now() + CONNECT_WAIT;
        for m in &view.members {
            while m.node != self.me && !self.connected(m.node).await {
                if sesa_event::now() > deadline {
                    return Err(StoreError::NotConnected {
                        me: self.me,
                        node: m.node,
                    });
                }
                sesa_event::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(())
    }

    /// Moves this node's keys from `old` to `new`, core by core.
    pub(super) async fn rebalance(&'static self, old: View, new: View) {
        let epoch = new.epoch;
        // What there is to look at, so that the frontend can show how far along it is.
        let held = self
            .kv
            .each_partition(|p, now| p.live_keys(now) as u64)
            .await;
        let total = held.map_or(0, |counts| counts.iter().sum());
        self.note(|p| {
            if p.epoch == epoch {
                p.keys_total = total;
            }
        });
        for core in sesa_event::all_cores() {
            let (old, new) = (old.clone(), new.clone());
            let _ = sesa_event::spawn_on_async(core, move || self.rebalance_core(old, new)).await;
        }
        self.note(|p| {
            if p.epoch == epoch {
                p.done = true;
            }
        });
    }

    /// [`Node::rebalance`] on one core's partition: the keys are found, planned, copied
    /// and dropped a slice at a time ([`Partition::scan`](super::store::Partition::scan):
    /// a 256th of them), with a yield after each, so that the core goes on serving
    /// clients and answering membership probes while a million keys move (a core busy
    /// for seconds would be declared down). The keys are not copied out all at once
    /// first: for a million keys that took every node's core for 200-300 ms at the
    /// start of a move, most of it the kernel zeroing the fresh pages.
    pub(super) async fn rebalance_core(&'static self, old: View, new: View) {
        let mut scan = Scan::default();
        let mut pace = Pace::of(&old, &new);
        let mut owners = OwnersInBoth::new(&old, &new);
        while let Some(slice) = self.kv.with_partition(|p, now| p.scan(&mut scan, now)) {
            for keys in slice.chunks(SCAN) {
                self.rebalance_slice(&mut owners, keys, &mut pace).await;
                self.note(|p| p.keys_seen += keys.len() as u64);
                sesa_event::yield_now().await;
            }
        }
        // The tombstones too: a key's new primary must know of its deletion, or its
        // next write would get a cas lower than the deletion's, which the key's other
        // owners (keeping the tombstone) would refuse.
        let buried = self.kv.with_partition(|p, _| p.buried());
        for keys in buried.chunks(SCAN) {
            self.rebalance_slice(&mut owners, keys, &mut pace).await;
            sesa_event::yield_now().await;
        }
    }

    pub(super) async fn rebalance_slice(
        &'static self,
        owners: &mut OwnersInBoth<'_>,
        keys: &[Vec<u8>],
        pace: &mut Pace,
    ) {
        let new = owners.new;
        let mut outgoing: BTreeMap<(NodeId, u32), Vec<&[u8]>> = BTreeMap::new();
        for key in keys {
            let (before, after) = owners.of(key);
            let pusher = before.iter().find(|m| new.has(m.node)).map(|m| m.node);
            // A key held here that no surviving old owner claims (this node joined
            // late, say) is pushed from here.
            if pusher == Some(self.me) || pusher.is_none() {
                for m in after {
                    if m.node != self.me && !before.iter().any(|b| b.node == m.node) {
                        let core = owner(key, m.cores as usize).index() as u32;
                        outgoing.entry((m.node, core)).or_default().push(key);
                    }
                }
            }
        }
        for ((node, core), keys) in outgoing {
            let Some(m) = new.members.iter().find(|m| m.node == node) else {
                continue;
            };
            let core = CoreId::new(core);
            for chunk in keys.chunks(BATCH) {
                let started = sesa_event::now();
                // Sent until it is taken: the move is not done without it. Only a newer
                // view ends the tries (its own move starts from the settled view again).
                loop {
                    // The items are read when sending (each time: a copy sent again after
                    // a cut is no older than the key became meanwhile), so the copy is as
                    // fresh as this core's partition (writes here and copies leave this
                    // core in order).
                    let copies: Vec<KeyCopy> = self.kv.with_partition(|p, now| {
                        chunk
                            .iter()
                            .filter_map(|&key| {
                                let held = p.peek_held(key, now)?;
                                Some(KeyCopy {
                                    key: key.to_vec(),
                                    state: Some(held.into()),
                                })
                            })
                            .collect()
                    });
                    let sent = copies.len() as u64;
                    let put = StoreRequest::Put {
                        epoch: new.epoch,
                        copies,
                    };
                    match client(self.messenger, *m, core).call_ref(&put).await {
                        Ok(_) => {
                            self.note(|p| p.copies_sent += sent);
                            break;
                        }
                        Err(e) if self.current().epoch == new.epoch => {
                            tracing::debug!(node = %node, "keys not copied yet: {e}");
                            let _ = self.next_view(new.epoch, node).await;
                        }
                        Err(e) => {
                            tracing::warn!(node = %node, "keys not copied: {e}");
                            self.note(|p| p.failures += sent);
                            break;
                        }
                    }
                }
                pace.after(sesa_event::now() - started).await;
            }
        }
    }

    /// Once a view settled (every node moved its keys to it): drops, core by core, the
    /// keys this node no longer owns (unless a newer view comes first).
    pub(super) async fn drop_unowned(&'static self, view: Arc<View>) {
        let (me, epoch) = (self.me, view.epoch);
        let owned = move |key: &[u8]| view.owners(key).iter().any(|m| m.node == me);
        if self.drop_keys(owned, Some(epoch)).await {
            self.dropped.fetch_max(epoch, Ordering::Relaxed);
        }
    }

    /// Before this node takes a view whose keys move from the settled view `settled`,
    /// if it has not dropped the keys it did not own there (a newer view came before the
    /// sweep was done): drops them now, but those it owns in `current` (a view since,
    /// whose writes it got). A copy left from before `settled` may be older than the
    /// key's last writes, and a new owner holding it would not ask the settled owners.
    pub(super) async fn drop_leftovers(&'static self, settled: &View, current: &View) {
        if self.dropped.load(Ordering::Relaxed) >= settled.epoch {
            return;
        }
        let (me, settled_view, current_view) = (self.me, settled.clone(), current.clone());
        let owned = move |key: &[u8]| {
            let mine = |v: &View| v.owners(key).iter().any(|m| m.node == me);
            mine(&settled_view) || mine(&current_view)
        };
        self.drop_keys(owned, None).await;
        self.dropped.fetch_max(settled.epoch, Ordering::Relaxed);
    }

    /// Drops, core by core, the keys `keep` does not keep; stops (`false`) when the
    /// current view is no longer `epoch`, if given.
    async fn drop_keys(
        &'static self,
        keep: impl Fn(&[u8]) -> bool + Clone + Send + 'static,
        epoch: Option<u64>,
    ) -> bool {
        for core in sesa_event::all_cores() {
            let keep = keep.clone();
            let done = sesa_event::spawn_on_async(core, move || async move {
                let mut scan = Scan::default();
                while let Some(slice) = self.kv.with_partition(|p, now| p.scan(&mut scan, now)) {
                    for keys in slice.chunks(SCAN) {
                        if epoch.is_some_and(|e| self.current().epoch != e) {
                            return false; // A newer view: its own settling drops them.
                        }
                        let dropped = self.kv.with_partition(|p, now| {
                            let mut n = 0;
                            for key in keys {
                                if !keep(key) && p.import(key, None, now) {
                                    n += 1;
                                }
                            }
                            n
                        });
                        self.note(|p| p.keys_dropped += dropped);
                        sesa_event::yield_now().await;
                    }
                }
                true
            })
            .await;
            if !done.unwrap_or(false) {
                return false;
            }
        }
        true
    }
}

/// How a move's copying rests, so that the node's clients keep most of its core: after
/// each batch, for [`PACE_REST_JOIN`] (or [`PACE_REST_LOSS`]) times as long as the
/// batch took (its encoding, the round trip, the new owner's installing). The rest is
/// owed until it is worth a sleep ([`PACE_SLEEP`]): the timers' resolution is a
/// millisecond, so a sleep after each batch shorter than that would rest longer than
/// asked.
pub(super) struct Pace {
    /// The rest, in multiples of a batch's time.
    pub(super) rest: u32,
    pub(super) owed: Duration,
}

impl Pace {
    /// The pace of a move from `old` to `new`: gentle only when nodes just joined a
    /// store whose keys all had their owners already, so that no key has fewer copies
    /// than it should while it moves. A node (re)joining a store left with fewer nodes
    /// than owners per key restores lost copies: that is urgent too (a simulated run,
    /// seed 3089, lost a write when the last old owner crashed during a gentle move).
    pub(super) fn of(old: &View, new: &View) -> Pace {
        let joined_only = old.members.iter().all(|m| new.has(m.node));
        let redundant = old.replicas >= new.replicas;
        Pace {
            rest: if joined_only && redundant {
                PACE_REST_JOIN
            } else {
                PACE_REST_LOSS
            },
            owed: Duration::ZERO,
        }
    }

    pub(super) async fn after(&mut self, took: Duration) {
        self.owed += took.min(PACE_MAX) * self.rest;
        if self.owed >= PACE_SLEEP {
            let start = sesa_event::now();
            sesa_event::sleep(self.owed).await;
            self.owed = self.owed.saturating_sub(sesa_event::now() - start);
        }
    }
}

/// A move of keys to a new view: every node's [`Progress`] summed, as the frontend last
/// read it.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebalance {
    /// The view the keys move to.
    pub epoch: u64,
    /// Nodes done moving their keys.
    pub nodes_done: u32,
    /// Nodes moving keys (the view's, and any leaving it).
    pub nodes: u32,
    /// Keys the nodes held when the move began.
    pub keys_total: u64,
    /// Keys looked at so far.
    pub keys_seen: u64,
    /// Copies sent to new owners.
    pub copies_sent: u64,
    /// Keys dropped by nodes that no longer own them.
    pub keys_dropped: u64,
    /// Copies that could not be sent.
    pub failures: u64,
    /// Milliseconds since the view was sent.
    pub elapsed_ms: u64,
    /// Whether every node is done (every node of the change took the view, and moved
    /// its keys).
    pub finished: bool,
    /// Nodes of the change that did not take the view (lost after the view was made):
    /// the next view leaves them out.
    #[serde(default)]
    pub untaken: u32,
}

impl Rebalance {
    /// One line for people: `view 3: 2 of 4 node(s) moved their keys; ...`.
    pub fn line(&self) -> String {
        format!(
            "view {}: {} of {} node(s) moved their keys; {} copies sent, {} keys dropped, {} failed{}",
            self.epoch,
            self.nodes_done,
            self.nodes,
            self.copies_sent,
            self.keys_dropped,
            self.failures,
            if self.finished {
                format!(" ({} ms)", self.elapsed_ms)
            } else {
                format!(
                    " ({} of {} keys looked at)",
                    self.keys_seen, self.keys_total
                )
            }
        )
    }
}
