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
use sesa_event::Completer;

/// Where one outbox sends: the owner, its core, and the view the copies were made
/// under.
type Destination = (NodeId, usize, u64);

/// A writer's share of a batch: the answer to the batch that carried its copy.
type Writer = Completer<Result<(), String>>;

/// The copies waiting to go to one destination, and their writers.
#[derive(Default)]
pub(super) struct Outbox {
    copies: Vec<KeyCopy>,
    writers: Vec<Writer>,
    /// Whether a sender task is running for this destination (it takes what is here
    /// when its batch in flight is answered).
    sending: bool,
}

/// Each core's outboxes (used on that core only: the primary runs on the key's core
/// and its sender task too).
pub(super) type Outboxes = Vec<Mutex<BTreeMap<Destination, Outbox>>>;

impl Node {
    /// One outbox map per core.
    pub(super) fn outboxes() -> Outboxes {
        (0..sesa_event::cores())
            .map(|_| Mutex::new(BTreeMap::new()))
            .collect()
    }

    /// Sends `copy` to `owner`'s core `core` under view `epoch`, with the other copies
    /// this core has for it now; resolves with the answer to the batch that carried it
    /// (`Err`: why the call failed, or the sender was dropped with the core; the copy
    /// may or may not have been taken).
    pub(super) fn send_copy(
        &'static self,
        owner: Member,
        core: CoreId,
        epoch: u64,
        copy: KeyCopy,
    ) -> impl Future<Output = Result<(), String>> + 'static {
        let here = sesa_event::current_core();
        // Completed by the sender task, on this same core: a local wake.
        let (writer, answer) = sesa_event::completion(here);
        let destination = (owner.node, core.index(), epoch);
        let start = match self.outboxes.get(here.index()) {
            Some(outboxes) => {
                let mut outboxes = outboxes.lock();
                let outbox = outboxes.entry(destination).or_default();
                outbox.copies.push(copy);
                outbox.writers.push(writer);
                !core::mem::replace(&mut outbox.sending, true)
            }
            None => {
                writer.complete(Ok(Err("not on a core of this node".into())));
                false
            }
        };
        if start {
            drop(sesa_event::spawn_local(self.send_batches(
                here.index(),
                owner,
                core,
                epoch,
            )));
        }
        async move { answer.await.unwrap_or_else(|e| Err(e.to_string())) }
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
            let (copies, writers) = {
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
                    core::mem::take(&mut outbox.writers),
                )
            };
            let put = StoreRequest::Put { epoch, copies };
            let outcome = match client(self.messenger, owner, core).call_ref(&put).await {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            };
            for writer in writers {
                writer.complete(Ok(outcome.clone()));
            }
        }
    }
}
