//! One partition of the data store: items with memcached's semantics, sans-IO.
//!
//! Each core of a node will own one partition (the hash table EBB's per-core rep). So a
//! partition needs no locks and takes the time as an argument: the hosted server passes
//! the clock, and the simulator will pass its virtual one.
//!
//! # Semantics (memcached 1.6's)
//! - Expiry: 0 never expires; a negative time is already expired; up to 30 days it is
//!   relative to now; anything larger is an absolute Unix time.
//! - `cas` values are unique per partition and change on every modification.
//! - `incr` wraps around at 2^64; `decr` stops at 0; both need a decimal value.
//! - Memory: every item costs its key, its value and a fixed overhead. When a store
//!   would exceed the limit, items are evicted in least-recently-used order, by the
//!   CLOCK approximation: items queue in the order they were stored, a read only marks
//!   its item, and eviction gives a marked item one more trip through the queue. So a
//!   hit costs a flag, not a reordering (memcached does not reorder on every hit
//!   either: it bumps an item at most once a minute). An item that cannot fit even in
//!   an empty partition is refused.
//! - Keys are hashed with foldhash under a per-partition seed drawn from the platform's
//!   entropy: clients choose the keys, and must not be able to choose colliding ones.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::ToString;
use alloc::vec::Vec;

use core::hash::BuildHasher;

use hashbrown::HashTable;

use super::protocol::StoreMode;

/// Bytes counted per item beyond its key and value (bookkeeping).
pub const ITEM_OVERHEAD: usize = 48;

/// Relative expiry times are at most this many seconds (memcached's 30 days); larger
/// values are absolute Unix times.
pub const RELATIVE_MAX: i64 = 60 * 60 * 24 * 30;

/// A stored item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The value.
    pub value: Vec<u8>,
    /// The client's opaque flags.
    pub flags: u32,
    /// Unix time at which it expires (`None`: never).
    pub expires_at: Option<u64>,
    /// Its cas value.
    pub cas: u64,
}

/// A key's state as it travels between the key's owners: its item, or its deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// The item.
    Item(Item),
    /// Deleted at this cas: a copy of the item with a lower cas is older than the
    /// deletion, and is not installed (a tombstone).
    Gone(u64),
}

/// The most tombstones a partition keeps (each a key and a cas: at most about 300
/// bytes). Past it the oldest goes first; a copy older than a deletion whose tombstone
/// went could then bring its item back. A tombstone is only needed while such a copy
/// may still arrive (a write waits at most 10 s for its copies; a move's copies are
/// made again from the partition when they are sent again), so the bound is reached
/// only by more than 4,096 deletes of one core's keys within that time.
pub const GRAVES_MAX: usize = 4096;

/// A partition's tombstones: deleted keys with the cas they were deleted at, oldest
/// first in `order` (an entry there whose cas is no longer its key's was replaced or
/// lifted since, and is skipped).
struct Graves {
    by_key: hashbrown::HashMap<Box<[u8]>, u64, foldhash::fast::FixedState>,
    order: VecDeque<(Box<[u8]>, u64)>,
}

impl Graves {
    fn new(seed: u64) -> Graves {
        Graves {
            by_key: hashbrown::HashMap::with_hasher(foldhash::fast::FixedState::with_seed(seed)),
            order: VecDeque::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Option<u64> {
        match self.by_key.is_empty() {
            true => None,
            false => self.by_key.get(key).copied(),
        }
    }

    /// `key` was deleted at `cas` (a newer deletion stays).
    fn mark(&mut self, key: &[u8], cas: u64) {
        if self.get(key).is_some_and(|c| c >= cas) {
            return;
        }
        self.by_key.insert(key.into(), cas);
        self.order.push_back((key.into(), cas));
        while self.by_key.len() > GRAVES_MAX {
            let Some((old, c)) = self.order.pop_front() else {
                break;
            };
            if self.by_key.get(&old) == Some(&c) {
                self.by_key.remove(&old);
            }
        }
        if self.order.len() > 2 * self.by_key.len() + 64 {
            let by_key = &self.by_key;
            self.order.retain(|(k, c)| by_key.get(k) == Some(c));
        }
    }

    /// A newer item than the deletion is under `key`: its tombstone is not needed.
    fn lift(&mut self, key: &[u8]) {
        if !self.by_key.is_empty() {
            self.by_key.remove(key);
        }
    }

    fn clear(&mut self) {
        self.by_key.clear();
        self.order.clear();
    }
}

/// What a storage command did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// `STORED`.
    Stored,
    /// `NOT_STORED` (add of a present key, replace/append/prepend of an absent one).
    NotStored,
    /// `EXISTS` (cas of a modified item).
    Exists,
    /// `NOT_FOUND` (cas of an absent item).
    NotFound,
    /// `SERVER_ERROR out of memory storing object`: larger than the whole partition.
    TooLarge,
}

/// Why `incr`/`decr` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithError {
    /// `NOT_FOUND`.
    NotFound,
    /// `CLIENT_ERROR cannot increment or decrement non-numeric value`.
    NonNumeric,
}

/// Counters a partition keeps (summed over partitions for `stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Items present.
    pub items: u64,
    /// Bytes counted against the limit.
    pub bytes: u64,
    /// Retrievals that found the item.
    pub hits: u64,
    /// Retrievals that did not.
    pub misses: u64,
    /// Items evicted to make room.
    pub evictions: u64,
}

/// Key bytes a [`Key`] holds in the table's own memory (longer keys are on the heap).
const KEY_INLINE: usize = 46;

/// A key as the table keeps it: up to [`KEY_INLINE`] bytes inside the table's slot, so
/// that comparing it with the key looked up touches no other cache line; longer ones
/// on the heap. A `Vec<u8>` key cost a second cache miss per lookup (the comparison's
/// `memcmp` was 12% of a loaded node's time at depth 16, its key behind a pointer).
///
/// It hashes and compares as the `[u8]` it holds, so the table is looked up with a
/// `&[u8]` (through `Borrow`).
#[derive(Clone)]
enum Key {
    Inline { len: u8, bytes: [u8; KEY_INLINE] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(key: &[u8]) -> Key {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= KEY_INLINE => {
                let mut bytes = [0; KEY_INLINE];
                bytes[..key.len()].copy_from_slice(key);
                Key::Inline { len, bytes }
            }
            _ => Key::Heap(key.into()),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(bytes) => bytes,
        }
    }
}

impl core::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl core::hash::Hash for Key {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes: `Borrow` requires the same hash for the same bytes.
        self.as_slice().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

/// Entries per block of the eviction queue.
const QUEUE_BLOCK: usize = 4096;

/// The eviction queue: (tick, key) in tick order, in blocks of [`QUEUE_BLOCK`] entries.
/// One `VecDeque` of a million entries grows by moving them all into a new buffer
/// twice as large (tens of megabytes, while the core serves nobody); this grows a
/// block at a time.
#[derive(Default)]
struct Queue {
    /// Never an empty block.
    blocks: VecDeque<VecDeque<(u64, Key)>>,
    len: usize,
}

impl Queue {
    fn len(&self) -> usize {
        self.len
    }

    fn push_back(&mut self, entry: (u64, Key)) {
        match self.blocks.back_mut() {
            Some(block) if block.len() < QUEUE_BLOCK => block.push_back(entry),
            _ => {
                let mut block = VecDeque::with_capacity(QUEUE_BLOCK);
                block.push_back(entry);
                self.blocks.push_back(block);
            }
        }
        self.len += 1;
    }

    fn pop_front(&mut self) -> Option<(u64, Key)> {
        let block = self.blocks.front_mut()?;
        let entry = block.pop_front();
        if block.is_empty() {
            self.blocks.pop_front();
        }
        self.len -= 1;
        entry
    }

    /// Keeps the entries `keep` says, in order, packed into full blocks again (a block
    /// emptied is freed before the next is made).
    fn retain(&mut self, mut keep: impl FnMut(&(u64, Key)) -> bool) {
        let blocks = core::mem::take(&mut self.blocks);
        self.len = 0;
        for block in blocks {
            for entry in block {
                if keep(&entry) {
                    self.push_back(entry);
                }
            }
        }
    }

    fn clear(&mut self) {
        self.blocks.clear();
        self.len = 0;
    }
}

/// Tables a partition's items are split over, by bits of their keys' hash.
const SHARDS: usize = 256;

/// Entries of [`SHARE_MAP`].
const MAP: usize = 4096;

/// Bits 32-43 of a key's hash -> its table ([`Index`]). Table `i` gets a share of the
/// keys proportional to 2^(i/256): the shares span one doubling, evenly in log scale, so
/// as the keys grow in number the tables reach their limits one after another, spread
/// over every doubling of the total. The same for every partition: made at compile
/// time.
static SHARE_MAP: [u8; MAP] = shares();

/// [`SHARE_MAP`]: table `i` owns the entries from `MAP * W(i) / W(SHARDS)` on, where
/// `W(i)` sums `2^(j/256)` over `j < i` (so each gets 11 to 22 of them).
const fn shares() -> [u8; MAP] {
    // 2^(1/256), to step the weights without `powf` (not in `core`).
    const STEP: f64 = 1.002_711_275_050_202_5;
    let mut starts = [0f64; SHARDS + 1];
    let mut weight = 1.0;
    let mut i = 0;
    while i < SHARDS {
        starts[i + 1] = starts[i] + weight;
        weight *= STEP;
        i += 1;
    }
    let total = starts[SHARDS];
    let mut map = [0u8; MAP];
    let (mut at, mut shard) = (0, 0);
    while at < MAP {
        while shard + 1 < SHARDS && (at as f64) >= starts[shard + 1] * MAP as f64 / total {
            shard += 1;
        }
        // At most 255: `shard` stays below SHARDS.
        map[at] = shard as u8;
        at += 1;
    }
    map
}

/// A partition's items: [`SHARDS`] hash tables, a key's chosen by bits 32-43 of its
/// hash (the tables use the lowest bits for the slot and the highest for their tags).
/// A table that grows rehashes and moves every item in it, and takes fresh memory the
/// kernel must zero, while its core serves nobody: for one table of a million items
/// that was 300 ms on these machines. Split, growing moves a 256th of the items at a
/// time. The key is hashed once per operation, here, not again by the table.
///
/// The tables get unequal shares of the keys (see [`SHARE_MAP`]): with equal shares
/// they would all reach their load limit, and grow, within moments of one another
/// while keys pour in (a move's copies), which only splits the same pause in 256.
struct Index {
    shards: Box<[HashTable<(Key, Entry)>]>,
    state: foldhash::fast::FixedState,
    counts: Counts,
}

/// How many items an [`Index`] holds and what they cost ([`cost`]): counted in and out
/// with the items, so no way of removing one can forget its bytes.
#[derive(Default)]
struct Counts {
    len: usize,
    bytes: usize,
}

impl Counts {
    fn added(&mut self, key: &Key, entry: &Entry) {
        self.len += 1;
        self.bytes += cost(key.as_slice(), &entry.item.value);
    }

    fn removed(&mut self, key: &Key, entry: &Entry) {
        self.len -= 1;
        self.bytes -= cost(key.as_slice(), &entry.item.value);
    }
}

impl Index {
    fn new(state: foldhash::fast::FixedState) -> Index {
        Index {
            shards: (0..SHARDS).map(|_| HashTable::new()).collect(),
            state,
            counts: Counts::default(),
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.state.hash_one(key)
    }

    fn shard(&self, hash: u64) -> usize {
        usize::from(SHARE_MAP[(hash >> 32) as usize % MAP])
    }

    fn len(&self) -> usize {
        self.counts.len
    }

    fn bytes(&self) -> usize {
        self.counts.bytes
    }

    fn get(&self, key: &[u8]) -> Option<&Entry> {
        let hash = self.hash(key);
        self.shards[self.shard(hash)]
            .find(hash, |(k, _)| k.as_slice() == key)
            .map(|(_, e)| e)
    }

    fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        let hash = self.hash(key);
        self.shards[self.shard(hash)]
            .find_mut(hash, |(k, _)| k.as_slice() == key)
            .map(|(_, e)| e)
    }

    fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// The entry under `key` if `keep` says so; one it does not keep is removed. One
    /// lookup either way.
    fn get_or_evict(
        &mut self,
        key: &[u8],
        keep: impl FnOnce(&Entry) -> bool,
    ) -> Option<&mut Entry> {
        let hash = self.hash(key);
        let shard = self.shard(hash);
        match self.shards[shard].find_entry(hash, |(k, _)| k.as_slice() == key) {
            Ok(found) if keep(&found.get().1) => Some(&mut found.into_mut().1),
            Ok(other) => {
                let ((key, entry), _) = other.remove();
                self.counts.removed(&key, &entry);
                None
            }
            Err(_) => None,
        }
    }

    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let hash = self.hash(key);
        let shard = self.shard(hash);
        let found = self.shards[shard].find_entry(hash, |(k, _)| k.as_slice() == key);
        let ((key, entry), _) = found.ok()?.remove();
        self.counts.removed(&key, &entry);
        Some(entry)
    }

    /// Stores `entry` under `key`, which is not there: every caller removes it first,
    /// so no probe compares keys.
    fn insert(&mut self, key: Key, entry: Entry) {
        debug_assert!(self.get(key.as_slice()).is_none(), "inserted twice");
        let hash = self.hash(key.as_slice());
        self.counts.added(&key, &entry);
        let state = &self.state;
        self.shards[self.shard(hash)]
            .insert_unique(hash, (key, entry), |(k, _)| state.hash_one(k.as_slice()));
    }

    fn values(&self) -> impl Iterator<Item = &Entry> {
        self.shards.iter().flat_map(|s| s.iter().map(|(_, e)| e))
    }

    fn clear(&mut self) {
        self.shards.iter_mut().for_each(HashTable::clear);
        self.counts = Counts::default();
    }
}

struct Entry {
    item: Item,
    /// The entry's position in the eviction queue.
    touched: u64,
    /// Read since it was queued: eviction passes it over once (CLOCK's reference bit).
    referenced: bool,
    /// When it was stored (a delayed `flush_all` invalidates what was stored before it).
    stored_at: u64,
}

/// One partition.
pub struct Partition {
    items: Index,
    /// The eviction queue, oldest first: (tick, key) as items were queued. An entry
    /// whose tick is no longer its key's `touched` is stale (the item went, or was
    /// stored or queued again since) and is dropped when it comes to the front, so
    /// removing or replacing an item costs the queue nothing; it is compacted when
    /// stale entries outnumber live ones ([`Partition::insert`]).
    lru: Queue,
    tick: u64,
    next_cas: u64,
    limit: usize,
    /// Items stored at or before this time are invalid (`flush_all`).
    flushed_before: Option<u64>,
    /// Keys deleted through the cluster ([`Partition::bury`], [`Held::Gone`]).
    graves: Graves,
    stats: PartitionStats,
}

/// Where a scan of a partition's keys stands ([`Partition::scan`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// The next of the partition's tables to look at.
    shard: usize,
}

fn cost(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ITEM_OVERHEAD
}

/// Whether `entry` is still there for a reader at `now`: not expired, and not stored at
/// or before a `flush_all` that has taken effect.
fn live(entry: &Entry, now: u64, flushed_before: Option<u64>) -> bool {
    let expired = entry.item.expires_at.is_some_and(|t| t <= now);
    let flushed = flushed_before.is_some_and(|f| f <= now && entry.stored_at <= f);
    !expired && !flushed
}

/// When an item with `exptime` stored at `now` expires (`Some(0)`: already).
pub fn expiry(exptime: i64, now: u64) -> Option<u64> {
    match exptime {
        0 => None,
        t if t < 0 => Some(0),
        t if t <= RELATIVE_MAX => Some(now.saturating_add(t as u64)),
        t => Some(t as u64),
    }
}

impl Partition {
    /// An empty partition holding at most `limit` bytes, its key hash seeded with a
    /// fixed seed (for tests; a server uses [`Partition::with_seed`]).
    pub fn new(limit: usize) -> Self {
        Self::with_seed(limit, 0)
    }

    /// An empty partition holding at most `limit` bytes, hashing keys under `seed`
    /// (which should be secret: from the platform's entropy).
    pub fn with_seed(limit: usize, seed: u64) -> Self {
        Partition {
            items: Index::new(foldhash::fast::FixedState::with_seed(seed)),
            lru: Queue::default(),
            tick: 0,
            next_cas: 1,
            limit,
            flushed_before: None,
            graves: Graves::new(seed),
            stats: PartitionStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> PartitionStats {
        PartitionStats {
            items: self.items.len() as u64,
            bytes: self.items.bytes() as u64,
            ..self.stats
        }
    }

    /// Zeroes the hit, miss and eviction counters (`stats reset`).
    pub fn reset_stats(&mut self) {
        self.stats = PartitionStats::default();
    }

    /// The most bytes the partition holds.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn live(&self, entry: &Entry, now: u64) -> bool {
        live(entry, now, self.flushed_before)
    }

    /// The live item under `key`, marking it recently used. One lookup of the table:
    /// a dead item found is removed through the same entry.
    pub fn get(&mut self, key: &[u8], now: u64) -> Option<&Item> {
        let flushed_before = self.flushed_before;
        match self
            .items
            .get_or_evict(key, |e| live(e, now, flushed_before))
        {
            Some(entry) => {
                self.stats.hits += 1;
                entry.referenced = true;
                Some(&entry.item)
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    fn purge_if_dead(&mut self, key: &[u8], now: u64) {
        let flushed_before = self.flushed_before;
        self.items
            .get_or_evict(key, |e| live(e, now, flushed_before));
    }

    fn remove(&mut self, key: &[u8]) -> Option<Item> {
        self.items.remove(key).map(|e| e.item)
    }

    /// A storage command.
    pub fn store(
        &mut self,
        mode: StoreMode,
        key: &[u8],
        flags: u32,
        exptime: i64,
        data: &[u8],
        now: u64,
    ) -> Stored {
        self.purge_if_dead(key, now);
        let existing = self.items.get(key).map(|e| &e.item);
        let value = match (mode, existing) {
            (StoreMode::Add, Some(_)) | (StoreMode::Replace, None) => return Stored::NotStored,
            (StoreMode::Append | StoreMode::Prepend, None) => return Stored::NotStored,
            (StoreMode::Cas(_), None) => return Stored::NotFound,
            (StoreMode::Cas(cas), Some(item)) if item.cas != cas => return Stored::Exists,
            (StoreMode::Append, Some(item)) => [item.value.as_slice(), data].concat(),
            (StoreMode::Prepend, Some(item)) => [data, item.value.as_slice()].concat(),
            _ => data.to_vec(),
        };
        // Append and prepend keep the item's flags and expiry, as memcached does.
        let (flags, expires_at) = match (mode, existing) {
            (StoreMode::Append | StoreMode::Prepend, Some(item)) => (item.flags, item.expires_at),
            _ => (flags, expiry(exptime, now)),
        };
        if cost(key, &value) > self.limit {
            return Stored::TooLarge;
        }
        self.remove(key);
        self.make_room(cost(key, &value));
        self.insert(
            key,
            Item {
                value,
                flags,
                expires_at,
                cas: 0,
            },
            now,
        );
        Stored::Stored
    }

    fn insert(&mut self, key: &[u8], mut item: Item, now: u64) {
        item.cas = self.next_cas;
        self.next_cas += 1;
        self.put(key, item, now);
    }

    /// Stores `item` as it is (its cas included) and queues it for eviction.
    fn put(&mut self, key: &[u8], item: Item, now: u64) {
        self.tick += 1;
        let key = Key::new(key);
        self.queue(self.tick, key.clone());
        self.items.insert(
            key,
            Entry {
                item,
                touched: self.tick,
                referenced: false,
                stored_at: now,
            },
        );
    }

    /// Evicts items until `needed` more bytes fit: the oldest in the queue that was
    /// not read since it was queued (CLOCK). A read one is queued again, unmarked, and
    /// a stale entry is dropped, so this ends within two trips through the queue.
    fn make_room(&mut self, needed: usize) {
        while self.items.bytes() + needed > self.limit {
            let Some((tick, key)) = self.lru.pop_front() else {
                return;
            };
            match self.items.get_mut(key.as_slice()) {
                // Stale: the item went, or was queued again later.
                Some(entry) if entry.touched != tick => {}
                None => {}
                Some(entry) if entry.referenced => {
                    entry.referenced = false;
                    self.tick += 1;
                    entry.touched = self.tick;
                    self.lru.push_back((self.tick, key));
                }
                Some(_) => {
                    self.items.remove(key.as_slice());
                    self.stats.evictions += 1;
                }
            }
        }
    }

    /// Queues `key` at `tick` (its entry's `touched`), first dropping the stale entries
    /// once they are as many as the live ones (each queued entry is looked at once per
    /// compaction, and a compaction comes after as many insertions as there are items:
    /// constant work per insertion, amortised).
    fn queue(&mut self, tick: u64, key: Key) {
        if self.lru.len() >= 2 * self.items.len() + 64 {
            let items = &self.items;
            self.lru
                .retain(|(t, k)| items.get(k.as_slice()).is_some_and(|e| e.touched == *t));
        }
        self.lru.push_back((tick, key));
    }

    /// `delete`: whether the key was there.
    pub fn delete(&mut self, key: &[u8], now: u64) -> bool {
        self.purge_if_dead(key, now);
        self.remove(key).is_some()
    }

    /// `incr`/`decr`: the new value. As in memcached, a result with no more digits
    /// than the old value had bytes is written over it, padded with spaces (`"10"`
    /// decremented by 1 reads `"9 "`); a longer one replaces it.
    ///
    /// # Errors
    /// [`ArithError::NotFound`], or [`ArithError::NonNumeric`] if the value does not
    /// start with a number as memcached reads it ([`leading_number`]).
    pub fn arith(
        &mut self,
        key: &[u8],
        incr: bool,
        delta: u64,
        now: u64,
    ) -> Result<u64, ArithError> {
        self.purge_if_dead(key, now);
        let entry = self.items.get(key).ok_or(ArithError::NotFound)?;
        let current = leading_number(&entry.item.value).ok_or(ArithError::NonNumeric)?;
        let width = entry.item.value.len();
        let next = if incr {
            current.wrapping_add(delta)
        } else {
            current.saturating_sub(delta)
        };
        let Some(old) = self.remove(key) else {
            return Err(ArithError::NotFound);
        };
        let mut value = next.to_string().into_bytes();
        if value.len() <= width {
            value.resize(width, b' ');
        }
        self.make_room(cost(key, &value));
        self.insert(key, Item { value, ..old }, now);
        Ok(next)
    }

    /// A copy of the live item under `key` (for replication), without marking it used
    /// or counting a hit.
    pub fn export(&mut self, key: &[u8], now: u64) -> Option<Item> {
        self.purge_if_dead(key, now);
        self.items.get(key).map(|e| e.item.clone())
    }

    /// The live item under `key` (for replication), without marking it used or
    /// counting a hit: [`Partition::export`] without the copy (and a dead item is
    /// left for the next write or read of its key to remove).
    pub fn peek(&self, key: &[u8], now: u64) -> Option<&Item> {
        self.items
            .get(key)
            .filter(|e| self.live(e, now))
            .map(|e| &e.item)
    }

    /// Whether a live item is under `key` (no hit or miss counted).
    pub fn holds(&mut self, key: &[u8], now: u64) -> bool {
        self.purge_if_dead(key, now);
        self.items.contains_key(key)
    }

    /// How many live keys there are (what a [`Partition::scan`] returns in all).
    pub fn live_keys(&self, now: u64) -> usize {
        self.items.values().filter(|e| self.live(e, now)).count()
    }

    /// The live keys of the next of the partition's tables, for moving them when the
    /// cluster changes (`None` once `scan` has been through them all): a slice of a
    /// 256th of the keys at a time, not every key copied out at once (for a million
    /// keys, tens of megabytes of fresh memory, and a core that serves nobody while it
    /// is made). Every key held when the scan began and still
    /// held is in some slice; one stored since may be too, or not.
    pub fn scan(&self, scan: &mut Scan, now: u64) -> Option<Vec<Vec<u8>>> {
        let shard = self.items.shards.get(scan.shard)?;
        scan.shard += 1;
        Some(
            shard
                .iter()
                .filter(|(_, e)| self.live(e, now))
                .map(|(k, _)| k.as_slice().to_vec())
                .collect(),
        )
    }

    /// Installs a replica's copy of `key` from its primary: `Some` replaces the item
    /// unless the one here is newer (a higher cas) or the key was deleted since (its
    /// tombstone's cas is as high); `None` drops it (no tombstone: the key leaves this
    /// node, it is not deleted). The item keeps the
    /// primary's cas, and this partition's next cas moves past it, so a write made here
    /// later (after a failover) always carries a higher cas than any copy it received.
    /// Returns whether the copy was installed.
    pub fn import(&mut self, key: &[u8], item: Option<Item>, now: u64) -> bool {
        // A move installs hundreds of thousands of these: the table is looked up once
        // before the replacement (a dead item counts as absent, as `purge_if_dead`
        // would make it), not once more to purge it.
        let Some(item) = item else {
            return self.items.remove(key).is_some_and(|e| self.live(&e, now));
        };
        self.next_cas = self.next_cas.max(item.cas.saturating_add(1));
        if self
            .graves
            .get(key)
            .is_some_and(|deleted| deleted >= item.cas)
        {
            return false;
        }
        let flushed_before = self.flushed_before;
        if self
            .items
            .get(key)
            .is_some_and(|e| live(e, now, flushed_before) && e.item.cas > item.cas)
        {
            return false;
        }
        let needed = cost(key, &item.value);
        if needed > self.limit {
            return false;
        }
        self.remove(key);
        self.make_room(needed);
        self.put(key, item, now);
        self.graves.lift(key);
        true
    }

    /// The next cas is at least `floor` (a cluster's primary: the view's, see
    /// `cluster::CAS_EPOCH_SHIFT`).
    pub fn raise_cas(&mut self, floor: u64) {
        self.next_cas = self.next_cas.max(floor);
    }

    /// Deletes `key` for the cluster, as its primary: whatever is there goes, and a
    /// tombstone with a new cas takes its place, so that no copy made before (still on
    /// its way from another owner) brings the item back here. Returns the deletion's
    /// cas, for the key's other owners ([`Held::Gone`]).
    pub fn bury(&mut self, key: &[u8]) -> u64 {
        let cas = self.next_cas;
        self.next_cas += 1;
        self.remove(key);
        self.graves.mark(key, cas);
        cas
    }

    /// The key's state for its other owners: its live item, or its tombstone (`None`:
    /// neither).
    pub fn export_held(&mut self, key: &[u8], now: u64) -> Option<Held> {
        match self.export(key, now) {
            Some(item) => Some(Held::Item(item)),
            None => self.graves.get(key).map(Held::Gone),
        }
    }

    /// [`Partition::export_held`] without the copy's purge of a dead item (for moves).
    pub fn peek_held(&self, key: &[u8], now: u64) -> Option<Held> {
        match self.peek(key, now) {
            Some(item) => Some(Held::Item(item.clone())),
            None => self.graves.get(key).map(Held::Gone),
        }
    }

    /// The keys with a tombstone (at most [`GRAVES_MAX`]): a move carries them to the
    /// keys' new owners, whose writes must come after the deletions.
    pub fn buried(&self) -> Vec<Vec<u8>> {
        self.graves.by_key.keys().map(|k| k.to_vec()).collect()
    }

    /// Installs the key's state from another owner: an item as [`Partition::import`]
    /// does (not over a newer item, nor over a newer deletion), a deletion (the item
    /// goes, a tombstone stays for copies older than it) unless the item here is newer.
    /// Returns whether it was installed.
    pub fn import_held(&mut self, key: &[u8], held: Held, now: u64) -> bool {
        let cas = match held {
            Held::Item(item) => return self.import(key, Some(item), now),
            Held::Gone(cas) => cas,
        };
        self.next_cas = self.next_cas.max(cas.saturating_add(1));
        self.purge_if_dead(key, now);
        if self.items.get(key).is_some_and(|e| e.item.cas > cas) {
            return false;
        }
        self.remove(key);
        self.graves.mark(key, cas);
        true
    }

    /// `touch`: whether the key was there.
    pub fn touch(&mut self, key: &[u8], exptime: i64, now: u64) -> bool {
        self.purge_if_dead(key, now);
        match self.items.get_mut(key) {
            Some(entry) => {
                entry.item.expires_at = expiry(exptime, now);
                entry.referenced = true;
                true
            }
            None => false,
        }
    }

    /// `flush_all [delay]`: every item present at `now + delay` becomes invalid then.
    pub fn flush_all(&mut self, delay: i64, now: u64) {
        let at = now.saturating_add(delay.max(0) as u64);
        if delay <= 0 {
            self.items.clear();
            self.lru.clear();
            self.graves.clear();
            self.flushed_before = None;
        } else {
            self.flushed_before = Some(at);
        }
    }
}

/// The number at the front of an item's value, read as memcached reads it for
/// `incr`/`decr` (C's `strtoull` through its `safe_strtoull`): white space, an optional
/// sign, decimal digits, then the value's end, white space or NUL. A number above
/// `u64::MAX` is refused, and so is a negative one unless it is zero.
pub fn leading_number(value: &[u8]) -> Option<u64> {
    // C's isspace in the C locale.
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let start = value.iter().position(|b| !space(*b)).unwrap_or(value.len());
    let (negative, rest) = match &value[start..] {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        rest => (false, rest),
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits).is_some_and(|b| *b != 0 && !space(*b)) {
        return None;
    }
    let n = rest[..digits].iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    if !negative {
        return Some(n);
    }
    // strtoull negates in unsigned arithmetic; memcached refuses what then looks
    // negative as a signed number.
    let wrapped = n.wrapping_neg();
    (wrapped as i64 >= 0).then_some(wrapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn the_tables_shares_span_one_doubling_in_order() {
        let map = SHARE_MAP;
        let mut counts = [0usize; SHARDS];
        for &shard in map.iter() {
            counts[usize::from(shard)] += 1;
        }
        // Table i's share is MAP * 2^(i/256) / sum (11.1 for the first, 22.1 for the
        // last), to within the rounding of the map's boundaries.
        let total: f64 = (0..SHARDS).map(|i| 2f64.powf(i as f64 / 256.0)).sum();
        for (i, &count) in counts.iter().enumerate() {
            let ideal = MAP as f64 * 2f64.powf(i as f64 / 256.0) / total;
            assert!(
                (count as f64 - ideal).abs() <= 1.0,
                "table {i}: {count} of {ideal}"
            );
        }
        // And the map is in table order, so each table's share is one run of it.
        assert!(map.windows(2).all(|w| w[0] <= w[1]));
    }

    fn item(value: &[u8], cas: u64) -> Item {
        Item {
            value: value.to_vec(),
            flags: 0,
            expires_at: None,
            cas,
        }
    }

    #[test]
    fn a_tombstone_keeps_older_copies_out_and_a_newer_item_lifts_it() {
        let mut p = Partition::new(1 << 20);
        assert!(p.import(b"k", Some(item(b"a", 5)), 0));
        // Deleted here as the primary: the tombstone's cas is past every copy seen.
        let deleted = p.bury(b"k");
        assert!(deleted > 5);
        assert_eq!(p.export_held(b"k", 0), Some(Held::Gone(deleted)));
        // A copy made before the deletion, arriving late, stays out.
        assert!(!p.import(b"k", Some(item(b"a", 5)), 0));
        assert!(!p.import_held(b"k", Held::Item(item(b"a", deleted)), 0));
        assert_eq!(p.export(b"k", 0), None);
        // A newer one is installed, and its key needs the tombstone no more.
        assert!(p.import(b"k", Some(item(b"b", deleted + 1)), 0));
        assert_eq!(
            p.export_held(b"k", 0),
            Some(Held::Item(item(b"b", deleted + 1)))
        );
        // A deletion older than the item here is not installed; a newer one is, and
        // leaves its own tombstone.
        assert!(!p.import_held(b"k", Held::Gone(deleted), 0));
        assert!(p.import_held(b"k", Held::Gone(deleted + 7), 0));
        assert_eq!(p.export_held(b"k", 0), Some(Held::Gone(deleted + 7)));
        assert!(!p.import(b"k", Some(item(b"c", deleted + 3)), 0));
        // Writes here after it carry higher cas values than the deletion.
        assert!(p.bury(b"other") > deleted + 7);
        // A key dropped (not deleted) leaves no tombstone.
        assert!(p.import(b"x", Some(item(b"x", 1)), 0));
        assert!(p.import(b"x", None, 0));
        assert_eq!(p.export_held(b"x", 0), None);
    }

    #[test]
    fn the_oldest_tombstones_go_past_the_bound() {
        let mut p = Partition::new(1 << 20);
        let first = p.bury(b"k0");
        for i in 1..=GRAVES_MAX {
            p.bury(format!("k{i}").as_bytes());
        }
        assert_eq!(p.graves.by_key.len(), GRAVES_MAX);
        assert_eq!(p.export_held(b"k0", 0), None, "the oldest went");
        assert!(p.export_held(b"k1", 0).is_some());
        // Its copies come in again.
        assert!(p.import(b"k0", Some(item(b"old", first - 1)), 0));
        // Tombstones replaced again and again keep the order's length bounded.
        for _ in 0..10 * GRAVES_MAX {
            p.bury(b"k1");
        }
        assert!(p.graves.order.len() <= 2 * GRAVES_MAX + 64);
    }

    #[test]
    fn the_queue_keeps_its_order_across_blocks() {
        let mut q = Queue::default();
        let n = 3 * QUEUE_BLOCK as u64 + 17;
        for t in 0..n {
            q.push_back((t, Key::new(&t.to_le_bytes())));
        }
        assert_eq!(q.len(), n as usize);
        for t in 0..QUEUE_BLOCK as u64 + 5 {
            assert_eq!(q.pop_front().map(|(t, _)| t), Some(t));
        }
        // Compaction keeps the order and packs the blocks again.
        q.retain(|(t, _)| t % 3 == 0);
        let left: Vec<u64> = core::iter::from_fn(|| q.pop_front().map(|(t, _)| t)).collect();
        let expected: Vec<u64> = (QUEUE_BLOCK as u64 + 5..n).filter(|t| t % 3 == 0).collect();
        assert_eq!(left, expected);
        assert_eq!(q.len(), 0);
        assert!(q.blocks.is_empty());
    }

    #[test]
    fn compaction_packs_the_queue_into_full_blocks() {
        let mut q = Queue::default();
        for t in 0..4 * QUEUE_BLOCK as u64 {
            q.push_back((t, Key::new(b"k")));
        }
        q.retain(|(t, _)| t % 2 == 0);
        assert_eq!(q.len(), 2 * QUEUE_BLOCK);
        assert_eq!(q.blocks.len(), 2);
    }
}
