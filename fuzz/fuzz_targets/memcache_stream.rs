//! A memcached client's bytes, as a connection reads them: in pieces of any size,
//! parsed command by command (dropping the data of refused values as it arrives), and
//! every command applied to a small partition, meta commands included. Nothing may
//! panic, every step must consume bytes, and the partition must stay within its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesa_apps::memcache::protocol::{Command, Limits, Parsed, parse};
use sesa_apps::memcache::server::{self, Op};
use sesa_apps::memcache::store::Partition;

/// A small partition, so that eviction runs.
const MEMORY: usize = 1 << 14;

fuzz_target!(|data: &[u8]| {
    // The first byte says how the stream is cut into reads, the second moves the clock.
    let [cut, tick, stream @ ..] = data else {
        return;
    };
    let piece = usize::from(cut % 128) + 1;
    // Small limits, so that they are reached.
    let limits = Limits {
        key_max: 250,
        item_max: 2048,
        line_max: 1024,
    };
    let mut p = Partition::new(MEMORY);
    let mut now = 1_700_000_000u64;
    let (mut buf, mut skip, mut out) = (Vec::new(), 0usize, Vec::new());
    for chunk in stream.chunks(piece) {
        let dropped = skip.min(chunk.len());
        skip -= dropped;
        buf.extend_from_slice(&chunk[dropped..]);
        let mut at = 0;
        loop {
            match parse(&buf[at..], &limits) {
                Parsed::Command(command, used) => {
                    assert!(used > 0);
                    apply(&mut p, command, now, &mut out);
                    at += used;
                }
                Parsed::Error {
                    consumed,
                    skip: more,
                    close,
                    ..
                } => {
                    assert!(consumed > 0);
                    at += consumed;
                    skip = more;
                    if close {
                        return;
                    }
                }
                Parsed::Incomplete => break,
            }
        }
        buf.drain(..at);
        assert!(buf.len() <= limits.line_max + limits.item_max + 2 + piece);
        assert!(p.stats().bytes as usize <= MEMORY);
        now += u64::from(*tick % 8);
        out.clear();
    }
});

/// Runs `command` on the partition through the server's own `server::apply`, as one
/// node with one core does (`flush_all` is the node's, not a key's: called directly).
fn apply(p: &mut Partition, command: Command<'_>, now: u64, out: &mut Vec<u8>) {
    let ops: Vec<Op> = match command {
        Command::Get { keys, cas } => keys
            .iter()
            .map(|k| Op::Get {
                key: k.to_vec(),
                cas,
                touch: None,
            })
            .collect(),
        Command::Gat { exptime, keys, cas } => keys
            .iter()
            .map(|k| Op::Get {
                key: k.to_vec(),
                cas,
                touch: Some(exptime),
            })
            .collect(),
        Command::Store {
            mode,
            key,
            flags,
            exptime,
            data,
            ..
        } => vec![Op::Store {
            mode,
            key: key.to_vec(),
            flags,
            exptime,
            data: data.to_vec(),
        }],
        Command::Delete { key, .. } => vec![Op::Delete { key: key.to_vec() }],
        Command::Arith {
            incr, key, delta, ..
        } => vec![Op::Arith {
            incr,
            key: key.to_vec(),
            delta,
        }],
        Command::Touch { key, exptime, .. } => vec![Op::Touch {
            key: key.to_vec(),
            exptime,
        }],
        Command::Meta(meta) => vec![Op::Meta(meta)],
        Command::FlushAll { delay, .. } => {
            p.flush_all(delay, now);
            Vec::new()
        }
        _ => Vec::new(),
    };
    for op in ops {
        server::apply(p, op, now, out);
    }
}
