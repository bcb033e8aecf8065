//! A data store partition: memcached's item semantics, expiry, cas, arithmetic, the
//! memory limit with LRU eviction, and a model check against a plain map.

use proptest::prelude::*;
use sesa_apps::memcache::protocol::StoreMode;
use sesa_apps::memcache::store::{
    ArithError, ITEM_OVERHEAD, Item, Partition, Scan, Stored, expiry,
};

const NOW: u64 = 1_700_000_000;

/// Every live key, through a whole scan (as a move reads them), in no order.
fn keys(p: &Partition, now: u64) -> Vec<Vec<u8>> {
    let mut scan = Scan::default();
    core::iter::from_fn(|| p.scan(&mut scan, now))
        .flatten()
        .collect()
}

fn value(p: &mut Partition, key: &[u8], now: u64) -> Option<Vec<u8>> {
    p.get(key, now).map(|i| i.value.clone())
}

#[test]
fn storage_modes_follow_memcached() {
    let mut p = Partition::new(1 << 20);
    assert_eq!(
        p.store(StoreMode::Replace, b"k", 0, 0, b"x", NOW),
        Stored::NotStored
    );
    assert_eq!(
        p.store(StoreMode::Append, b"k", 0, 0, b"x", NOW),
        Stored::NotStored
    );
    assert_eq!(
        p.store(StoreMode::Add, b"k", 3, 0, b"mid", NOW),
        Stored::Stored
    );
    assert_eq!(
        p.store(StoreMode::Add, b"k", 0, 0, b"again", NOW),
        Stored::NotStored
    );
    assert_eq!(
        p.store(StoreMode::Append, b"k", 9, 0, b">>", NOW),
        Stored::Stored
    );
    assert_eq!(
        p.store(StoreMode::Prepend, b"k", 9, 0, b"<<", NOW),
        Stored::Stored
    );
    let item = p.get(b"k", NOW).unwrap().clone();
    assert_eq!(item.value, b"<<mid>>");
    assert_eq!(item.flags, 3, "append and prepend keep the flags");
    assert_eq!(
        p.store(StoreMode::Replace, b"k", 1, 0, b"new", NOW),
        Stored::Stored
    );
    assert_eq!(value(&mut p, b"k", NOW).unwrap(), b"new");
}

#[test]
fn cas_values_change_on_every_write() {
    let mut p = Partition::new(1 << 20);
    assert_eq!(
        p.store(StoreMode::Cas(1), b"k", 0, 0, b"x", NOW),
        Stored::NotFound
    );
    p.store(StoreMode::Set, b"k", 0, 0, b"a", NOW);
    let cas = p.get(b"k", NOW).unwrap().cas;
    assert_eq!(
        p.store(StoreMode::Cas(cas + 1), b"k", 0, 0, b"b", NOW),
        Stored::Exists
    );
    assert_eq!(
        p.store(StoreMode::Cas(cas), b"k", 0, 0, b"b", NOW),
        Stored::Stored
    );
    let after = p.get(b"k", NOW).unwrap().cas;
    assert_ne!(after, cas);
    assert_eq!(
        p.store(StoreMode::Cas(cas), b"k", 0, 0, b"c", NOW),
        Stored::Exists,
        "stale cas"
    );
}

#[test]
fn expiry_relative_absolute_negative_and_touch() {
    assert_eq!(expiry(0, NOW), None);
    assert_eq!(expiry(-1, NOW), Some(0));
    assert_eq!(expiry(100, NOW), Some(NOW + 100));
    assert_eq!(
        expiry(60 * 60 * 24 * 30 + 1, NOW),
        Some(60 * 60 * 24 * 30 + 1),
        "absolute"
    );
    let mut p = Partition::new(1 << 20);
    p.store(StoreMode::Set, b"short", 0, 10, b"v", NOW);
    p.store(StoreMode::Set, b"gone", 0, -1, b"v", NOW);
    p.store(StoreMode::Set, b"abs", 0, (NOW + 5) as i64, b"v", NOW);
    assert!(
        p.get(b"gone", NOW).is_none(),
        "negative expiry: already expired"
    );
    assert!(p.get(b"short", NOW + 9).is_some());
    assert!(p.get(b"short", NOW + 10).is_none());
    assert!(p.get(b"abs", NOW + 4).is_some());
    assert!(p.get(b"abs", NOW + 5).is_none());
    p.store(StoreMode::Set, b"t", 0, 10, b"v", NOW);
    assert!(p.touch(b"t", 100, NOW + 5));
    assert!(p.get(b"t", NOW + 50).is_some(), "touch extended it");
    assert!(!p.touch(b"missing", 1, NOW));
}

#[test]
fn incr_wraps_decr_stops_at_zero_and_both_need_numbers() {
    let mut p = Partition::new(1 << 20);
    assert_eq!(p.arith(b"n", true, 1, NOW), Err(ArithError::NotFound));
    p.store(StoreMode::Set, b"n", 0, 0, b"18446744073709551615", NOW);
    assert_eq!(p.arith(b"n", true, 2, NOW), Ok(1), "wraps at 2^64");
    assert_eq!(p.arith(b"n", false, 5, NOW), Ok(0), "stops at zero");
    // Written over the old value, padded with spaces, as memcached does.
    assert_eq!(
        value(&mut p, b"n", NOW).unwrap(),
        format!("0{}", " ".repeat(19)).as_bytes()
    );
    // A longer result replaces it.
    p.store(StoreMode::Set, b"m", 0, 0, b"9", NOW);
    assert_eq!(p.arith(b"m", true, 1, NOW), Ok(10));
    assert_eq!(value(&mut p, b"m", NOW).unwrap(), b"10");
    p.store(StoreMode::Set, b"s", 0, 0, b"abc", NOW);
    assert_eq!(p.arith(b"s", true, 1, NOW), Err(ArithError::NonNumeric));
}

/// `incr`'s reading of a value, as memcached's `safe_strtoull` (checked against
/// memcached 1.6.18: " 5" and "12 a" are numbers to it, "12a" is not).
#[test]
fn a_number_is_read_as_memcached_reads_it() {
    use sesa_apps::memcache::store::leading_number;
    for (text, want) in [
        (&b"42"[..], Some(42)),
        (b" 5", Some(5)),
        (b"12 a", Some(12)),
        (b"7\0x", Some(7)),
        (b"+3", Some(3)),
        (b"-0", Some(0)),
        (b"0                   ", Some(0)),
        (b"18446744073709551615", Some(u64::MAX)),
        (b"18446744073709551616", None),
        (b"-5", None),
        (b"12a", None),
        (b"", None),
        (b"   ", None),
        (b"abc", None),
    ] {
        assert_eq!(
            leading_number(text),
            want,
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
}

#[test]
fn flush_all_now_and_later() {
    let mut p = Partition::new(1 << 20);
    p.store(StoreMode::Set, b"a", 0, 0, b"1", NOW);
    p.flush_all(0, NOW);
    assert!(p.get(b"a", NOW).is_none());
    p.store(StoreMode::Set, b"b", 0, 0, b"2", NOW);
    p.flush_all(10, NOW);
    assert!(
        p.get(b"b", NOW + 9).is_some(),
        "still there before the delay"
    );
    assert!(p.get(b"b", NOW + 10).is_none(), "flushed at the delay");
    p.store(StoreMode::Set, b"c", 0, 0, b"3", NOW + 11);
    assert!(
        p.get(b"c", NOW + 12).is_some(),
        "stored after the flush: valid"
    );
}

/// Eviction is CLOCK: a read item gets one more trip through the queue, so items read
/// since they were stored outlive ones never read, even newer ones (where strict LRU
/// would evict the oldest read one instead).
#[test]
fn eviction_passes_over_read_items_once() {
    let item = 10 + ITEM_OVERHEAD;
    let mut p = Partition::new(item * 4);
    for k in [b"a", b"b", b"c", b"d"] {
        p.store(StoreMode::Set, k, 0, 0, b"123456789", NOW);
    }
    // b and c read; a and d not.
    assert!(p.get(b"b", NOW).is_some() && p.get(b"c", NOW).is_some());
    p.store(StoreMode::Set, b"e", 0, 0, b"123456789", NOW);
    assert!(!p.holds(b"a", NOW), "a: oldest, never read");
    p.store(StoreMode::Set, b"f", 0, 0, b"123456789", NOW);
    assert!(!p.holds(b"d", NOW), "d: never read, while b and c were");
    assert!(p.holds(b"b", NOW) && p.holds(b"c", NOW));
    // The queue is now e, b, c, f (b and c requeued, unmarked): e goes, then b.
    p.store(StoreMode::Set, b"g", 0, 0, b"123456789", NOW);
    assert!(!p.holds(b"e", NOW), "e: never read");
    p.store(StoreMode::Set, b"h", 0, 0, b"123456789", NOW);
    assert!(!p.holds(b"b", NOW), "b: its second chance was used up");
    assert!(p.holds(b"c", NOW) && p.holds(b"f", NOW) && p.holds(b"g", NOW));
    assert_eq!(p.stats().evictions, 4);
}

/// Writing the same key over and over leaves stale entries in the eviction queue;
/// they neither hold memory for long nor change whom eviction picks.
#[test]
fn rewrites_do_not_disturb_eviction_order() {
    let item = 10 + ITEM_OVERHEAD;
    // A few rewrites (their stale entries still queued, the first one at the front),
    // and many (the queue compacted on the way).
    for rewrites in [10, 10_000] {
        let mut p = Partition::new(item * 3);
        for k in [b"a", b"b", b"c"] {
            p.store(StoreMode::Set, k, 0, 0, b"123456789", NOW);
        }
        for _ in 0..rewrites {
            p.store(StoreMode::Set, b"a", 0, 0, b"987654321", NOW);
        }
        p.store(StoreMode::Set, b"d", 0, 0, b"123456789", NOW);
        assert!(
            !p.holds(b"b", NOW),
            "{rewrites}: b, the oldest not stored again"
        );
        assert!(
            p.holds(b"a", NOW) && p.holds(b"c", NOW) && p.holds(b"d", NOW),
            "{rewrites}"
        );
        assert_eq!(p.stats().evictions, 1, "{rewrites}");
        assert_eq!(p.stats().bytes as usize, item * 3, "{rewrites}");
    }
}

#[test]
fn the_memory_limit_evicts_least_recently_used_first() {
    let item = 10 + ITEM_OVERHEAD; // a 1-byte key and a 9-byte value
    let mut p = Partition::new(item * 3);
    for k in [b"a", b"b", b"c"] {
        assert_eq!(
            p.store(StoreMode::Set, k, 0, 0, b"123456789", NOW),
            Stored::Stored
        );
    }
    assert!(
        p.get(b"a", NOW).is_some(),
        "a is now the most recently used"
    );
    p.store(StoreMode::Set, b"d", 0, 0, b"123456789", NOW);
    assert!(p.get(b"b", NOW).is_none(), "b was the least recently used");
    assert!(p.get(b"a", NOW).is_some() && p.get(b"c", NOW).is_some() && p.get(b"d", NOW).is_some());
    let s = p.stats();
    assert_eq!((s.items, s.evictions), (3, 1));
    assert!(s.bytes as usize <= item * 3);
    let huge = vec![0u8; item * 4];
    assert_eq!(
        p.store(StoreMode::Set, b"h", 0, 0, &huge, NOW),
        Stored::TooLarge
    );
}

#[test]
fn stats_count_hits_and_misses() {
    let mut p = Partition::new(1 << 20);
    p.store(StoreMode::Set, b"k", 0, 0, b"v", NOW);
    p.get(b"k", NOW);
    p.get(b"nope", NOW);
    assert_eq!((p.stats().hits, p.stats().misses), (1, 1));
    assert!(p.delete(b"k", NOW));
    assert!(!p.delete(b"k", NOW));
    assert_eq!(p.stats().items, 0);
    assert_eq!(p.stats().bytes, 0);
}

proptest! {
    /// With no expiry and room for everything, a partition behaves like a map.
    #[test]
    fn a_partition_is_a_map_when_nothing_expires_or_evicts(
        ops in proptest::collection::vec((0u8..4, 0u8..6, proptest::collection::vec(any::<u8>(), 0..8)), 0..200)
    ) {
        let mut p = Partition::new(1 << 30);
        let mut model = std::collections::BTreeMap::new();
        for (op, k, v) in ops {
            let key = [b'k', k];
            match op {
                0 => {
                    p.store(StoreMode::Set, &key, 0, 0, &v, NOW);
                    model.insert(key, v);
                }
                1 => {
                    let added = p.store(StoreMode::Add, &key, 0, 0, &v, NOW) == Stored::Stored;
                    prop_assert_eq!(added, !model.contains_key(&key));
                    model.entry(key).or_insert(v);
                }
                2 => {
                    prop_assert_eq!(p.delete(&key, NOW), model.remove(&key).is_some());
                }
                _ => {
                    let got = p.get(&key, NOW).map(|i| i.value.clone());
                    prop_assert_eq!(got.as_ref(), model.get(&key));
                }
            }
        }
        prop_assert_eq!(p.stats().items as usize, model.len());
    }

    /// Keys short enough to live in the table's slot and keys on the heap (the
    /// partition switches at 46 bytes) are stored, found, listed and removed alike.
    #[test]
    fn keys_of_every_length_behave_alike(
        ops in proptest::collection::vec((0u8..3, 0u8..4, 0usize..8, proptest::collection::vec(any::<u8>(), 0..8)), 0..200)
    ) {
        const LENGTHS: [usize; 8] = [1, 2, 45, 46, 47, 48, 200, 250];
        let mut p = Partition::new(1 << 30);
        let mut model = std::collections::BTreeMap::new();
        for (op, k, len, v) in ops {
            let mut key = vec![b'k'; LENGTHS[len]];
            *key.last_mut().unwrap() = b'0' + k;
            match op {
                0 => {
                    p.store(StoreMode::Set, &key, 0, 0, &v, NOW);
                    model.insert(key, v);
                }
                1 => {
                    prop_assert_eq!(p.delete(&key, NOW), model.remove(&key).is_some());
                }
                _ => {
                    let got = p.get(&key, NOW).map(|i| i.value.clone());
                    prop_assert_eq!(got.as_ref(), model.get(&key));
                }
            }
        }
        let mut keys = keys(&p, NOW);
        keys.sort();
        prop_assert_eq!(keys, model.keys().cloned().collect::<Vec<_>>());
        p.flush_all(0, NOW);
        prop_assert_eq!(p.stats().items, 0);
        prop_assert_eq!(p.stats().bytes, 0);
    }
}

proptest! {
    /// Under a tight memory limit, whatever the mix of writes, reads and deletes: the
    /// bytes counted never pass the limit and are exactly what the live items cost.
    #[test]
    fn eviction_keeps_the_bytes_within_the_limit_and_counted_right(
        ops in proptest::collection::vec((0u8..3, 0u8..12, 0usize..40), 0..400)
    ) {
        let limit = 6 * (ITEM_OVERHEAD + 20);
        let mut p = Partition::new(limit);
        for (op, k, len) in ops {
            let key = [b'k', b'a' + k];
            match op {
                0 => {
                    p.store(StoreMode::Set, &key, 0, 0, &vec![b'v'; len], NOW);
                }
                1 => {
                    p.get(&key, NOW);
                }
                _ => {
                    p.delete(&key, NOW);
                }
            }
            prop_assert!(p.stats().bytes as usize <= limit);
        }
        let counted: usize = keys(&p, NOW)
            .iter()
            .map(|k| k.len() + p.export(k, NOW).unwrap().value.len() + ITEM_OVERHEAD)
            .sum();
        prop_assert_eq!(p.stats().bytes as usize, counted);
    }
}

/// A copy of an item as its primary sends it.
fn copy(value: &[u8], cas: u64) -> Item {
    Item {
        value: value.to_vec(),
        flags: 3,
        expires_at: None,
        cas,
    }
}

#[test]
fn a_replica_copy_keeps_its_cas_refuses_older_copies_and_later_writes_go_above_it() {
    let mut p = Partition::new(1 << 20);
    assert!(p.import(b"k", Some(copy(b"new", 500)), NOW));
    assert_eq!(p.get(b"k", NOW).unwrap().cas, 500);
    // An older copy arriving late does not undo the newer one.
    assert!(!p.import(b"k", Some(copy(b"old", 400)), NOW));
    assert_eq!(p.get(b"k", NOW).unwrap().value, b"new");
    // A write here (after a failover, say) gets a cas above every copy received.
    assert_eq!(
        p.store(StoreMode::Set, b"k", 0, 0, b"mine", NOW),
        Stored::Stored
    );
    assert!(p.get(b"k", NOW).unwrap().cas > 500);
    assert_eq!(p.live_keys(NOW), 1);
    // `None` removes.
    assert!(p.import(b"k", None, NOW));
    assert!(!p.holds(b"k", NOW));
    assert_eq!(keys(&p, NOW), Vec::<Vec<u8>>::new());
    assert_eq!(p.live_keys(NOW), 0);
}

proptest! {
    /// A scan for a move, a slice at a time with writes and deletes between the slices:
    /// every key held when it began, and neither written nor deleted since, is in
    /// exactly one slice; no key is in two.
    #[test]
    fn a_scan_finds_every_key_held_when_it_began_once(
        keys in 0usize..3000,
        ops in proptest::collection::vec((0u8..3, 0usize..4000), 0..300),
        slices_between in 1usize..40,
    ) {
        let mut p = Partition::new(1 << 30);
        for k in 0..keys {
            p.store(StoreMode::Set, format!("key{k}").as_bytes(), 0, 0, b"v", NOW);
        }
        let mut untouched: std::collections::BTreeSet<Vec<u8>> =
            (0..keys).map(|k| format!("key{k}").into_bytes()).collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut scan = Scan::default();
        let mut ops = ops.into_iter();
        let mut slices = 0;
        while let Some(slice) = p.scan(&mut scan, NOW) {
            slices += 1;
            for key in slice {
                prop_assert!(seen.insert(key.clone()), "{:?} twice", key);
            }
            if slices % slices_between == 0 {
                for (op, k) in ops.by_ref().take(20) {
                    let key = format!("key{k}").into_bytes();
                    if op == 0 {
                        p.delete(&key, NOW);
                    } else {
                        p.store(StoreMode::Set, &key, 0, 0, b"w", NOW);
                    }
                    untouched.remove(&key);
                }
            }
        }
        prop_assert_eq!(slices, 256);
        let missed: Vec<_> = untouched.difference(&seen).collect();
        prop_assert!(missed.is_empty(), "missed {:?}", missed);
    }
}

#[test]
fn a_copy_replaces_a_dead_item_and_removing_one_reports_nothing_removed() {
    let mut p = Partition::new(1 << 20);
    // Expired, with a higher cas than the copy: the copy is installed anyway.
    p.store(StoreMode::Set, b"k", 0, 0, b"old", NOW);
    p.touch(b"k", -1, NOW);
    assert!(p.import(b"k", Some(copy(b"new", 1)), NOW));
    assert_eq!(p.get(b"k", NOW).unwrap().value, b"new");
    // Removing an expired item by copy: nothing live was removed, and its bytes go.
    p.touch(b"k", -1, NOW);
    assert!(!p.import(b"k", None, NOW));
    assert_eq!(p.stats().items, 0);
    assert_eq!(p.stats().bytes, 0);
}
