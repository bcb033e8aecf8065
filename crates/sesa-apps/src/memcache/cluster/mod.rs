//! Many nodes as one store: the paper's partitioned hash table (section 4.4), across
//! nodes as well as cores.
//!
//! # Placement
//! A [`View`] lists the store's nodes under an epoch. Each key has `R` owners (default
//! 2), the top `R` nodes by rendezvous hashing (xxh3 of the key, seeded by the node id):
//! the first is the key's **primary**, the others its replicas. With
//! [`Placement::Ketama`] the owners are instead libmemcached's ketama server for the key
//! over the members' client addresses and the next distinct servers on the ring
//! ([`ketama`]): every node answers `config get cluster` (ElastiCache's auto-discovery:
//! the view's epoch and the members' addresses), so a ketama client sends each key
//! straight to its primary. Inside a node the key
//! belongs to one core ([`super::server`]'s per-core partitions), so a request for a key
//! travels to exactly one (node, core) and runs there without locks.
//!
//! # Requests
//! Any node answers any key. The node a client talks to ships the command to the key's
//! primary (function shipping through the messenger, straight to the key's core), unless
//! it is the primary itself; a core's commands for one node's core in a turn go as one
//! batch, run there in order (`batch`). The primary applies it, then sends the item's new state to
//! the key's other owners and, while keys move, to its owners in the settled view that
//! are still members (they answer reads until they have the new view), and answers only
//! once every one of them holds it. A core's copies for one owner go together, one
//! message for the copies of a turn's writes (`batch`). An owner that does not answer
//! is never skipped: the write waits for it (its connection back) or for a view
//! without it, at most `REPLICATE_WAIT` (10 s), and is otherwise refused
//! (`SERVER_ERROR`, its outcome unknown). Copies carry the primary's cas, and a partition never installs a copy older
//! than the one it holds; a new primary's own writes get higher cas values than every
//! copy it was sent ([`super::store::Partition::import`]), and higher ones than every
//! write made under an older view (a view's epoch is the high bits of its writes' cas):
//! a write its old primary applied but could not replicate (its outcome unknown) does
//! not outlive the writes acknowledged after it. A deletion travels as a
//! tombstone with a cas of its own ([`super::store::Held::Gone`]): a copy made before it
//! (a move's, or a write's sent again) arriving later does not bring the item back
//! (within [`super::store::GRAVES_MAX`] recent deletions per core).
//!
//! # Changes
//! The frontend owns membership: when a node joins, is asked to leave, or is lost
//! (`kill -9`, or declared down by SWIM and then stopped) it sends every node the next
//! view, with the newest *settled* view (every key on all its owners). A view is taken
//! in two steps: every node installs it (and stops acting on the older one: its
//! requests wait), and only once every member has, the frontend activates it
//! ([`StoreRequest::Activate`]) and the nodes act on it. So no key has two primaries
//! acting at once, one under each view. Each node, once it installed the view,
//! pushes, for every key it holds (tombstones too), its state to the key's new owners
//! that were not its owners in the settled view (only the first of those still in the
//! view does, so each copy moves once; any holder if none is), sending again (read
//! afresh) a copy that fails until it is taken or a newer view comes; a node takes the
//! copies of a view only once it installed it, and keeps only those of keys it owns in
//! its current or settled view. No node drops a key before the frontend settles the view
//! ([`StoreRequest::Settle`], once every node moved its keys): so the settled view's
//! owners hold every key until then, whatever views come meanwhile. About `1/(n+1)` of
//! the keys move on a join; on a loss, the keys that lost a replica get a new one.
//! Until the view settles, a primary that lacks a key asks its settled owners for it
//! first (pull on miss; if none answers, the request is refused rather than answered as
//! a miss), and a read goes to an owner in both views. A read, or a write not sent yet,
//! that finds its primary gone waits for the next view and is routed again; a write whose
//! connection was lost after it was sent is answered `SERVER_ERROR` (it may have run, or
//! may still run there: sent again it could run twice, late), and a node a write was
//! shipped to never sends it on again after a failure. A node taking a view whose keys
//! move from a settled view it has not swept yet first drops the keys it owned neither
//! there nor in its current view (they may be older than the key's last writes, and
//! would be taken for the key's). A copy made under an older view is passed on, before
//! it is acknowledged, to the key's owners in the receiver's newer view: the
//! receiver's state of the key, or the copy as it came, never "nothing" (which a node
//! takes as a removal). The frontend's [`Coordinator`] sends a view that did not
//! settle again (same epoch), and the store's frontend (`apps/kv`) removes a node it
//! cannot reach only while every key keeps a copy, stops it before the view without it
//! goes out (fencing), lets a leaving node go only once its keys have moved, and sends
//! no view without members while nodes leaving hold keys (they keep them until a node
//! joins). The
//! deterministic simulator found the need for each of these (`sesa sim --workload kv`,
//! `--workload store`, `--faults wide`).
//!
//! # Where things are
//! `view` (views and owners: `View`, `Member`, `Layout`, `Placement`), `ketama` (the
//! ring), `msg` (the method
//! ids, the messages, [`call`]), `node` ([`Node`]: routing to the primary, replication,
//! the cached layout, the store's service), `rebalance` (installing a view and moving
//! keys, paced; [`Rebalance`], the frontend's figures) and `coordinator`
//! ([`Coordinator`], the frontend's side). Placement itself is `sesa_exec::placement`.
//!
//! # Limits
//! - Concurrent writes to one key during a change may resolve by cas order (last writer
//!   wins) rather than arrival order.
//! - Losing a second owner of a key before its replacement copy is made loses the key
//!   (R=2 tolerates one failure at a time).
//! - A node the frontend cannot stop (joined by hand) is not fenced: cut off from the
//!   frontend, it may answer reads from a view it was removed from.
//! - Requests carry their sender's view epoch, and a node with an older view waits for
//!   the newer one; a node with a newer view routes by its own rather than refusing.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use spin::{Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sesa_ebb::{CoreId, EbbId, NodeId};
use sesa_event::EventError;
use sesa_exec::service::{Client, Service, ServiceError};
use sesa_exec::{CallError, MessengerRef, placement};

use super::ops::{Op, Reads, owner};
use super::server::{ClusterLayer, Kv, ReplyFuture, Routing};
use super::store::{Held, Item, Scan};

mod batch;
mod coordinator;
pub mod ketama;
mod msg;
mod node;
mod rebalance;
mod view;

pub use coordinator::Coordinator;
pub use msg::*;
pub use node::*;
pub use rebalance::*;
pub use view::*;

/// A key's primary gives its writes under view `epoch` cas values from `epoch << 40`
/// up: a write made under a newer view is newer than any made under an older one,
/// whatever the nodes' counters (2^40 writes per core and view; 2^24 views).
pub(super) const CAS_EPOCH_SHIFT: u32 = 40;

/// How many times a request may be shipped on (a node with an older view forwards it).
pub(super) const MAX_HOPS: u8 = 4;
/// The most commands in one [`StoreRequest::Batch`] (the clients' commands a core sends
/// on to one node's core in a turn: a sender starts another batch past it, a receiver
/// refuses more).
pub const FORWARD_COMMANDS_MAX: usize = 1024;
/// A sender starts another batch of commands once one holds about this many bytes of
/// requests (and of values that its writes may return, `gat` say): with the reads'
/// replies ([`FORWARD_REPLY_BYTES`]) a batch's answer stays within a frame (16 MiB).
pub const FORWARD_REQUEST_BYTES: usize = 4 << 20;
/// A receiver answers a batch's reads (their values) up to about this many bytes; the
/// reads past it are answered [`Answer::Resend`] and sent again alone. Its writes'
/// replies are always in the answer (the sender bounded them).
pub const FORWARD_REPLY_BYTES: usize = 8 << 20;
/// Items per copy message when keys move.
pub(super) const BATCH: usize = 128;
/// Keys planned at a time when keys move, between yields of the core.
pub(super) const SCAN: usize = 1024;
/// The longest a copy batch counts for its rest ([`Pace`]).
pub(super) const PACE_MAX: Duration = Duration::from_millis(5);
/// A copy batch's rest, in multiples of its time ([`Pace`]), when nodes only joined:
/// the copying takes at most a sixth of the time (docs/benchmarks.md, "the pace of a
/// move", has the rests measured and why 5).
pub(super) const PACE_REST_JOIN: u32 = 5;
/// As [`PACE_REST_JOIN`] when a node left or was lost: its keys are on fewer owners
/// until they are copied, so they move faster, at more cost to the clients.
pub(super) const PACE_REST_LOSS: u32 = 1;
const _: () = assert!(PACE_REST_LOSS < PACE_REST_JOIN);
/// The least rest worth a sleep ([`Pace`]).
pub(super) const PACE_SLEEP: Duration = Duration::from_millis(2);
/// How long a request waits for the frontend's next view when its primary is lost.
pub(super) const VIEW_WAIT: Duration = Duration::from_secs(5);
/// The most wakers kept for requests waiting for a view (see [`Node::view_at_least`]).
pub(super) const VIEW_WAITERS_MAX: usize = 1 << 16;
/// The longest a write waits for every owner of its key to take it (an unreachable
/// owner's connection to come back, or the frontend's view without it); past that the
/// write is refused (`SERVER_ERROR`, its outcome unknown), never acknowledged on fewer
/// owners. Longer than the frontend takes to remove a node that stopped answering
/// (SWIM's detection, about 2 s with `MembershipConfig::tolerant_local`, a 1 s direct
/// check, then the view), so that a write meets a node's failure as a delay.
pub(super) const REPLICATE_WAIT: Duration = Duration::from_secs(10);
/// How often a write waiting for an owner looks for a view that no longer needs it.
pub(super) const RECHECK: Duration = Duration::from_millis(100);
/// How long a node waits for the membership layer to connect it to a new view's nodes.
pub(super) const CONNECT_WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn view(nodes: &[u32], replicas: u32) -> View {
        let members = nodes
            .iter()
            .map(|&node| Member {
                node: NodeId::new(node),
                service: EbbId::static_id(1),
                cores: 2,
                addr: Some(SocketAddr::from(([127, 0, 0, 1], 20_000 + node as u16))),
            })
            .collect();
        View::new(
            1,
            members,
            replicas,
            Layout::Partitioned,
            Placement::Rendezvous,
        )
    }

    fn ketama(nodes: &[u32], replicas: u32) -> View {
        View {
            placement: Placement::Ketama,
            ..view(nodes, replicas)
        }
    }

    #[test]
    fn ketama_owners_follow_the_ring_of_the_members_addresses() {
        let v = ketama(&[1, 2, 3, 4], 2);
        let ring = ketama::Ring::new((1..=4u16).map(|n| ("127.0.0.1", 20_000 + n)));
        for i in 0..2_000 {
            let key = format!("key{i}");
            let owners: Vec<u32> = v
                .owners(key.as_bytes())
                .iter()
                .map(|m| m.node.get())
                .collect();
            let want: Vec<u32> = ring
                .owners(key.as_bytes())
                .take(2)
                .map(|i| i as u32 + 1)
                .collect();
            assert_eq!(owners, want, "{key}");
        }
        // The ring is made again when the members change after it was made.
        let mut changed = v.clone();
        changed.members.truncate(3);
        let three = ketama::Ring::new((1..=3u16).map(|n| ("127.0.0.1", 20_000 + n)));
        for i in 0..500 {
            let key = format!("key{i}");
            let primary = changed.owners(key.as_bytes())[0].node.get();
            assert_eq!(Some(primary as usize - 1), three.primary(key.as_bytes()));
        }
        // A join moves keys only to the new node, and leaves about a quarter of them.
        let (before, after) = (ketama(&[1, 2, 3], 1), ketama(&[1, 2, 3, 4], 1));
        let mut moved = 0;
        for i in 0..10_000 {
            let key = format!("key{i}");
            let (b, a) = (before.owners(key.as_bytes()), after.owners(key.as_bytes()));
            if a != b {
                assert_eq!(a[0].node.get(), 4, "{key}: {b:?} -> {a:?}");
                moved += 1;
            }
        }
        assert!((1_500..3_500).contains(&moved), "{moved}");
        assert_eq!("ketama".parse::<Placement>(), Ok(Placement::Ketama));
        assert!("modula".parse::<Placement>().is_err());
    }

    #[test]
    fn owned_by_agrees_with_the_owners_list() {
        let central = |nodes: &[u32], r| View {
            layout: Layout::Central,
            ..view(nodes, r)
        };
        for nodes in [&[1u32][..], &[1, 2], &[3, 1, 4, 5], &[2, 7, 1, 8, 9, 6, 5]] {
            for r in 1..4 {
                for v in [view(nodes, r), ketama(nodes, r), central(nodes, r)] {
                    for i in 0..300 {
                        let key = format!("key{i}");
                        let owners = v.owners(key.as_bytes());
                        for n in 1..10 {
                            let owns = owners.iter().any(|m| m.node.get() == n);
                            assert_eq!(
                                v.owned_by(key.as_bytes(), NodeId::new(n)),
                                owns,
                                "{v:?} {key} {n}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn config_get_cluster_lists_the_members_with_addresses_in_view_order() {
        let mut v = view(&[3, 1, 2], 2);
        v.epoch = 7;
        v.members[2].addr = None;
        assert_eq!(
            v.cluster_config(),
            "7\n127.0.0.1|127.0.0.1|20003 127.0.0.1|127.0.0.1|20001\n"
        );
    }

    #[test]
    fn a_join_moves_only_the_keys_the_new_node_now_owns() {
        let before = view(&[1, 2, 3], 2);
        let after = view(&[1, 2, 3, 4], 2);
        let mut changed = 0;
        for i in 0..10_000 {
            let key = format!("key{i}");
            let (b, a) = (before.owners(key.as_bytes()), after.owners(key.as_bytes()));
            assert_eq!(a.len(), 2);
            assert_ne!(a[0].node, a[1].node);
            if a != b {
                // Only because node 4 took a place; the others keep their order.
                assert!(a.iter().any(|m| m.node.get() == 4), "{key}: {b:?} -> {a:?}");
                changed += 1;
            }
        }
        // Node 4 is in the top 2 of 4 for about half the keys.
        assert!((4_500..5_500).contains(&changed), "{changed}");
    }

    #[test]
    fn a_loss_promotes_the_replica_and_keeps_the_survivors() {
        let before = view(&[1, 2, 3], 2);
        let after = view(&[1, 3], 2);
        for i in 0..1_000 {
            let key = format!("key{i}");
            let (b, a) = (before.owners(key.as_bytes()), after.owners(key.as_bytes()));
            for m in b.iter().filter(|m| m.node.get() != 2) {
                assert!(a.contains(m), "{key}: survivor {} lost ownership", m.node);
            }
        }
    }

    #[test]
    fn central_layouts_put_every_key_on_the_first_nodes() {
        for layout in [Layout::Central, Layout::Cached] {
            let v = View {
                layout,
                ..view(&[2, 5, 9], 2)
            };
            for key in [b"a".as_slice(), b"b", b"zzz"] {
                let owners: Vec<u32> = v.owners(key).iter().map(|m| m.node.get()).collect();
                assert_eq!(owners, [2, 5]);
            }
        }
        assert_eq!("cached".parse::<Layout>(), Ok(Layout::Cached));
        assert!("ring".parse::<Layout>().is_err());
    }

    #[test]
    fn owners_are_capped_by_the_nodes() {
        assert_eq!(view(&[5], 2).owners(b"k").len(), 1);
        assert!(View::default().owners(b"k").is_empty());
    }

    #[test]
    fn owners_in_both_views_are_each_views_owners() {
        // Joins, losses, both at once, replicas changing, a member's cores changing, and
        // the central layouts, key after key with the same buffers.
        let with_cores = |mut v: View, node: u32, cores: u32| {
            v.members
                .iter_mut()
                .filter(|m| m.node.get() == node)
                .for_each(|m| m.cores = cores);
            v
        };
        let changes = [
            (view(&[1, 2, 3], 2), view(&[1, 2, 3, 4], 2)),
            (view(&[1, 2, 3, 4], 2), view(&[1, 3, 4], 2)),
            (view(&[1, 2], 2), view(&[3, 4, 5], 3)),
            (view(&[5], 1), view(&[5, 6, 7, 8, 9], 2)),
            (view(&[1, 2, 3], 3), with_cores(view(&[1, 2, 3], 1), 2, 4)),
            (
                view(&[1, 2, 3], 2),
                View {
                    layout: Layout::Central,
                    ..view(&[3, 2], 2)
                },
            ),
            (View::default(), view(&[1], 2)),
            (ketama(&[1, 2, 3], 2), ketama(&[1, 2, 3, 4], 2)),
            (ketama(&[1, 2, 3, 4], 2), ketama(&[1, 3, 4], 2)),
            (ketama(&[1, 2], 2), ketama(&[1, 2, 3, 4, 5], 3)),
            (ketama(&[4], 1), ketama(&[], 2)),
            (view(&[1, 2, 3], 2), ketama(&[1, 2, 3], 2)),
        ];
        for (old, new) in &changes {
            let mut both = OwnersInBoth::new(old, new);
            for i in 0..500 {
                let key = format!("key{i}");
                let (before, after) = both.of(key.as_bytes());
                assert_eq!(before, old.owners(key.as_bytes()), "{old:?} {key}");
                assert_eq!(after, new.owners(key.as_bytes()), "{new:?} {key}");
            }
        }
    }

    #[test]
    fn owners_are_the_highest_scores_in_order() {
        // The selection against the plain definition: every member scored, sorted.
        for nodes in 1..8u32 {
            for replicas in 1..4 {
                let v = view(
                    &(1..=nodes).map(|n| n * 7 % 11).collect::<Vec<_>>(),
                    replicas,
                );
                for i in 0..500 {
                    let key = format!("key{i}");
                    let mut scored: Vec<(u64, u32)> = v
                        .members
                        .iter()
                        .map(|m| (placement::score(key.as_bytes(), m.node), m.node.get()))
                        .collect();
                    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                    let expected: Vec<u32> =
                        scored.iter().take(replicas as usize).map(|s| s.1).collect();
                    let owners: Vec<u32> = v
                        .owners(key.as_bytes())
                        .iter()
                        .map(|m| m.node.get())
                        .collect();
                    assert_eq!(
                        owners, expected,
                        "{nodes} nodes, {replicas} replicas, {key}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_put_carries_items_as_byte_strings_and_decodes_as_it_was_sent() {
        let item = Item {
            value: b"some value".to_vec(),
            flags: 7,
            expires_at: Some(1_700_000_000),
            cas: 42,
        };
        let put = StoreRequest::Put {
            epoch: 3,
            copies: alloc::vec![
                KeyCopy {
                    key: b"k1".to_vec(),
                    state: Some(Held::Item(item.clone()).into()),
                },
                KeyCopy {
                    key: b"k2".to_vec(),
                    state: Some(WireHeld::Gone(9)),
                },
                KeyCopy {
                    key: b"k3".to_vec(),
                    state: None,
                },
            ],
        };
        assert_eq!(StoreService::method(&put), 2);
        let bytes = postcard::to_allocvec(&put).unwrap();
        let StoreRequest::Put { epoch, copies } = postcard::from_bytes(&bytes).unwrap() else {
            panic!("not a put")
        };
        assert_eq!(epoch, 3);
        assert_eq!(copies.len(), 3);
        assert_eq!(copies[0].key, b"k1");
        let held = |c: &KeyCopy| c.state.clone().map(Held::from);
        assert_eq!(held(&copies[0]), Some(Held::Item(item)));
        assert_eq!(held(&copies[1]), Some(Held::Gone(9)));
        assert_eq!(held(&copies[2]), None);
        // A byte string is a length, then the bytes (one copy, not a call per byte):
        // the value's bytes appear whole in the encoding.
        assert!(bytes.windows(10).any(|w| w == b"some value"));
    }

    #[test]
    fn keys_move_gently_on_a_join_and_sooner_after_a_loss() {
        let (three, four) = (view(&[1, 2, 3], 2), view(&[1, 2, 3, 4], 2));
        assert_eq!(Pace::of(&three, &four).rest, PACE_REST_JOIN);
        assert_eq!(Pace::of(&four, &three).rest, PACE_REST_LOSS);
        assert_eq!(Pace::of(&three, &view(&[1, 2, 4], 2)).rest, PACE_REST_LOSS);
        // One node left of two owners per key: a second restores the lost copies.
        assert_eq!(
            Pace::of(&view(&[1], 1), &view(&[1, 3], 2)).rest,
            PACE_REST_LOSS
        );
    }
}
