//! One key's command as a value ([`Op`]), what it does to a partition ([`apply`]), and
//! which core of a node holds a key ([`owner`]): the bottom of the store, under the
//! server (which routes commands: [`super::server`]) and the cluster layer.

use alloc::vec::Vec;

use sesa_ebb::CoreId;

use super::protocol::{self, StoreMode};
use super::store::{ArithError, Partition, Stored};

/// One key's command, owned so it can be shipped to the key's core or to another node.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// `get`/`gets` of one key (`gat`/`gats` with `touch`).
    Get {
        /// The key.
        key: Vec<u8>,
        /// Whether the reply carries the cas value.
        cas: bool,
        /// A new expiry, applied after the read.
        touch: Option<i64>,
    },
    /// A storage command.
    Store {
        /// Which one.
        mode: StoreMode,
        /// The key.
        key: Vec<u8>,
        /// The client's flags.
        flags: u32,
        /// The expiry.
        exptime: i64,
        /// The value.
        data: Vec<u8>,
    },
    /// `delete`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// `incr`/`decr`.
    Arith {
        /// `incr` (else `decr`).
        incr: bool,
        /// The key.
        key: Vec<u8>,
        /// By how much.
        delta: u64,
    },
    /// `touch`.
    Touch {
        /// The key.
        key: Vec<u8>,
        /// The new expiry.
        exptime: i64,
    },
    /// A meta command (`mg`, `ms`, `md`, `ma`, `me`).
    Meta(protocol::Meta),
}

impl Op {
    pub(crate) fn key(&self) -> &[u8] {
        match self {
            Op::Get { key, .. }
            | Op::Store { key, .. }
            | Op::Delete { key }
            | Op::Arith { key, .. }
            | Op::Touch { key, .. } => key,
            Op::Meta(meta) => &meta.key,
        }
    }

    /// Whether it may change the item (and so must reach the replicas).
    pub(crate) fn writes(&self) -> bool {
        match self {
            Op::Get { touch, .. } => touch.is_some(),
            Op::Meta(meta) => match meta.op {
                protocol::MetaOp::Get => meta.flags.ttl.is_some(),
                protocol::MetaOp::Debug => false,
                _ => true,
            },
            _ => true,
        }
    }
}

/// Runs `op` on partition `p` at time `now`, appending its reply to `out`: what one
/// key's command does, without I/O (the server calls it on the key's core; the fuzzer
/// calls it directly).
pub fn apply(p: &mut Partition, op: Op, now: u64, out: &mut Vec<u8>) {
    match op {
        Op::Get { key, cas, touch } => get_into(p, &key, cas, touch, now, out),
        Op::Store {
            mode,
            key,
            flags,
            exptime,
            data,
        } => {
            out.extend_from_slice(match p.store(mode, &key, flags, exptime, &data, now) {
                Stored::Stored => b"STORED\r\n".as_slice(),
                Stored::NotStored => b"NOT_STORED\r\n",
                Stored::Exists => b"EXISTS\r\n",
                Stored::NotFound => b"NOT_FOUND\r\n",
                Stored::TooLarge => b"SERVER_ERROR out of memory storing object\r\n",
            });
        }
        Op::Delete { key } => out.extend_from_slice(if p.delete(&key, now) {
            b"DELETED\r\n".as_slice()
        } else {
            b"NOT_FOUND\r\n"
        }),
        Op::Arith { incr, key, delta } => match p.arith(&key, incr, delta, now) {
            Ok(v) => {
                protocol::push_decimal(out, v);
                out.extend_from_slice(b"\r\n");
            }
            Err(ArithError::NotFound) => out.extend_from_slice(b"NOT_FOUND\r\n"),
            Err(ArithError::NonNumeric) => out.extend_from_slice(
                b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
            ),
        },
        Op::Meta(meta) => super::meta::apply(p, &meta, now, out),
        Op::Touch { key, exptime } => out.extend_from_slice(if p.touch(&key, exptime, now) {
            b"TOUCHED\r\n".as_slice()
        } else {
            b"NOT_FOUND\r\n"
        }),
    }
}

/// A retrieval of `key` on its partition: its `VALUE` block (if it is there) appended
/// to `out`; with `touch`, its new expiry applied after the read (`gat` with a time in
/// the past still returns the item, then it is gone, as memcached does).
pub(crate) fn get_into(
    p: &mut Partition,
    key: &[u8],
    cas: bool,
    touch: Option<i64>,
    now: u64,
    out: &mut Vec<u8>,
) {
    if let Some(item) = p.get(key, now) {
        protocol::write_value(out, key, item.flags, &item.value, cas.then_some(item.cas));
    }
    if let Some(t) = touch {
        p.touch(key, t, now);
    }
}

/// FNV-1a: a key's core within a node of `cores` cores (stable, cheap).
pub fn owner(key: &[u8], cores: usize) -> CoreId {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    CoreId::new((h % cores as u64) as u32)
}

/// Where a read may be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// By the nearest holder: this node's copy when it is a replica of the key (or, in
    /// the cached layout, its cache), else the primary.
    Nearest,
    /// Only by the primary, as a write to the key is: for a read that must see a
    /// write sent just before it (on the same connection), which a copy here may not
    /// have received yet.
    AtPrimary,
}
