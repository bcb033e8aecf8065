//! Placement: which nodes own a key, by rendezvous (highest random weight) hashing.
//!
//! Every node scores a key with [`score`] (xxh3 of the key's bytes, seeded by the node
//! id: stable across processes, machines and versions, never a per-process hasher), and
//! the `owners` highest scores own it, best first, ties to the lower node id. The global
//! id map and the data store both place keys this way, through [`top`] or, for a loop
//! over many keys, [`keep_top`] into a buffer reused from key to key.
//!
//! **Invariants** (tested once, here): placement is a pure function of the key and the
//! members (their order does not matter); when a member leaves, only the keys it owned
//! move, and each of those keeps its other owners; one of `n` members leaving moves
//! about `owners / n` of the keys.
//!
//! ```
//! use sesa_exec::{NodeId, placement};
//!
//! let nodes = [1, 2, 3, 4, 5].map(NodeId::new);
//! let owners = placement::top(b"user:42", nodes.iter().copied(), 2, |n| *n);
//! assert_eq!(owners.len(), 2);
//! // The same answer on every node, in any order of the members.
//! let shuffled = [4, 1, 5, 3, 2].map(NodeId::new);
//! assert_eq!(owners, placement::top(b"user:42", shuffled.iter().copied(), 2, |n| *n));
//! ```

use alloc::vec::Vec;

use sesa_ebb::NodeId;

/// Node `node`'s score for `key`: the highest scores own the key.
#[inline]
pub fn score(key: &[u8], node: NodeId) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, u64::from(node.get()))
}

/// Adds `member` (node `node`) with `score` to `top`, the `owners` best so far, best
/// first (ties to the lower node id). `top` holds at most `owners` entries.
#[inline]
pub fn keep_top<M>(
    top: &mut Vec<(u64, M)>,
    owners: usize,
    score: u64,
    member: M,
    node: impl Fn(&M) -> NodeId,
) {
    let owners = owners.max(1);
    let this = node(&member);
    let before = |t: &(u64, M)| t.0 > score || (t.0 == score && node(&t.1) < this);
    let at = top.iter().take_while(|t| before(t)).count();
    if at < owners {
        top.insert(at, (score, member));
        top.truncate(owners);
    }
}

/// The `owners` owners of `key` among `members` (node id of each by `node`), best first.
pub fn top<M>(
    key: &[u8],
    members: impl IntoIterator<Item = M>,
    owners: usize,
    node: impl Fn(&M) -> NodeId,
) -> Vec<M> {
    let mut best: Vec<(u64, M)> = Vec::with_capacity(owners.max(1) + 1);
    for m in members {
        let s = score(key, node(&m));
        keep_top(&mut best, owners, s, m, &node);
    }
    best.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    /// The owners of `key` among nodes numbered `nodes`, as numbers.
    fn owners(key: &[u8], nodes: &[u32], r: usize) -> Vec<u32> {
        top(key, nodes.iter().map(|&n| NodeId::new(n)), r, |n| *n)
            .into_iter()
            .map(NodeId::get)
            .collect()
    }

    #[test]
    fn owners_are_the_highest_scores_ties_to_the_lower_id() {
        for n in 1..8u32 {
            let nodes: Vec<u32> = (1..=n).map(|i| i * 7 % 11 + 1).collect();
            for r in 1..4 {
                for i in 0..300 {
                    let key = format!("key{i}");
                    let mut scored: Vec<(u64, u32)> = nodes
                        .iter()
                        .map(|&m| (score(key.as_bytes(), NodeId::new(m)), m))
                        .collect();
                    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                    let want: Vec<u32> = scored.iter().take(r).map(|s| s.1).collect();
                    assert_eq!(owners(key.as_bytes(), &nodes, r), want);
                }
            }
        }
        assert!(owners(b"k", &[], 2).is_empty());
        assert_eq!(owners(b"k", &[9], 3), [9], "capped by the members");
    }

    #[test]
    fn placement_is_a_function_of_key_and_members_alone() {
        let nodes = [3u32, 1, 4, 5, 9, 2, 6];
        let mut reversed = nodes;
        reversed.reverse();
        for i in 0..2_000 {
            let key = format!("k{i}");
            assert_eq!(
                owners(key.as_bytes(), &nodes, 3),
                owners(key.as_bytes(), &reversed, 3)
            );
        }
    }

    #[test]
    fn a_leave_moves_only_the_leavers_keys() {
        let nodes = [1u32, 2, 3, 4, 5];
        let fewer = [1u32, 2, 4, 5];
        let keys = 20_000u32;
        let mut moved = 0;
        for i in 0..keys {
            let key = i.to_le_bytes();
            let before = owners(&key, &nodes, 2);
            let after = owners(&key, &fewer, 2);
            assert_eq!(after.len(), 2);
            for m in before.iter().filter(|m| **m != 3) {
                assert!(after.contains(m), "key {i}: a surviving owner lost it");
            }
            moved += usize::from(before.contains(&3));
        }
        // Node 3 owned about 2/5 of the keys (2 owners of 5 nodes).
        let share = moved as f64 / f64::from(keys);
        assert!((0.37..0.43).contains(&share), "{share}");
    }
}
