//! A node of the store: requests routed to their key's primary, writes replicated to
//! the key's owners, the cached layout's invalidations, and the store's service.

use super::batch::{Forwarded, per_core};
use super::*;

/// Shared (`Arc`) so that a request takes a reference, not a copy of the member list.
#[derive(Default)]
pub(super) struct Views {
    pub(super) current: Arc<View>,
    /// Whether this node may act on `current` (as a key's owner): every member of it
    /// took it ([`StoreRequest::Activate`]), so none acts on an older one any more.
    pub(super) active: bool,
    /// The newest settled view (every key on all its owners), while keys move to
    /// `current` (until [`StoreRequest::Settle`]): its owners still hold every key.
    pub(super) previous: Option<Arc<View>>,
}

/// This node's part of the store.
pub struct Node {
    pub(super) me: NodeId,
    pub(super) messenger: MessengerRef,
    /// The node's partitions (its own `Kv`, without the cluster layer).
    pub(super) kv: Kv,
    pub(super) service: EbbId,
    pub(super) views: RwLock<Views>,
    pub(super) progress: Mutex<Progress>,
    /// Requests waiting for a newer view ([`Node::view_at_least`]), in the order they
    /// began to wait; woken in that order when one is installed.
    pub(super) view_waiters: Mutex<Vec<core::task::Waker>>,
    /// The newest settled view whose keys this node no longer owned it has dropped
    /// ([`Node::drop_unowned`], [`Node::drop_leftovers`]).
    pub(super) dropped: AtomicU64,
    /// Per core: invalidations received (the cached layout). A cache fill whose fetch
    /// raced one is not kept.
    pub(super) invalidations: Vec<AtomicU64>,
    /// Per core: clients' commands answered on this node, and those sent on to another
    /// ([`Routed`]).
    routed: Vec<Routed>,
    /// Per core: writes' copies waiting to go to their owners together (`batch`).
    pub(super) outboxes: super::batch::Outboxes,
    /// Per core: clients' commands waiting to go on to their nodes together (`batch`).
    pub(super) outgoing: super::batch::Outgoing,
}

/// One core's count of the clients' commands it answered on its node and those it
/// sent to another node, and of the batches it sent. Each core touches only its own,
/// so it sits on a cache line of its own (no false sharing between cores counting at
/// once).
#[repr(align(64))]
#[derive(Default)]
struct Routed {
    here: AtomicU64,
    shipped: AtomicU64,
    shipped_batches: AtomicU64,
    shipped_alone: AtomicU64,
    copies: AtomicU64,
    copy_batches: AtomicU64,
}

/// The server routes a node's commands through its cluster layer.
impl ClusterLayer for Node {
    fn reads_here(&self, key: &[u8]) -> bool {
        let here = self.holds_here(key);
        if here {
            self.count(&mut true, true);
        }
        here
    }

    fn routed(&self) -> Routing {
        self.routed.iter().fold(Routing::default(), |sum, r| {
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            Routing {
                here: sum.here + get(&r.here),
                sent_on: sum.sent_on + get(&r.shipped),
                sent_on_batches: sum.sent_on_batches + get(&r.shipped_batches),
                sent_on_alone: sum.sent_on_alone + get(&r.shipped_alone),
                copies: sum.copies + get(&r.copies),
                copy_batches: sum.copy_batches + get(&r.copy_batches),
            }
        })
    }

    fn execute(&'static self, op: Op, reads: Reads) -> ReplyFuture {
        Box::pin(self.route(op, 0, 0, reads))
    }

    fn flush_all(&'static self, delay: i64) -> ReplyFuture {
        Box::pin(self.flush_everywhere(delay))
    }

    fn cluster_config(&self) -> String {
        self.current().cluster_config()
    }
}

impl Node {
    /// Makes `kv` (this node's partitions) a member of a cluster store and serves the
    /// store's messages. Returns the node (it lives as long as the process) and the
    /// `Kv` to serve clients with, which routes every command through the cluster.
    /// Until the frontend sends the first view, commands wait for it.
    ///
    /// # Errors
    /// Off a core, out of EBB ids, or the messenger cannot be reached.
    pub async fn start(messenger: MessengerRef, kv: Kv) -> Result<(&'static Node, Kv), EventError> {
        let (service, _) = sesa_ebb::NodeShared::create(|| ())?;
        let (me, _) = messenger.identity_and_home().await?;
        // One per node process, for the life of the process: the store's requests run
        // on every core and need it without reference counting per request.
        let node: &'static Node = Box::leak(Box::new(Node {
            me: me.node,
            messenger,
            kv,
            service: service.id(),
            views: RwLock::new(Views::default()),
            progress: Mutex::new(Progress::default()),
            view_waiters: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            invalidations: (0..sesa_event::cores())
                .map(|_| AtomicU64::new(0))
                .collect(),
            routed: (0..sesa_event::cores())
                .map(|_| Routed::default())
                .collect(),
            outboxes: per_core(),
            outgoing: per_core(),
        }));
        sesa_exec::service::serve::<StoreService, _, _>(
            messenger,
            service.id(),
            move |_, request| node.answer(request),
        )
        .await?;
        Ok((node, kv.in_cluster(node)))
    }

    /// This node in a view (without a clients' address: the caller serving clients
    /// sets it).
    pub fn member(&self) -> Member {
        Member {
            node: self.me,
            service: self.service,
            cores: sesa_event::cores() as u32,
            addr: None,
        }
    }

    pub(super) fn views(&self) -> spin::RwLockReadGuard<'_, Views> {
        self.views.read()
    }

    pub(super) fn current(&self) -> Arc<View> {
        self.views().current.clone()
    }

    /// Whether this node owns `key` in `view` and, if keys are moving, owned it in the
    /// settled view too (so it holds every acknowledged write of it).
    /// (Every read answered at once asks this: no owner list is made.)
    pub(super) fn holds_for_sure(&self, view: &View, key: &[u8]) -> bool {
        view.owned_by(key, self.me)
            && self
                .views()
                .previous
                .as_ref()
                .is_none_or(|p| p.owned_by(key, self.me))
    }

    /// [`Node::holds_for_sure`], given the key's owners now and, while keys move, before.
    pub(super) fn holds_for_sure_among(&self, now: &[Member], before: Option<&[Member]>) -> bool {
        let mine = |owners: &[Member]| owners.iter().any(|m| m.node == self.me);
        mine(now) && before.is_none_or(mine)
    }

    /// `key`'s owners in the settled view, while keys move to the current one.
    pub(super) fn owners_before(&self, key: &[u8]) -> Option<Vec<Member>> {
        self.views().previous.as_ref().map(|p| p.owners(key))
    }

    /// This node's rebalance progress.
    pub fn progress(&self) -> Progress {
        self.progress.lock().clone()
    }

    pub(super) fn note(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress.lock());
    }

    /// What this node answers to `request` (the store's service).
    pub(super) async fn answer(
        &'static self,
        request: StoreRequest,
    ) -> Result<StoreReply, StoreError> {
        let on_key_core =
            |key: &[u8]| owner(key, sesa_event::cores()) == sesa_event::current_core();
        match request {
            StoreRequest::Exec { epoch, hops, op } => Ok(StoreReply::Reply(
                self.run_shipped(Shipped {
                    epoch,
                    hops,
                    read: false,
                    op,
                })
                .await,
            )),
            StoreRequest::Read { epoch, hops, op } => {
                if op.writes() {
                    return Err(StoreError::WriteAsRead);
                }
                Ok(StoreReply::Reply(
                    self.run_shipped(Shipped {
                        epoch,
                        hops,
                        read: true,
                        op,
                    })
                    .await,
                ))
            }
            StoreRequest::Batch(commands) => self.answer_batch(commands).await,
            StoreRequest::Put { epoch, mut copies } => {
                if !copies.iter().all(|c| on_key_core(&c.key)) {
                    return Err(StoreError::WrongCore);
                }
                // Copies of a newer view are taken under it: under the older one, this
                // node could drop them as keys it does not own (its settling's sweep).
                if self.installed_at_least(epoch).await.is_none() {
                    return Err(StoreError::NoView { epoch });
                }
                // Copies made under an older view (a write its primary ran before it
                // knew the new one) may have missed owners that view does not have, and
                // this node may have moved these keys already: they are passed on below,
                // so they are kept as they came.
                let passing = epoch < self.current().epoch;
                let came: Vec<Option<WireHeld>> = match passing {
                    true => copies.iter().map(|c| c.state.clone()).collect(),
                    false => Vec::new(),
                };
                self.kv.with_partition(|p, now| {
                    for c in &mut copies {
                        match c.state.take() {
                            Some(held) => p.import_held(&c.key, held.into(), now),
                            None => p.import(&c.key, None, now),
                        };
                    }
                });
                // Each must reach them before this answers: the sender acknowledges the
                // write only then. What is passed on is this node's state of the key
                // (no older than the copy: a partition keeps the newer), or, if the key
                // left this node meanwhile (the passing of an earlier copy of the
                // batch waits, and this node may drop keys it does not own then), the
                // copy as it came. Never "nothing": a receiver takes that as a removal,
                // whatever it holds, and would lose a newer acknowledged write (the
                // simulator found it: `store --faults wide` seed 3819 with copies
                // batched).
                if passing {
                    for (KeyCopy { key, .. }, came) in copies.iter().zip(came) {
                        let here = self.kv.with_partition(|p, now| p.export_held(key, now));
                        let Some(held) = here.or_else(|| came.map(Held::from)) else {
                            continue;
                        };
                        self.replicate(key.clone(), Some(held)).await?;
                    }
                }
                // Not kept where it is not owned, in the current view nor the settled
                // one (sent to this node as an owner in a view since settled, and this
                // node dropped its keys already, say): a copy left behind would be
                // taken for the key's if this node became its owner again, and it may
                // be older than the key's last writes.
                let strays: Vec<&[u8]> = {
                    let views = self.views();
                    let owned =
                        |v: &View, key: &[u8]| v.owners(key).iter().any(|m| m.node == self.me);
                    copies
                        .iter()
                        .map(|c| c.key.as_slice())
                        .filter(|key| {
                            !owned(&views.current, key)
                                && !views.previous.as_deref().is_some_and(|p| owned(p, key))
                        })
                        .collect()
                };
                if !strays.is_empty() {
                    self.kv.with_partition(|p, now| {
                        for key in strays {
                            p.import(key, None, now);
                        }
                    });
                }
                Ok(StoreReply::Done)
            }
            StoreRequest::Fetch { key } => {
                if !on_key_core(&key) {
                    return Err(StoreError::WrongCore);
                }
                let held = self.kv.with_partition(|p, now| p.export_held(&key, now));
                Ok(StoreReply::Item(held.map(WireHeld::from)))
            }
            StoreRequest::Connect(view) => {
                self.connect_to(&view).await?;
                Ok(StoreReply::Done)
            }
            StoreRequest::View(change) => {
                self.install(change).await?;
                Ok(StoreReply::Done)
            }
            StoreRequest::Progress => Ok(StoreReply::Progress(self.progress())),
            StoreRequest::Activate { epoch } => {
                self.activate(epoch);
                Ok(StoreReply::Done)
            }
            StoreRequest::Settle { epoch } => {
                // A view settles only after every member took it.
                self.activate(epoch);
                let settled = {
                    let mut views = self.views.write();
                    let settled = views.current.epoch == epoch;
                    if settled {
                        views.previous = None;
                    }
                    settled.then(|| views.current.clone())
                };
                if let Some(view) = settled {
                    sesa_event::spawn_local(self.drop_unowned(view));
                }
                Ok(StoreReply::Done)
            }
            StoreRequest::Invalidate { keys } => {
                if !keys.iter().all(|k| on_key_core(k)) {
                    return Err(StoreError::WrongCore);
                }
                let here = sesa_event::current_core();
                self.invalidated(here).fetch_add(1, Ordering::Relaxed);
                self.kv.with_partition(|p, now| {
                    for k in &keys {
                        p.import(k, None, now);
                    }
                });
                Ok(StoreReply::Done)
            }
            StoreRequest::Flush { delay } => {
                self.kv
                    .each_partition(move |p, now| p.flush_all(delay, now))
                    .await
                    .map_err(|_| StoreError::Stopping)?;
                Ok(StoreReply::Done)
            }
        }
    }

    /// Whether a read of `key` may be answered at once on the calling core, without an
    /// event: this core holds the key for sure (as its primary or a replica, with no
    /// keys moving to this node; or a copy in its cache, in the cached layout).
    fn holds_here(&self, key: &[u8]) -> bool {
        if owner(key, sesa_event::cores()) != sesa_event::current_core() {
            return false;
        }
        let (view, active) = {
            let views = self.views();
            (views.current.clone(), views.active)
        };
        if !active {
            return false;
        }
        view.epoch > 0 && self.holds_for_sure(&view, key)
            || view.layout == Layout::Cached && self.kv.with_partition(|p, now| p.holds(key, now))
    }

    /// View `epoch` may be acted on, if it is the current one; the requests waiting for
    /// it go on.
    pub(super) fn activate(&self, epoch: u64) {
        {
            let mut views = self.views.write();
            if views.current.epoch != epoch || views.active {
                return;
            }
            views.active = true;
        }
        self.wake_view_waiters();
    }

    /// Wakes the requests waiting for a view (see [`Node::view_waiters`]).
    pub(super) fn wake_view_waiters(&self) {
        let waiters = core::mem::take(&mut *self.view_waiters.lock());
        for waker in waiters {
            waker.wake();
        }
    }

    /// Routes `op` by this node's view (waiting, briefly, for a view at least as new as
    /// `epoch`, the sender's): runs it here if this node is the key's primary, else ships
    /// it to the primary. A lost primary means waiting for the next view and routing
    /// again.
    pub(super) async fn route(
        &'static self,
        mut op: Op,
        epoch: u64,
        hops: u8,
        reads: Reads,
    ) -> Vec<u8> {
        let mut floor = epoch.max(1);
        // A client's command (not one sent here by another node) is counted once,
        // however often it is routed again: answered here, or sent on.
        let mut uncounted = hops == 0;
        loop {
            let Some(view) = self.view_at_least(floor).await else {
                return match self.current().epoch {
                    0 => server_error("the store has no view of its nodes yet"),
                    _ => server_error("the store's nodes are taking a new view; try again"),
                };
            };
            let owners = view.owners(op.key());
            let Some(primary) = owners.first().copied() else {
                return server_error("the store has no nodes");
            };
            if primary.node == self.me {
                self.count(&mut uncounted, true);
                let core = owner(op.key(), sesa_event::cores());
                return sesa_event::spawn_on_async(core, move || self.primary(op))
                    .await
                    .unwrap_or_else(|_| server_error("the node is stopping"));
            }
            // A read at one of the key's replicas is answered here: a write is on every
            // owner before it is acknowledged. While keys move, only if this node owned
            // the key before too (a new owner may still be waiting for its copy).
            let nearest = reads == Reads::Nearest && !op.writes();
            // Only a read may be answered by another holder than the primary.
            let before = if nearest {
                self.owners_before(op.key())
            } else {
                None
            };
            if nearest && self.holds_for_sure_among(&owners, before.as_deref()) {
                self.count(&mut uncounted, true);
                let (kv, core) = (self.kv, owner(op.key(), sesa_event::cores()));
                return sesa_event::spawn_on(core, move || kv.apply_here(op))
                    .await
                    .unwrap_or_else(|_| server_error("the node is stopping"));
            }
            // The cached layout: a client's read here is answered from this node's cache,
            // filled from the primary on a miss.
            if view.layout == Layout::Cached && nearest {
                let core = owner(op.key(), sesa_event::cores());
                match sesa_event::spawn_on_async(core, move || self.cached_read(op, primary)).await
                {
                    Ok(Ok(reply)) => {
                        self.count(&mut uncounted, true);
                        return reply;
                    }
                    // Not served from the cache: ship it to the primary as usual.
                    Ok(Err(back)) => op = back,
                    Err(_) => return server_error("the node is stopping"),
                }
            }
            if hops >= MAX_HOPS {
                return server_error("the nodes disagree on where the key lives");
            }
            // While keys move, a read goes to an owner of the key in both views, the
            // earliest in the current one's order: it holds every acknowledged write (an
            // old owner had them all, a new one gets every write made since), where a new
            // primary may first have to fetch the key from an old owner (an extra round
            // trip for most reads of a moving key). None when every owner is new
            // (several nodes joined at once, say).
            let steady = before.as_deref().and_then(|before| {
                owners
                    .iter()
                    .find(|m| before.iter().any(|b| b.node == m.node))
                    .copied()
            });
            let (epoch, onward) = (view.epoch, hops + 1);
            let (target, read) = match steady {
                Some(m) if m.node != primary.node => (m, true),
                _ => (primary, false),
            };
            self.count(&mut uncounted, false);
            let core = owner(op.key(), target.cores as usize);
            let shipped = Shipped {
                epoch,
                hops: onward,
                read,
                op,
            };
            let (shipped, sent, why) = match self.forward(target, core, shipped).await {
                Forwarded::Reply(reply) => return reply,
                Forwarded::Lost { shipped, sent, why } => (shipped, sent, why),
            };
            // The command, back from the call, to be routed again.
            op = shipped.op;
            // A write sent whose connection was lost before the reply may have run
            // there, or may still run (that node may be forwarding it, or waiting for a
            // view): sent again, it could run twice, the first time after writes
            // acknowledged since. Its outcome is unknown. And a write shipped here is not
            // sent on again after a failure: the node that shipped it may have given up
            // on it already (its client told the outcome is unknown, and writing since).
            if op.writes() && (sent || hops > 0) {
                return server_error(format_args!(
                    "the write's outcome is unknown (node {}: {why})",
                    target.node
                ));
            }
            // Lost or not yet connected: the frontend's next view routes around a lost
            // node; a connection being made just needs a moment.
            let Some(next) = self.next_view(view.epoch, target.node).await else {
                return server_error(format_args!("the key's node is unreachable: {why}"));
            };
            floor = next.epoch;
        }
    }

    /// The current view once its epoch is at least `epoch` and it may be acted on
    /// (`None` after [`VIEW_WAIT`]).
    ///
    /// Requests that wait resume in the order they began to wait (see
    /// [`Node::view_waiters`]): a client's pipelined requests, or those shipped here on
    /// one connection, must not overtake one another while the view arrives.
    pub(super) async fn view_at_least(&self, epoch: u64) -> Option<Arc<View>> {
        self.wait_for_view(epoch, true).await
    }

    /// The current view once its epoch is at least `epoch`, acted on or not (`None`
    /// after [`VIEW_WAIT`]).
    pub(super) async fn installed_at_least(&self, epoch: u64) -> Option<Arc<View>> {
        self.wait_for_view(epoch, false).await
    }

    async fn wait_for_view(&self, epoch: u64, active: bool) -> Option<Arc<View>> {
        let ready = || {
            let views = self.views();
            ((views.active || !active) && views.current.epoch >= epoch)
                .then(|| views.current.clone())
        };
        if let Some(view) = ready() {
            return Some(view);
        }
        let mut deadline = core::pin::pin!(sesa_event::sleep(VIEW_WAIT));
        core::future::poll_fn(|cx| {
            // Checked under the waiters' lock, which `install` and `activate` take after
            // switching views: either the change is seen here, or this waker is woken.
            let mut waiters = self.view_waiters.lock();
            if let Some(view) = ready() {
                return core::task::Poll::Ready(Some(view));
            }
            if deadline.as_mut().poll(cx).is_ready() {
                return core::task::Poll::Ready(None);
            }
            // A waiter that timed out leaves its waker here until the next view: past a
            // bound, wake every one early (each re-checks and queues again, in order).
            if waiters.len() >= VIEW_WAITERS_MAX {
                waiters.drain(..).for_each(core::task::Waker::wake);
            }
            waiters.push(cx.waker().clone());
            core::task::Poll::Pending
        })
        .await
    }

    /// After a call to `node` failed under view `epoch`: a newer view, or the same one
    /// once `node` is connected again; `None` after [`VIEW_WAIT`].
    pub(super) async fn next_view(&self, epoch: u64, node: NodeId) -> Option<Arc<View>> {
        let deadline = sesa_event::now() + VIEW_WAIT;
        loop {
            sesa_event::sleep(Duration::from_millis(5)).await;
            let view = self.current();
            if view.epoch > epoch {
                return Some(view);
            }
            if self.connected(node).await {
                return Some(view);
            }
            if sesa_event::now() > deadline {
                return None;
            }
        }
    }

    pub(super) async fn connected(&self, node: NodeId) -> bool {
        self.messenger
            .peers()
            .await
            .is_ok_and(|peers| peers.iter().any(|p| p.node == node))
    }

    /// Counts a client's command on this core, unless it was (`uncounted` false; it is
    /// then): answered on this node (`here`), or sent on to another.
    fn count(&self, uncounted: &mut bool, here: bool) {
        if !core::mem::take(uncounted) {
            return;
        }
        self.tally(|r| match here {
            true => r.here.fetch_add(1, Ordering::Relaxed),
            false => r.shipped.fetch_add(1, Ordering::Relaxed),
        });
    }

    /// Counts a batch of `n` writes' copies sent from this core.
    pub(super) fn count_copies(&self, n: usize) {
        self.tally(|r| {
            r.copies.fetch_add(n as u64, Ordering::Relaxed);
            r.copy_batches.fetch_add(1, Ordering::Relaxed)
        });
    }

    /// Counts a batch of commands sent on from this core.
    pub(super) fn count_sent_on_batch(&self) {
        self.tally(|r| r.shipped_batches.fetch_add(1, Ordering::Relaxed));
    }

    /// Counts a command sent again alone (its batch's answer had no room for it).
    pub(super) fn count_sent_alone(&self) {
        self.tally(|r| r.shipped_alone.fetch_add(1, Ordering::Relaxed));
    }

    /// Adds to this core's counts.
    fn tally<T>(&self, f: impl FnOnce(&Routed) -> T) {
        if let Some(r) = self.routed.get(sesa_event::current_core().index()) {
            f(r);
        }
    }

    pub(super) fn invalidated(&self, core: CoreId) -> &AtomicU64 {
        // One counter per core, made at start for every core of the node. Each is
        // touched only on its own core (invalidations and cache fills run on the key's
        // core), so the atomics need no ordering.
        &self.invalidations[core.index()]
    }

    /// A read on the key's core of a node that caches (the cached layout): from the
    /// cache if the key is there; else the item is fetched from `primary`, kept, and
    /// the read answered from it. Gives the command back (to be shipped to the primary)
    /// if the fetch failed or an invalidation raced it (the copy may be stale).
    pub(super) async fn cached_read(&'static self, op: Op, primary: Member) -> Result<Vec<u8>, Op> {
        let here = sesa_event::current_core();
        let key = op.key().to_vec();
        if self.kv.with_partition(|p, now| p.holds(&key, now)) {
            return Ok(self.kv.apply_here(op));
        }
        let before = self.invalidated(here).load(Ordering::Relaxed);
        let core = owner(&key, primary.cores as usize);
        let fetch = StoreRequest::Fetch { key: key.clone() };
        let Ok(StoreReply::Item(item)) = client(self.messenger, primary, core).call(fetch).await
        else {
            return Err(op);
        };
        let raced = self.invalidated(here).load(Ordering::Relaxed) != before;
        match item {
            _ if raced => Err(op),
            // Absent at the primary: a miss (nothing is cached).
            None | Some(WireHeld::Gone(_)) => Ok(self.kv.apply_here(op)),
            Some(WireHeld::Item(item)) => {
                self.kv
                    .with_partition(|p, now| p.import(&key, Some(item.into()), now));
                Ok(self.kv.apply_here(op))
            }
        }
    }

    /// Runs `op` as the key's primary, on the key's core: fetch the key from its
    /// previous owners first if it is still moving here, apply, copy to the replicas.
    pub(super) async fn primary(&'static self, op: Op) -> Vec<u8> {
        let key = op.key().to_vec();
        let previous = self.views().previous.clone();
        // Only a new owner may lack the key: one that owned it before too has every
        // acknowledged write of it, and a miss there is a miss (no round trip to ask).
        if let Some(previous) = previous
            && !previous.owners(&key).iter().any(|m| m.node == self.me)
            && !self.kv.with_partition(|p, now| p.holds(&key, now))
            && !self.pull(&key, &previous).await
        {
            // Neither here yet nor to be had from where it was: answering would take
            // the key for missing (or a write for its first).
            return server_error(
                "the key is moving here and none of its previous owners answered; try again",
            );
        }
        let writes = op.writes();
        if writes {
            // A write made under a newer view supersedes any made under an older one
            // (by another primary, say, whose copies its replicas took but this node
            // did not, its outcome then unknown): its cas is higher.
            let floor = self.current().epoch << CAS_EPOCH_SHIFT;
            self.kv.with_partition(|p, _| p.raise_cas(floor));
        }
        let reply = self.kv.apply_here(op);
        if writes {
            // A write that leaves no item (a delete, or one that found none) leaves a
            // tombstone, for the owners to which a copy of the item may come late.
            let held = self.kv.with_partition(|p, now| match p.export(&key, now) {
                Some(item) => Held::Item(item),
                None => Held::Gone(p.bury(&key)),
            });
            // Acknowledged only once every owner holds it.
            if let Err(e) = self.replicate(key, Some(held)).await {
                return server_error(e);
            }
        }
        reply
    }

    /// Sends the key's new state to its other owners and waits until every owner of the
    /// key in this node's newest view holds it (and, in the cached layout, drops it from
    /// every other node's cache). An owner that cannot be reached is never skipped: the
    /// copy waits for its connection to come back, or for a view of the frontend's in
    /// which it owns the key no more (the new owners then get the copy), for at most
    /// [`REPLICATE_WAIT`].
    ///
    /// # Errors
    /// [`StoreError::Unreplicated`]: some owner did not take the copy in time. The write
    /// may be on some owners (its outcome is unknown to the client) and must not be
    /// acknowledged.
    pub(super) async fn replicate(
        &'static self,
        key: Vec<u8>,
        held: Option<Held>,
    ) -> Result<(), StoreError> {
        let deadline = sesa_event::now() + REPLICATE_WAIT;
        let mut view = self.current();
        if view.layout == Layout::Cached {
            self.invalidate_caches(&view, &key).await;
        }
        let copy = KeyCopy {
            key,
            state: held.map(WireHeld::from),
        };
        // Sent with the other copies this core has for the same owner (`batch`).
        let mut epoch = view.epoch;
        // Owners that took the copy (or need not), in any view so far: an owner keeps a
        // key while it stays an owner, so one that took it need not be sent it again.
        let mut took: Vec<NodeId> = Vec::new();
        loop {
            let mut failed = None;
            for (m, must) in self.holders(&view, &copy.key) {
                if m.node == self.me || took.contains(&m.node) {
                    continue;
                }
                let core = owner(&copy.key, m.cores as usize);
                let mut call = core::pin::pin!(self.send_copy(m, core, epoch, copy.clone()));
                // A replica that stopped answering (paused, cut off without a reset)
                // holds the call until its connection is found dead: meanwhile, a view
                // that no longer needs it there ends the wait.
                let result = loop {
                    if let Some(r) = sesa_event::timeout(RECHECK, call.as_mut()).await {
                        break Some(r);
                    }
                    let newest = self.current();
                    let needed = |holders: Vec<(Member, bool)>| {
                        holders.iter().any(|(h, must)| h.node == m.node && *must)
                    };
                    if newest.epoch > view.epoch && !needed(self.holders(&newest, &copy.key)) {
                        break None;
                    }
                    if sesa_event::now() > deadline {
                        tracing::warn!(node = %m.node, "write refused: an owner did not answer");
                        return Err(StoreError::Unreplicated {
                            node: m.node,
                            why: format!("no answer in {REPLICATE_WAIT:?}"),
                        });
                    }
                };
                match result {
                    Some(Ok(_)) | None => took.push(m.node),
                    // A previous owner gone from the view (lost, or left): nothing to keep.
                    Some(Err(_)) if !must => took.push(m.node),
                    Some(Err(e)) => {
                        failed = Some((m.node, e));
                        break;
                    }
                }
            }
            let newest = self.current();
            let Some((node, e)) = failed else {
                // Every owner of `view` took it; a view installed meanwhile may have
                // more owners.
                if newest.epoch == view.epoch {
                    return Ok(());
                }
                view = newest;
                continue;
            };
            // Lost, cut off, or stopping: wait for its connection, or for the frontend's
            // next view (which routes around a lost node), then send again.
            let next = match sesa_event::now() < deadline {
                true => self.next_view(view.epoch, node).await,
                false => None,
            };
            match next {
                Some(next) if sesa_event::now() < deadline => view = next,
                _ => {
                    tracing::warn!(node = %node, "write refused: an owner did not take it: {e}");
                    return Err(StoreError::Unreplicated {
                        node,
                        why: e.to_string(),
                    });
                }
            }
            epoch = view.epoch;
        }
    }

    /// The nodes a write of `key` under `view` must reach (`true`), or should (`false`):
    /// its owners and, while keys move, its previous owners too. A previous owner that
    /// has not installed `view` yet still answers reads of the key as its owner, so it
    /// must have every write acknowledged meanwhile; one no longer in the view (lost, or
    /// leaving) gets the copy if it can be reached.
    pub(super) fn holders(&self, view: &View, key: &[u8]) -> Vec<(Member, bool)> {
        let mut holders: Vec<(Member, bool)> =
            view.owners(key).into_iter().map(|m| (m, true)).collect();
        if let Some(previous) = self.views().previous.clone() {
            for m in previous.owners(key) {
                if !holders.iter().any(|(h, _)| h.node == m.node) {
                    holders.push((m, view.has(m.node)));
                }
            }
        }
        holders
    }

    /// Drops `key` from the cache of every node of `view` that does not own it.
    pub(super) async fn invalidate_caches(&self, view: &View, key: &[u8]) {
        let owners = view.owners(key);
        let invalidate = StoreRequest::Invalidate {
            keys: alloc::vec![serde_bytes::ByteBuf::from(key)],
        };
        for m in &view.members {
            if m.node == self.me || owners.contains(m) {
                continue;
            }
            let core = owner(key, m.cores as usize);
            if let Err(e) = client(self.messenger, *m, core).call_ref(&invalidate).await {
                tracing::warn!(node = %m.node, "cache not invalidated: {e}");
            }
        }
    }

    /// Installs `key` from the first of its previous owners that answers; whether one
    /// did (holding the key or not). Those not in the current view are asked too: a node
    /// leaving holds its keys until the move is over (a lost one fails at once, not
    /// being connected).
    pub(super) async fn pull(&self, key: &[u8], previous: &View) -> bool {
        for m in previous.owners(key) {
            if m.node == self.me {
                continue;
            }
            let fetch = StoreRequest::Fetch { key: key.to_vec() };
            let core = owner(key, m.cores as usize);
            let answer =
                sesa_event::timeout(VIEW_WAIT, client(self.messenger, m, core).call(fetch));
            match answer.await {
                Some(Ok(StoreReply::Item(held))) => {
                    if let Some(held) = held {
                        self.kv
                            .with_partition(|p, now| p.import_held(key, held.into(), now));
                    }
                    return true;
                }
                // Another answer, or none: the next previous owner.
                _ => continue,
            }
        }
        false
    }

    /// `flush_all` on every node of the store: `OK`, or what went wrong.
    async fn flush_everywhere(&'static self, delay: i64) -> Vec<u8> {
        let view = self.current();
        for &m in &view.members {
            let flush = StoreRequest::Flush { delay };
            let result = if m.node == self.me {
                self.answer(flush)
                    .await
                    .map(drop)
                    .map_err(ServiceError::Failed)
            } else {
                call(self.messenger, m, flush).await.map(drop)
            };
            if let Err(e) = result {
                return server_error(format_args!("flush_all on node {}: {e}", m.node));
            }
        }
        b"OK\r\n".to_vec()
    }
}
