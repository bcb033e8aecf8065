//! The meta commands (`mg`, `ms`, `md`, `ma`, `me`) applied to a partition, with the
//! replies memcached 1.6 sends (checked against memcached 1.6.18 by hand, and in the
//! server tests).
//!
//! Replies are a two-letter code (`VA`, `HD`, `EN`, `NF`, `NS`, `EX`), then the tokens
//! the request asked for, in request order: `c<cas>`, `f<flags>`, `k<key>`,
//! `O<opaque>`, `s<size>`, `t<seconds to expiry, -1 if none>`. A reply with no item
//! (`EN`, `NF`, ...) carries only `O` and `k` (and `c0` on a refused `ms`). With `q`,
//! `mg` leaves out `EN`, and `ms`, `md` and `ma` leave out their success reply.
//!
//! Not here (refused with a clear `CLIENT_ERROR` by the parser): stale items and
//! invalidation (`I`), win tokens and vivification on `mg` (`N`, `R`), base64 keys
//! (`b`), access times (`h`, `l`).

use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;

use super::protocol::{self, Meta, MetaFlags, MetaOp, StoreMode};
use super::store::{ArithError, Item, Partition, Stored};

/// Applies `meta` to `p` at `now`; appends the reply (maybe nothing, under `q`) to `out`.
pub fn apply(p: &mut Partition, meta: &Meta, now: u64, out: &mut Vec<u8>) {
    let (key, flags) = (meta.key.as_slice(), &meta.flags);
    let r = Reply { key, flags, now };
    // `C<cas>`: the item must exist and carry this cas.
    let cas_refused = |p: &mut Partition| match flags.compare_cas {
        None => None,
        Some(cas) => match p.export(key, now) {
            None => Some("NF"),
            Some(item) if item.cas != cas => Some("EX"),
            Some(_) => None,
        },
    };
    match &meta.op {
        MetaOp::Get => {
            if let Some(ttl) = flags.ttl {
                p.touch(key, ttl, now);
            }
            match p.get(key, now).cloned() {
                None if flags.quiet => {}
                None => r.line(out, "EN", None),
                Some(item) if flags.value => r.value(out, &item),
                Some(item) => r.line(out, "HD", Some(&item)),
            }
        }
        MetaOp::Set { data } => {
            if let Some(code) = cas_refused(p) {
                return r.line(out, code, None);
            }
            let mode = match flags.mode {
                Some(b'E') => StoreMode::Add,
                Some(b'A') => StoreMode::Append,
                Some(b'P') => StoreMode::Prepend,
                Some(b'R') => StoreMode::Replace,
                _ => StoreMode::Set,
            };
            let client_flags = flags.client_flags.unwrap_or(0);
            let ttl = flags.ttl.unwrap_or(0);
            match p.store(mode, key, client_flags, ttl, data, now) {
                Stored::Stored if flags.quiet => {}
                Stored::Stored => {
                    let item = p.export(key, now);
                    r.line(out, "HD", item.as_ref());
                }
                Stored::NotStored => r.line(out, "NS", None),
                Stored::Exists => r.line(out, "EX", None),
                Stored::NotFound => r.line(out, "NF", None),
                Stored::TooLarge => {
                    out.extend_from_slice(b"SERVER_ERROR out of memory storing object\r\n");
                }
            }
        }
        MetaOp::Delete => {
            if let Some(code) = cas_refused(p) {
                return r.line(out, code, None);
            }
            match p.delete(key, now) {
                true if flags.quiet => {}
                true => r.line(out, "HD", None),
                false => r.line(out, "NF", None),
            }
        }
        MetaOp::Arith => arith(p, &r, out, cas_refused),
        MetaOp::Debug => match p.export(key, now) {
            None => out.extend_from_slice(b"EN\r\n"),
            Some(item) => {
                out.extend_from_slice(b"ME ");
                out.extend_from_slice(key);
                out.extend_from_slice(
                    format!(
                        " exp={} cas={} size={}\r\n",
                        ttl_left(&item, now),
                        item.cas,
                        key.len() + item.value.len()
                    )
                    .as_bytes(),
                );
            }
        },
    }
}

fn arith(
    p: &mut Partition,
    r: &Reply<'_>,
    out: &mut Vec<u8>,
    cas_refused: impl Fn(&mut Partition) -> Option<&'static str>,
) {
    let (key, flags, now) = (r.key, r.flags, r.now);
    let created = if p.holds(key, now) {
        if let Some(code) = cas_refused(p) {
            return r.line(out, code, None);
        }
        false
    } else if let Some(ttl) = flags.vivify {
        // `N<ttl>`: a missing counter starts at `J` (default 0), and this request
        // returns that start value.
        let start = flags.initial.unwrap_or(0).to_string();
        if p.store(StoreMode::Set, key, 0, ttl, start.as_bytes(), now) != Stored::Stored {
            out.extend_from_slice(b"SERVER_ERROR out of memory storing object\r\n");
            return;
        }
        true
    } else {
        return r.line(out, "NF", None);
    };
    let number = if created {
        flags.initial.unwrap_or(0)
    } else {
        let incr = !matches!(flags.mode, Some(b'D' | b'-'));
        match p.arith(key, incr, flags.delta.unwrap_or(1), now) {
            Ok(n) => n,
            Err(ArithError::NotFound) => return r.line(out, "NF", None),
            Err(ArithError::NonNumeric) => {
                out.extend_from_slice(
                    b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
                );
                return;
            }
        }
    };
    if let Some(ttl) = flags.ttl {
        p.touch(key, ttl, now);
    }
    if flags.quiet {
        return;
    }
    match p.export(key, now) {
        // The number itself, as memcached returns it: the stored bytes may be padded
        // with spaces (see `Partition::arith`).
        Some(mut item) if flags.value => {
            item.value = number.to_string().into_bytes();
            r.value(out, &item)
        }
        item => r.line(out, "HD", item.as_ref()),
    }
}

/// Seconds until `item` expires, or -1 if it never does.
fn ttl_left(item: &Item, now: u64) -> i64 {
    item.expires_at.map_or(-1, |t| {
        i64::try_from(t.saturating_sub(now)).unwrap_or(i64::MAX)
    })
}

/// What every reply to one request needs: its key, its flags, and the time.
struct Reply<'a> {
    key: &'a [u8],
    flags: &'a MetaFlags,
    now: u64,
}

impl Reply<'_> {
    /// `code`, the requested tokens, `\r\n`.
    fn line(&self, out: &mut Vec<u8>, code: &str, item: Option<&Item>) {
        out.extend_from_slice(code.as_bytes());
        self.tokens(out, code, item);
        out.extend_from_slice(b"\r\n");
    }

    /// `VA <size>`, the tokens, then the value.
    fn value(&self, out: &mut Vec<u8>, item: &Item) {
        out.extend_from_slice(b"VA ");
        protocol::push_decimal(out, item.value.len() as u64);
        self.tokens(out, "VA", Some(item));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&item.value);
        out.extend_from_slice(b"\r\n");
    }

    fn tokens(&self, out: &mut Vec<u8>, code: &str, item: Option<&Item>) {
        for &flag in &self.flags.returned {
            match (flag, item) {
                (b'k', _) => {
                    out.extend_from_slice(b" k");
                    out.extend_from_slice(self.key);
                }
                (b'O', _) => {
                    out.extend_from_slice(b" O");
                    out.extend_from_slice(self.flags.opaque.as_deref().unwrap_or_default());
                }
                (b'c', Some(item)) => {
                    out.extend_from_slice(b" c");
                    protocol::push_decimal(out, item.cas);
                }
                // memcached answers a refused `ms` with a zero cas.
                (b'c', None) if code == "NS" => out.extend_from_slice(b" c0"),
                (b'f', Some(item)) => {
                    out.extend_from_slice(b" f");
                    protocol::push_decimal(out, u64::from(item.flags));
                }
                (b's', Some(item)) => {
                    out.extend_from_slice(b" s");
                    protocol::push_decimal(out, item.value.len() as u64);
                }
                (b't', Some(item)) => {
                    let ttl = ttl_left(item, self.now);
                    out.extend_from_slice(b" t");
                    protocol::push_signed(out, ttl);
                }
                _ => {}
            }
        }
    }
}
