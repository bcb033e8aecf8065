//! The history of a register workload and its checker: each key has one writer, whose
//! sets (and deletes, if the workload deletes) are sequential and carry growing
//! versions (a set writes its version as the value); anyone reads.
//!
//! Counts as Jepsen's checkers report them: acknowledged, failed (an error reply that
//! says it was not applied), indeterminate (timed out, its node crashed, or the store
//! refused it after it may have been applied somewhere: may take effect at any time
//! after it started), lost (acknowledged, and the final state does not show
//! it), unexpected (a value read that no set wrote).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use super::Counts;

pub(super) struct History<K> {
    /// Every value a set was started with, by key (every key written, deleted or set).
    attempted: BTreeMap<K, BTreeSet<u64>>,
    /// The versions of the deletes started, by key.
    deletes: BTreeMap<K, BTreeSet<u64>>,
    /// Values of sets whose outcome is unknown, by key: such a set may still take effect
    /// after later ones (it is concurrent with everything after it started).
    unknown: BTreeMap<K, BTreeSet<u64>>,
    /// The newest acknowledged value, by key.
    acked: BTreeMap<K, u64>,
    next_value: BTreeMap<K, u64>,
    counts: Counts,
    failures: Vec<String>,
}

impl<K> Default for History<K> {
    fn default() -> Self {
        History {
            attempted: BTreeMap::new(),
            deletes: BTreeMap::new(),
            unknown: BTreeMap::new(),
            acked: BTreeMap::new(),
            next_value: BTreeMap::new(),
            counts: Counts::default(),
            failures: Vec::new(),
        }
    }
}

impl<K: Ord + Clone + Debug> History<K> {
    /// Every key a set was started on.
    pub(super) fn keys(&self) -> Vec<K> {
        self.attempted.keys().cloned().collect()
    }

    /// A value some set read: it must be one a set wrote. `value` is `None` when the
    /// bytes did not decode.
    pub(super) fn read(&mut self, key: &K, value: Option<u64>, bytes: &[u8], when: &str) {
        let known = value.is_some_and(|v| self.attempted.get(key).is_some_and(|s| s.contains(&v)));
        if !known {
            self.counts.unexpected += 1;
            self.failures.push(format!(
                "{when}: key {key:?} read {:?}, which no set wrote",
                String::from_utf8_lossy(bytes)
            ));
        }
    }

    /// The version the next set or delete of `key` will carry.
    pub(super) fn next_version(&self, key: &K) -> u64 {
        self.next_value.get(key).map_or(1, |v| v + 1)
    }

    /// What a read of `key` that begins now must see at least: the newest version
    /// (a set's value, or a delete's) acknowledged so far (`None`: none yet).
    pub(super) fn floor(&self, key: &K) -> Option<u64> {
        self.acked.get(key).copied()
    }

    /// A read that began when [`History::floor`] said `floor` got `value` (`None`: a
    /// miss; `bytes`: what it got): a value some set wrote, and none older than
    /// `floor` unless a set of it is still of unknown outcome (it may land late); a
    /// miss only if a delete at least as new as `floor` was started.
    pub(super) fn read_since(
        &mut self,
        key: &K,
        floor: Option<u64>,
        value: Option<u64>,
        bytes: Option<&[u8]>,
    ) {
        if let Some(bytes) = bytes {
            self.read(key, value, bytes, "a client's read");
        }
        let Some(floor) = floor else { return };
        let late = |v: u64| self.unknown.get(key).is_some_and(|u| u.contains(&v));
        let stale = match value {
            None => !self.deleted_since(key, floor),
            Some(v) => v < floor && !late(v),
        };
        if stale {
            self.counts.stale += 1;
            self.failures.push(format!(
                "key {key:?}: a read saw {} after {floor} was acknowledged",
                value.map_or("nothing".to_string(), |v| v.to_string())
            ));
        }
    }

    /// Whether a delete of `key` may have taken effect after `version` did: one at
    /// `version` or after was started, or one of unknown outcome (it may land late).
    fn deleted_since(&self, key: &K, version: u64) -> bool {
        let late = |d: &u64| self.unknown.get(key).is_some_and(|u| u.contains(d));
        self.deletes
            .get(key)
            .is_some_and(|d| d.range(version..).next().is_some() || d.iter().any(late))
    }

    /// A failure the workload saw itself.
    pub(super) fn fail(&mut self, why: String) {
        self.failures.push(why);
    }

    /// Checks the final reads (a key's value, `None` for a miss; no entry: no answer),
    /// decoded with `decode`, and returns the counts and every broken invariant.
    pub(super) fn finish(
        mut self,
        reads: &BTreeMap<K, Option<Vec<u8>>>,
        decode: impl Fn(&[u8]) -> Option<u64>,
    ) -> (Counts, Vec<String>) {
        for key in self.keys() {
            let acked = self.acked.get(&key).copied();
            match reads.get(&key) {
                None => self
                    .failures
                    .push(format!("key {key:?}: the final read got no answer")),
                Some(None) => {
                    if let Some(a) = acked
                        && !self.deleted_since(&key, a)
                    {
                        self.counts.lost += 1;
                        self.failures.push(format!(
                            "key {key:?}: acknowledged value {a} lost (the key reads as never set)"
                        ));
                    }
                }
                Some(Some(bytes)) => {
                    let value = decode(bytes);
                    self.read(&key, value, bytes, "final read");
                    let late = |v: u64| self.unknown.get(&key).is_some_and(|u| u.contains(&v));
                    if let (Some(v), Some(a)) = (value, acked)
                        && v < a
                        && !late(v)
                    {
                        self.counts.lost += 1;
                        let what = match self.deletes.get(&key).is_some_and(|d| d.contains(&a)) {
                            true => "delete",
                            false => "value",
                        };
                        self.failures.push(format!(
                            "key {key:?}: acknowledged {what} {a} lost (reads {v})"
                        ));
                    }
                }
            }
        }
        (self.counts, self.failures)
    }
}

/// A set in flight: started with [`InFlight::begin`], then acknowledged or failed; if it
/// is dropped first (timed out, or its node crashed under it), its outcome is unknown.
pub(super) struct InFlight<'a, K: Ord + Clone + Debug> {
    history: &'a RefCell<History<K>>,
    key: K,
    /// The value the set writes.
    pub(super) value: u64,
    done: bool,
}

impl<'a, K: Ord + Clone + Debug> InFlight<'a, K> {
    /// Starts a set of `key` with the key's next version as its value.
    pub(super) fn begin(history: &'a RefCell<History<K>>, key: K) -> Self {
        Self::start(history, key, false)
    }

    /// Starts a delete of `key`, at the key's next version.
    pub(super) fn begin_delete(history: &'a RefCell<History<K>>, key: K) -> Self {
        Self::start(history, key, true)
    }

    fn start(history: &'a RefCell<History<K>>, key: K, delete: bool) -> Self {
        let value = {
            let mut h = history.borrow_mut();
            let v = h.next_value.entry(key.clone()).or_insert(0);
            *v += 1;
            let v = *v;
            // Every key written is read at the end, deleted or set.
            let attempted = h.attempted.entry(key.clone()).or_default();
            if delete {
                h.deletes.entry(key.clone()).or_default().insert(v);
            } else {
                attempted.insert(v);
            }
            v
        };
        InFlight {
            history,
            key,
            value,
            done: false,
        }
    }

    /// The set was acknowledged.
    pub(super) fn acked(mut self) {
        self.done = true;
        let mut h = self.history.borrow_mut();
        h.counts.acknowledged += 1;
        let acked = h.acked.entry(self.key.clone()).or_insert(0);
        *acked = (*acked).max(self.value);
    }

    /// The set failed with an error reply (not applied).
    pub(super) fn failed(mut self) {
        self.done = true;
        self.history.borrow_mut().counts.failed += 1;
    }
}

impl<K: Ord + Clone + Debug> Drop for InFlight<'_, K> {
    fn drop(&mut self) {
        if !self.done {
            let mut h = self.history.borrow_mut();
            h.counts.indeterminate += 1;
            h.unknown
                .entry(self.key.clone())
                .or_default()
                .insert(self.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Option<u64> {
        std::str::from_utf8(bytes).ok()?.parse().ok()
    }

    #[test]
    fn a_final_value_older_than_an_acknowledged_one_is_a_loss_unless_its_outcome_was_unknown() {
        let history = RefCell::new(History::<u32>::default());
        // Key 1: 1 acknowledged, 2 unknown (timed out), 3 acknowledged; reads 2.
        InFlight::begin(&history, 1).acked();
        drop(InFlight::begin(&history, 1));
        InFlight::begin(&history, 1).acked();
        // Key 2: 1 acknowledged, 2 failed, 3 acknowledged; reads 1.
        InFlight::begin(&history, 2).acked();
        InFlight::begin(&history, 2).failed();
        InFlight::begin(&history, 2).acked();
        // Key 3: 1 acknowledged; reads a value nobody wrote.
        InFlight::begin(&history, 3).acked();
        let reads = BTreeMap::from([
            (1, Some(b"2".to_vec())),
            (2, Some(b"1".to_vec())),
            (3, Some(b"9".to_vec())),
        ]);
        let (counts, failures) = history.into_inner().finish(&reads, decode);
        assert_eq!(counts.acknowledged, 5);
        assert_eq!(counts.indeterminate, 1);
        assert_eq!(counts.failed, 1);
        // An unknown write landing late is legal; an older acknowledged one is not.
        assert_eq!(counts.lost, 1, "{failures:?}");
        assert_eq!(counts.unexpected, 1, "{failures:?}");
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(
            failures
                .iter()
                .any(|f| f.contains("key 2") && f.contains("lost"))
        );
    }

    #[test]
    fn a_read_older_than_a_write_acknowledged_before_it_began_is_stale() {
        let history = RefCell::new(History::<u32>::default());
        // Before any acknowledgement, a miss is fine.
        let floor = history.borrow().floor(&1);
        history.borrow_mut().read_since(&1, floor, None, None);
        InFlight::begin(&history, 1).acked();
        drop(InFlight::begin(&history, 1)); // 2: unknown
        InFlight::begin(&history, 1).acked(); // 3
        let floor = history.borrow().floor(&1);
        assert_eq!(floor, Some(3));
        let mut h = history.borrow_mut();
        // 3 and the late 2 are fine; 1 and a miss are stale.
        h.read_since(&1, floor, Some(3), Some(b"3"));
        h.read_since(&1, floor, Some(2), Some(b"2"));
        h.read_since(&1, floor, Some(1), Some(b"1"));
        h.read_since(&1, floor, None, None);
        drop(h);
        let (counts, failures) = history
            .into_inner()
            .finish(&BTreeMap::from([(1, Some(b"3".to_vec()))]), decode);
        assert_eq!(counts.stale, 2, "{failures:?}");
        assert_eq!(counts.unexpected, 0, "{failures:?}");
        assert_eq!(failures.len(), 2, "{failures:?}");
    }

    #[test]
    fn a_delete_is_a_version_too_and_a_value_older_than_it_is_stale_or_lost() {
        let history = RefCell::new(History::<u32>::default());
        // Key 1: set 1, delete 2 acknowledged; set 3 of unknown outcome.
        InFlight::begin(&history, 1).acked();
        InFlight::begin_delete(&history, 1).acked();
        let floor = history.borrow().floor(&1);
        assert_eq!(floor, Some(2));
        drop(InFlight::begin(&history, 1));
        // Key 2: set 1 acknowledged, a delete begun and not answered yet.
        InFlight::begin(&history, 2).acked();
        let deleting = InFlight::begin_delete(&history, 2);
        // Key 3: a delete of unknown outcome, then set 2 acknowledged: the delete may
        // land after it.
        drop(InFlight::begin_delete(&history, 3));
        InFlight::begin(&history, 3).acked();
        let mut h = history.borrow_mut();
        // A miss and the late 3 are fine after the delete; 1 came back: stale.
        h.read_since(&1, floor, None, None);
        h.read_since(&1, floor, Some(3), Some(b"3"));
        h.read_since(&1, floor, Some(1), Some(b"1"));
        // A delete under way may be seen, and a late one.
        h.read_since(&2, Some(1), None, None);
        h.read_since(&3, Some(2), None, None);
        drop(h);
        drop(deleting);
        // The final state: key 1 reads 1 (the delete undone), keys 2 and 3 nothing
        // (fine).
        let (counts, failures) = history.into_inner().finish(
            &BTreeMap::from([(1, Some(b"1".to_vec())), (2, None), (3, None)]),
            decode,
        );
        assert_eq!(counts.stale, 1, "{failures:?}");
        assert_eq!(counts.lost, 1, "{failures:?}");
        assert!(
            failures
                .iter()
                .any(|f| f.contains("acknowledged delete 2 lost")),
            "{failures:?}"
        );
        assert_eq!(failures.len(), 2, "{failures:?}");
    }
}
