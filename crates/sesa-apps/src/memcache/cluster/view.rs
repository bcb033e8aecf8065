//! Views: the store's nodes under an epoch, and which of them own a key.

use super::*;

/// A node of the store, as the view names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node id.
    pub node: NodeId,
    /// Its store service (an EBB id, for the messenger).
    pub service: EbbId,
    /// Its cores (a key's core there is the key's hash modulo this).
    pub cores: u32,
    /// Where its clients reach it (`config get cluster` lists it; ketama placement
    /// names the node by it). `None`: no clients' port (the simulator's nodes).
    pub addr: Option<SocketAddr>,
}

/// How keys are placed on the store's nodes: the paper's progression for its
/// hash-table EBB (section 4.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// (c) Each key on its own `R` nodes, by rendezvous hashing: the load and the
    /// memory spread over every node. The default.
    #[default]
    Partitioned,
    /// (a) Every key on the view's first node (and the next `R - 1` as replicas):
    /// the other nodes ship every request there.
    Central,
    /// (b) As [`Layout::Central`], and every other node keeps a read cache of the items
    /// its clients read. A write invalidates every cache before it is acknowledged.
    Cached,
}

impl core::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "partitioned" => Ok(Layout::Partitioned),
            "central" => Ok(Layout::Central),
            "cached" => Ok(Layout::Cached),
            other => Err(format!(
                "no layout {other:?}: partitioned, central or cached"
            )),
        }
    }
}

/// Which nodes own a key of a partitioned store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// Rendezvous hashing on the node ids ([`sesa_exec::placement`]): a change moves
    /// the fewest keys. The default.
    #[default]
    Rendezvous,
    /// libmemcached's ketama ring over the members' client addresses, in the view's
    /// order ([`ketama`](super::ketama)): a ketama client given `config get cluster`'s
    /// list sends each key to its primary.
    Ketama,
}

impl core::str::FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rendezvous" => Ok(Placement::Rendezvous),
            "ketama" => Ok(Placement::Ketama),
            other => Err(format!("no placement {other:?}: rendezvous or ketama")),
        }
    }
}

/// The store's nodes at one epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Increases with every change; 0 is "no view yet".
    pub epoch: u64,
    /// The nodes.
    pub members: Vec<Member>,
    /// Owners per key (capped by the number of nodes).
    pub replicas: u32,
    /// How keys are placed.
    pub layout: Layout,
    /// Which nodes own a key, when the layout is [`Layout::Partitioned`].
    pub placement: Placement,
    /// The ketama ring of `members`, made on first use.
    #[serde(skip)]
    pub(super) ring: RingCache,
}

impl View {
    /// The view of `members` at `epoch`.
    pub fn new(
        epoch: u64,
        members: Vec<Member>,
        replicas: u32,
        layout: Layout,
        placement: Placement,
    ) -> View {
        View {
            epoch,
            members,
            replicas,
            layout,
            placement,
            ring: RingCache::default(),
        }
    }

    /// The owners of `key`, primary first.
    pub fn owners(&self, key: &[u8]) -> Vec<Member> {
        let owners = self.replicas.max(1) as usize;
        if self.layout != Layout::Partitioned {
            return self.members.iter().take(owners).copied().collect();
        }
        match self.placement {
            // The `owners` highest scores, best first (ties to the lower node id), kept
            // by insertion: no scored list of every member is made and sorted.
            Placement::Rendezvous => {
                placement::top(key, self.members.iter().copied(), owners, |m| m.node)
            }
            Placement::Ketama => {
                let mut found = Vec::with_capacity(owners);
                self.ketama_owners(ketama::key_hash(key), &mut found);
                found
            }
        }
    }

    /// The owners of the key whose ketama hash is `hash` under ketama placement (a
    /// partitioned view), primary first, into `out` (emptied first).
    pub(super) fn ketama_owners(&self, hash: u32, out: &mut Vec<Member>) {
        out.clear();
        let owners = self.replicas.max(1) as usize;
        self.with_ring(|ring| {
            out.extend(
                ring.owners_of_hash(hash)
                    .take(owners)
                    .map(|i| self.members[i]),
            );
        });
    }

    /// Whether `node` is one of `key`'s owners: `owners(key)` contains it, found
    /// without making the list.
    pub fn owned_by(&self, key: &[u8], node: NodeId) -> bool {
        let owners = self.replicas.max(1) as usize;
        let Some(at) = self.members.iter().position(|m| m.node == node) else {
            return false;
        };
        if self.layout != Layout::Partitioned {
            return at < owners;
        }
        match self.placement {
            // Owned if fewer than `owners` members rank above it (a higher score, or the
            // same and a lower id: `placement::top`'s order).
            Placement::Rendezvous => {
                let mine = placement::score(key, node);
                let above = self
                    .members
                    .iter()
                    .filter(|m| {
                        let s = placement::score(key, m.node);
                        s > mine || (s == mine && m.node < node)
                    })
                    .take(owners)
                    .count();
                above < owners
            }
            Placement::Ketama => {
                self.with_ring(|ring| ring.owners(key).take(owners).any(|i| i == at))
            }
        }
    }

    /// Calls `f` with the ketama ring of the members (made once per view, and again
    /// if the members were changed since).
    fn with_ring<T>(&self, f: impl FnOnce(&ketama::Ring) -> T) -> T {
        let ids = || self.members.iter().map(|m| (m.node, m.addr));
        let make = || {
            let names: Vec<(String, u16)> = self.members.iter().map(Member::ketama_name).collect();
            ketama::Ring::new(names.iter().map(|(h, p)| (h.as_str(), *p)))
        };
        let made = self
            .ring
            .0
            .call_once(|| Arc::new((make(), ids().collect())));
        if made.1.iter().copied().eq(ids()) {
            f(&made.0)
        } else {
            f(&make())
        }
    }

    /// The clients' list of the store's nodes, as ElastiCache's auto-discovery answers
    /// `config get cluster`: the view's epoch on one line, then `host|ip|port` of each
    /// member that has a clients' address, in the view's order (the order a ketama
    /// client must keep), separated by spaces.
    pub fn cluster_config(&self) -> String {
        let nodes: Vec<String> = (self.members.iter())
            .filter_map(|m| m.addr)
            .map(|a| format!("{ip}|{ip}|{port}", ip = a.ip(), port = a.port()))
            .collect();
        format!("{}\n{}\n", self.epoch, nodes.join(" "))
    }

    /// Whether `node` is in this view.
    pub fn has(&self, node: NodeId) -> bool {
        self.members.iter().any(|m| m.node == node)
    }
}

impl Member {
    /// The (host, port) a ketama client names this node by: its clients' address, or
    /// (without one: the simulator's nodes) `node-<id>` and port 0.
    fn ketama_name(&self) -> (String, u16) {
        match self.addr {
            Some(a) => (a.ip().to_string(), a.port()),
            None => (format!("node-{}", self.node), 0),
        }
    }
}

/// A view's ketama ring and the members (id, address) it was made of. Not part of
/// the view's value: views compare, print and travel without it.
#[derive(Default)]
pub(super) struct RingCache(spin::Once<Arc<RingOf>>);

type RingOf = (ketama::Ring, Vec<(NodeId, Option<SocketAddr>)>);

impl Clone for RingCache {
    fn clone(&self) -> Self {
        let copy = RingCache::default();
        if let Some(ring) = self.0.get() {
            copy.0.call_once(|| ring.clone());
        }
        copy
    }
}

impl PartialEq for RingCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RingCache {}

impl core::fmt::Debug for RingCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RingCache")
    }
}

/// A key's owners in two views at once, as [`View::owners`] finds them in each, for a
/// move that asks both for every key a node holds (a million keys): a node's score does
/// not depend on the view, so it is computed once for every node of either view, and
/// the owners are kept in buffers reused from key to key instead of new vectors.
pub(super) struct OwnersInBoth<'v> {
    pub(super) old: &'v View,
    pub(super) new: &'v View,
    /// Every node of either view: its member in the old view and in the new one.
    pub(super) nodes: Vec<(Option<Member>, Option<Member>)>,
    /// The owners found for the last key, with their scores, best first.
    pub(super) before: Vec<(u64, Member)>,
    pub(super) after: Vec<(u64, Member)>,
    /// The same, without the scores (what [`OwnersInBoth::of`] lends).
    pub(super) members: (Vec<Member>, Vec<Member>),
}

impl<'v> OwnersInBoth<'v> {
    pub(super) fn new(old: &'v View, new: &'v View) -> Self {
        let mut nodes: Vec<(Option<Member>, Option<Member>)> =
            old.members.iter().map(|m| (Some(*m), None)).collect();
        for m in &new.members {
            let same = |n: &(Option<Member>, Option<Member>)| n.0.is_some_and(|o| o.node == m.node);
            match nodes.iter_mut().find(|n| same(n)) {
                Some(n) => n.1 = Some(*m),
                None => nodes.push((None, Some(*m))),
            }
        }
        OwnersInBoth {
            old,
            new,
            nodes,
            before: Vec::new(),
            after: Vec::new(),
            members: (Vec::new(), Vec::new()),
        }
    }

    /// `key`'s owners in the old view and in the new one, primary first.
    pub(super) fn of(&mut self, key: &[u8]) -> (&[Member], &[Member]) {
        let (before, after) = &mut self.members;
        let both = |p: Placement| {
            [self.old, self.new]
                .iter()
                .all(|v| v.layout == Layout::Partitioned && v.placement == p)
        };
        if both(Placement::Ketama) {
            // One hash of the key for both rings (a move looks up every key it holds),
            // into the lists kept from the last key.
            let hash = ketama::key_hash(key);
            self.old.ketama_owners(hash, before);
            self.new.ketama_owners(hash, after);
            return (before, after);
        }
        if !both(Placement::Rendezvous) {
            *before = self.old.owners(key);
            *after = self.new.owners(key);
            return (before, after);
        }
        self.before.clear();
        self.after.clear();
        for &(in_old, in_new) in &self.nodes {
            let Some(node) = in_old.or(in_new).map(|m| m.node) else {
                continue;
            };
            let score = placement::score(key, node);
            if let Some(m) = in_old {
                placement::keep_top(
                    &mut self.before,
                    self.old.replicas as usize,
                    score,
                    m,
                    |m| m.node,
                );
            }
            if let Some(m) = in_new {
                placement::keep_top(&mut self.after, self.new.replicas as usize, score, m, |m| {
                    m.node
                });
            }
        }
        before.clear();
        before.extend(self.before.iter().map(|t| t.1));
        after.clear();
        after.extend(self.after.iter().map(|t| t.1));
        (before, after)
    }
}

/// What the frontend sends when the store's nodes change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    /// The new view.
    pub view: View,
    /// The newest settled view (every key on all its owners; `None` before the first
    /// settled): its owners hold every key until this view settles, and the keys move
    /// from them. A node that joins gets it too: it owns keys it has not been sent yet.
    pub previous: Option<View>,
}
