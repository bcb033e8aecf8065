//! Messages to one node's core, sent together: writes' copies to an owner, and
//! clients' commands sent on to the node that answers them.
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
//!
//! # Commands sent on
//! A client's command whose key this node does not answer goes to the node that does
//! (`Node::route`); with clients that do not route keys themselves that is most of
//! them (a node answers 2/N of the keys at R = 2), and one call per command cost about
//! as much as the message of a copy. So the commands a core sends on to one node's core
//! in a turn go as one [`StoreRequest::Batch`]: the receiver runs each as it would run
//! it alone, in order, and answers them together. Unlike copies, a batch goes at the
//! end of its turn even while an earlier one is in flight: a command's answer may wait
//! on a third node (a write on its replicas), and the commands of later turns should
//! not wait behind it. A batch is bounded in commands and bytes (its answer must fit a
//! frame: [`FORWARD_REQUEST_BYTES`], [`FORWARD_REPLY_BYTES`]); a read whose reply did not
//! fit comes back to be sent alone. When the call fails, every command comes back with
//! why, for `route` to do what it does when a call of its own fails.

use super::*;

use core::future::Future;
use sesa_event::Completer;

use super::super::protocol;

/// Items waiting to go to one destination together, and who waits on each one's
/// answer (in the same order).
pub(super) struct Queue<I, A> {
    items: Vec<I>,
    waiters: Vec<Completer<A>>,
}

impl<I, A> Default for Queue<I, A> {
    fn default() -> Self {
        Queue {
            items: Vec::new(),
            waiters: Vec::new(),
        }
    }
}

impl<I, A> Queue<I, A> {
    fn push(&mut self, item: I, waiter: Completer<A>) {
        self.items.push(item);
        self.waiters.push(waiter);
    }
}

/// One map per core, each used on its core only (a key's commands, and the tasks that
/// send their batches, run on the key's core).
pub(super) type PerCore<K, V> = Vec<Mutex<BTreeMap<K, V>>>;

/// A [`PerCore`] of empty maps, one per core of this node.
pub(super) fn per_core<K: Ord, V>() -> PerCore<K, V> {
    (0..sesa_event::cores())
        .map(|_| Mutex::new(BTreeMap::new()))
        .collect()
}

/// Where one outbox sends: the owner, its core, and the view the copies were made
/// under.
type Destination = (NodeId, usize, u64);

/// The copies waiting to go to one destination, and their writers (each gets the
/// answer to the batch that carried its copy).
#[derive(Default)]
pub(super) struct Outbox {
    copies: Queue<KeyCopy, Result<(), String>>,
    /// Whether a sender task is running for this destination (it takes what is here
    /// when its batch in flight is answered).
    sending: bool,
}

/// Each core's outboxes.
pub(super) type Outboxes = PerCore<Destination, Outbox>;

impl Node {
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
                outbox.copies.push(copy, writer);
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
            let Queue {
                items: copies,
                waiters: writers,
            } = {
                let mut outboxes = outboxes.lock();
                let Some(outbox) = outboxes.get_mut(&destination) else {
                    return;
                };
                if outbox.copies.items.is_empty() {
                    outboxes.remove(&destination);
                    return;
                }
                core::mem::take(&mut outbox.copies)
            };
            self.count_copies(copies.len());
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

/// What a command sent on comes back as.
pub(super) enum Forwarded {
    /// Its reply (`SERVER_ERROR` if the node refused it or the batch).
    Reply(Vec<u8>),
    /// The call failed: the command back (boxed: this is the rare case), whether it may
    /// have reached the node (and run there), and why.
    Lost {
        shipped: Box<Shipped>,
        sent: bool,
        why: String,
    },
}

/// A command's answer from its batch: what [`Node::forward`] resolves with, or the
/// command back to be sent alone (its reply did not fit the batch's answer).
enum Answered {
    Done(Forwarded),
    Resend(Box<Shipped>),
}

/// The commands a core has for one node's core in this turn, and their waiters.
#[derive(Default)]
pub(super) struct Forwards {
    commands: Queue<Shipped, Answered>,
    /// What they count against [`FORWARD_REQUEST_BYTES`].
    bytes: usize,
}

/// Each core's commands to send on, by destination (node and core).
pub(super) type Outgoing = PerCore<(NodeId, usize), Forwards>;

/// What a command counts against [`FORWARD_REQUEST_BYTES`]: its bytes on the wire, and
/// for a write that returns a value (`gat`, `mg` with a new expiry) the largest value
/// (the receiver answers writes whatever their size).
fn cost(op: &Op, item_max: usize) -> usize {
    let data = match op {
        Op::Store { data, .. } => data.len(),
        Op::Meta(meta) => match &meta.op {
            protocol::MetaOp::Set { data } => data.len(),
            _ => 0,
        },
        _ => 0,
    };
    let returned = match op {
        Op::Get { .. } | Op::Meta(_) if op.writes() => item_max,
        _ => 0,
    };
    64 + 2 * op.key().len() + data + returned
}

impl Node {
    /// Sends `shipped` to `target`'s core `core` with the other commands this core
    /// sends it in this turn; resolves with its reply, or with the command back.
    pub(super) fn forward(
        &'static self,
        target: Member,
        core: CoreId,
        shipped: Shipped,
    ) -> impl Future<Output = Forwarded> + 'static {
        let here = sesa_event::current_core();
        // Completed by the sender task, on this same core: a local wake.
        let (waiter, answer) = sesa_event::completion(here);
        let destination = (target.node, core.index());
        let item_max = self.kv.limits.item_max;
        let cost = cost(&shipped.op, item_max);
        let (full, first) = match self.outgoing.get(here.index()) {
            Some(outgoing) => {
                let mut outgoing = outgoing.lock();
                let pending = outgoing.entry(destination).or_default();
                // A batch as large as it may be goes now; this command starts the next.
                let queued = pending.commands.items.len();
                let full = queued > 0
                    && (pending.bytes + cost > FORWARD_REQUEST_BYTES
                        || queued >= FORWARD_COMMANDS_MAX);
                let full = full.then(|| core::mem::take(pending));
                let first = pending.commands.items.is_empty();
                pending.commands.push(shipped, waiter);
                pending.bytes += cost;
                (full, first)
            }
            None => {
                let off_core = Forwarded::Reply(server_error("not on a core of this node"));
                waiter.complete(Ok(Answered::Done(off_core)));
                (None, false)
            }
        };
        if let Some(full) = full {
            drop(sesa_event::spawn_local(
                self.send_forwards(target, core, full),
            ));
        }
        if first {
            drop(sesa_event::spawn_local(async move {
                // The other commands of this turn join it first.
                sesa_event::yield_now().await;
                let pending = self
                    .outgoing
                    .get(here.index())
                    .and_then(|outgoing| outgoing.lock().remove(&destination));
                if let Some(pending) = pending {
                    self.send_forwards(target, core, pending).await;
                }
            }));
        }
        async move {
            match answer.await {
                Ok(Answered::Done(forwarded)) => forwarded,
                Ok(Answered::Resend(shipped)) => {
                    self.count_sent_alone();
                    self.forward_alone(target, core, *shipped).await
                }
                Err(_) => Forwarded::Reply(server_error("the node is stopping")),
            }
        }
    }

    /// Sends one batch of commands and gives each its answer.
    async fn send_forwards(&'static self, target: Member, core: CoreId, batch: Forwards) {
        let Queue {
            items: commands,
            waiters,
        } = batch.commands;
        self.count_sent_on_batch();
        let request = StoreRequest::Batch(commands);
        let result = client(self.messenger, target, core)
            .call_ref(&request)
            .await;
        let StoreRequest::Batch(commands) = request else {
            return;
        };
        match result {
            Ok(StoreReply::Replies(answers)) if answers.len() == commands.len() => {
                for ((shipped, answer), waiter) in commands.into_iter().zip(answers).zip(waiters) {
                    waiter.complete(Ok(match answer {
                        Answer::Reply(reply) => Answered::Done(Forwarded::Reply(reply)),
                        Answer::Resend => Answered::Resend(Box::new(shipped)),
                    }));
                }
            }
            result => {
                for (shipped, waiter) in commands.into_iter().zip(waiters) {
                    waiter.complete(Ok(Answered::Done(forwarded(target, shipped, &result))));
                }
            }
        }
    }

    /// Sends `shipped` alone (as [`StoreRequest::Exec`] or [`StoreRequest::Read`]).
    async fn forward_alone(
        &'static self,
        target: Member,
        core: CoreId,
        shipped: Shipped,
    ) -> Forwarded {
        let Shipped {
            epoch,
            hops,
            read,
            op,
        } = shipped;
        let request = match read {
            true => StoreRequest::Read { epoch, hops, op },
            false => StoreRequest::Exec { epoch, hops, op },
        };
        let result = client(self.messenger, target, core)
            .call_ref(&request)
            .await;
        let (StoreRequest::Read { op, .. } | StoreRequest::Exec { op, .. }) = request else {
            return Forwarded::Reply(server_error("a command sent as neither Exec nor Read"));
        };
        let shipped = Shipped {
            epoch,
            hops,
            read,
            op,
        };
        match result {
            Ok(StoreReply::Reply(reply)) => Forwarded::Reply(reply),
            result => forwarded(target, shipped, &result),
        }
    }

    /// Runs the commands of a [`StoreRequest::Batch`], each as it would run alone, and
    /// answers them in order.
    pub(super) async fn answer_batch(
        &'static self,
        commands: Vec<Shipped>,
    ) -> Result<StoreReply, StoreError> {
        if commands.len() > FORWARD_COMMANDS_MAX {
            return Err(StoreError::BatchTooLarge(commands.len()));
        }
        // Started in order (a core runs its tasks in the order they came), as the
        // commands of separate calls were: a read after a write of its key runs after it.
        let runs: Vec<_> = commands
            .into_iter()
            .map(|shipped| {
                let reads = !shipped.op.writes();
                let run = sesa_event::spawn_local(self.run_shipped(shipped));
                (reads, run)
            })
            .collect();
        let mut answers = Vec::with_capacity(runs.len());
        // Writes' replies always go (their sender bounded them); reads' while they fit.
        let mut room = FORWARD_REPLY_BYTES;
        for (reads, run) in runs {
            let reply = run
                .await
                .unwrap_or_else(|_| server_error("the node is stopping"));
            answers.push(match reads {
                true if reply.len() > room => Answer::Resend,
                true => {
                    room -= reply.len();
                    Answer::Reply(reply)
                }
                false => Answer::Reply(reply),
            });
        }
        Ok(StoreReply::Replies(answers))
    }

    /// Runs a command sent here by another node, as [`StoreRequest::Exec`] or
    /// [`StoreRequest::Read`] would.
    pub(super) async fn run_shipped(&'static self, shipped: Shipped) -> Vec<u8> {
        let Shipped {
            epoch,
            hops,
            read,
            op,
        } = shipped;
        match read {
            // The sender's client allowed any holder to answer; this node answers if it
            // holds the key for sure by its own view, else routes it on.
            true if op.writes() => server_error(StoreError::WriteAsRead),
            true => self.route(op, epoch, hops, Reads::Nearest).await,
            // Shipped here as the key's primary: a copy here (this node may be a
            // replica in a newer view) may lack a write the sender shipped before.
            false => self.route(op, epoch, hops, Reads::AtPrimary).await,
        }
    }
}

/// What a failed call, or an unexpected answer, means for one command sent on in it.
fn forwarded(
    target: Member,
    shipped: Shipped,
    result: &Result<StoreReply, StoreCallError>,
) -> Forwarded {
    let reply = match result {
        Ok(_) => server_error(format_args!(
            "node {} answered a command with something else",
            target.node
        )),
        Err(ServiceError::Call(CallError::Remote { node, error })) => {
            server_error(format_args!("node {node}: {error}"))
        }
        Err(e @ (ServiceError::Failed(_) | ServiceError::Codec { .. })) => {
            server_error(format_args!("node {}: {e}", target.node))
        }
        Err(ServiceError::Call(e)) => {
            let sent = !matches!(e, CallError::NotConnected(_));
            let why = e.to_string();
            return Forwarded::Lost {
                shipped: Box::new(shipped),
                sent,
                why,
            };
        }
    };
    Forwarded::Reply(reply)
}
