//! Copies of writes to one owner, sent together.
//!
//! Every acknowledged write is on each of its key's owners first (see `replicate`). One
//! message per write made replication the cost of a store of several nodes: with each
//! node on a CPU share of its own, a write's copy cost about 24 µs of CPU (the send,
//! the receive, the apply), so one write in ten halved what two nodes served
//! (docs/benchmarks.md, "Capacity-true scaling"). Here the copies a core has for one
//! owner's core under one view wait for the copies of the other commands of the same
//! turn and go as one `Put` (which a replica takes whole: every copy applied, then one
//! answer); while one batch is in flight, the next fills. Each write still waits for
//! the answer to the batch that carried its copy, so an acknowledged write is on every
//! owner, as before: only the number of messages changes.
//!
//! A batch is all or nothing for its writers: a failed call fails every copy in it, and
//! each writer then does what it did when its own call failed (waits for the next view
//! or the connection, and sends again; or refuses the write, its outcome unknown).

use super::*;

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

/// Where one outbox sends: the owner, its core, and the view the copies were made
/// under.
type Destination = (NodeId, usize, u64);

/// The copies waiting to go to one destination, and their writers' slots.
#[derive(Default)]
pub(super) struct Outbox {
    copies: Vec<KeyCopy>,
    slots: Vec<Arc<Slot>>,
    /// Whether a sender task is running for this destination (it takes what is here
    /// when its batch in flight is answered).
    sending: bool,
}

/// Each core's outboxes (used on that core only: the primary runs on the key's core
/// and its sender task too).
pub(super) type Outboxes = Vec<Mutex<BTreeMap<Destination, Outbox>>>;

/// A writer's share of a batch: the outcome, once its batch is answered.
#[derive(Default)]
struct Slot {
    outcome: Mutex<Option<Result<(), String>>>,
    waker: Mutex<Option<Waker>>,
}

impl Slot {
    fn fill(&self, outcome: Result<(), String>) {
        *self.outcome.lock() = Some(outcome);
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
    }
}

/// Waits for a slot's outcome.
struct Answer(Arc<Slot>);

impl Future for Answer {
    type Output = Result<(), String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The waker first: a fill between the two looks would otherwise be missed.
        *self.0.waker.lock() = Some(cx.waker().clone());
        match self.0.outcome.lock().take() {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }
}

impl Node {
    /// One outbox map per core.
    pub(super) fn outboxes() -> Outboxes {
        (0..sesa_event::cores())
            .map(|_| Mutex::new(BTreeMap::new()))
            .collect()
    }

    /// Sends `copy` to `owner`'s core `core` under view `epoch`, with the other copies
    /// this core has for it now; resolves with the answer to the batch that carried it
    /// (`Err`: why the call failed; the copy may or may not have been taken).
    pub(super) fn send_copy(
        &'static self,
        owner: Member,
        core: CoreId,
        epoch: u64,
        copy: KeyCopy,
    ) -> impl Future<Output = Result<(), String>> + 'static {
        let slot = Arc::new(Slot::default());
        let here = sesa_event::current_core().index();
        let destination = (owner.node, core.index(), epoch);
        let start = match self.outboxes.get(here) {
            Some(outboxes) => {
                let mut outboxes = outboxes.lock();
                let outbox = outboxes.entry(destination).or_default();
                outbox.copies.push(copy);
                outbox.slots.push(slot.clone());
                !core::mem::replace(&mut outbox.sending, true)
            }
            None => {
                slot.fill(Err("not on a core of this node".into()));
                false
            }
        };
        if start {
            drop(sesa_event::spawn_local(
                self.send_batches(here, owner, core, epoch),
            ));
        }
        Answer(slot)
    }

    /// Sends what the outbox for (`owner`, `core`, `epoch`) on core `here` holds, batch
    /// after batch, until it is empty.
    async fn send_batches(&'static self, here: usize, owner: Member, core: CoreId, epoch: u64) {
        let destination = (owner.node, core.index(), epoch);
        let Some(outboxes) = self.outboxes.get(here) else {
            return;
        };
        loop {
            // The other commands of this turn add their copies first.
            sesa_event::yield_now().await;
            let (copies, slots) = {
                let mut outboxes = outboxes.lock();
                let Some(outbox) = outboxes.get_mut(&destination) else {
                    return;
                };
                if outbox.copies.is_empty() {
                    outboxes.remove(&destination);
                    return;
                }
                (
                    core::mem::take(&mut outbox.copies),
                    core::mem::take(&mut outbox.slots),
                )
            };
            let put = StoreRequest::Put { epoch, copies };
            let outcome = match client(self.messenger, owner, core).call_ref(&put).await {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            };
            for slot in slots {
                slot.fill(outcome.clone());
            }
        }
    }
}
