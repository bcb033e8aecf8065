//! Parsing the memcached text protocol (memcached 1.6's commands, meta commands
//! included, with its limits and error replies), without I/O.
//!
//! The connection layer appends what it reads to a buffer and calls [`parse`] until it
//! answers [`Parsed::Incomplete`]. Each call handles one command: it returns the command
//! and how many bytes it used, or the error reply memcached would send. Pipelined
//! requests are simply consecutive calls on the same buffer.
//!
//! # Fidelity
//! The replies follow what memcached 1.6.18 (Debian 12's) sends, checked by sending
//! the same scripts to it and to sesa (`crates/sesa/tests/kv_vs_memcached.rs`). Like
//! memcached, a command is first checked for its number of words (a wrong count is
//! `ERROR`, as for an unknown command), and `noreply` is looked for only as the last
//! word, where any other word is ignored. One difference is on purpose: when a
//! retrieval fails on an over-long key, memcached drops the replies it still held for
//! earlier pipelined commands; sesa answers every command.
//!
//! # Limits (all explicit, all enforced before buffering)
//! - Keys: at most [`Limits::key_max`] bytes (250), with no spaces, NUL or CR. Other
//!   control characters are accepted, as memcached 1.6 accepts them (memaslap sends
//!   them); the protocol's "no control characters" is advice to clients.
//! - Values: at most [`Limits::item_max`] bytes (default 1 MiB). A larger `set` is
//!   answered `SERVER_ERROR object too large for cache`, and its data is *skipped*, not
//!   buffered: [`Parsed::Error::skip`] says how many more bytes to drop.
//! - A command line: at most [`Limits::line_max`] bytes (default 64 KiB, room for large
//!   multi-gets). A longer line is answered `CLIENT_ERROR line too long`, and the
//!   connection should be closed (the rest of the stream cannot be trusted).

use alloc::vec::Vec;

/// Bounds on what a client may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest key (memcached's is 250).
    pub key_max: usize,
    /// Largest value accepted.
    pub item_max: usize,
    /// Longest command line.
    pub line_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_max: 250,
            item_max: 1 << 20,
            line_max: 64 << 10,
        }
    }
}

/// How a storage command treats an existing item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StoreMode {
    /// Store unconditionally.
    Set,
    /// Store only if absent.
    Add,
    /// Store only if present.
    Replace,
    /// Add the data after the existing value.
    Append,
    /// Add the data before the existing value.
    Prepend,
    /// Store only if the item's cas value still matches.
    Cas(u64),
}

/// The keys of a retrieval, as they are in its command line (read where they are:
/// a `get` is parsed without an allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keys<'a> {
    /// The line, from the first word after the command's name.
    line: &'a [u8],
    /// Words before the first key (`gat`'s expiry).
    skip: usize,
}

impl<'a> Keys<'a> {
    /// The keys, in request order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        words(self.line).skip(self.skip)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// A line's words: split at spaces, as memcached does.
fn words(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| *b == b' ').filter(|t| !t.is_empty())
}

/// Words of a line read without an allocation; a longer line's are collected.
const WORDS_INLINE: usize = 24;

/// A parsed command, borrowing keys and data from the input buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `get`/`gets` (with cas values when `cas`).
    Get {
        /// The keys, in request order.
        keys: Keys<'a>,
        /// `gets`: include cas values.
        cas: bool,
    },
    /// `gat`/`gats`: get and touch.
    Gat {
        /// The new expiry.
        exptime: i64,
        /// The keys.
        keys: Keys<'a>,
        /// `gats`: include cas values.
        cas: bool,
    },
    /// `set`, `add`, `replace`, `append`, `prepend`, `cas`.
    Store {
        /// Which.
        mode: StoreMode,
        /// The key.
        key: &'a [u8],
        /// Opaque client flags.
        flags: u32,
        /// Expiry (0: never; negative: already expired; relative seconds up to 30 days,
        /// else a Unix time).
        exptime: i64,
        /// The value.
        data: &'a [u8],
        /// Do not reply.
        noreply: bool,
    },
    /// `delete`.
    Delete {
        /// The key.
        key: &'a [u8],
        /// Do not reply.
        noreply: bool,
    },
    /// `incr`/`decr`.
    Arith {
        /// `incr` (else `decr`).
        incr: bool,
        /// The key.
        key: &'a [u8],
        /// By how much.
        delta: u64,
        /// Do not reply.
        noreply: bool,
    },
    /// `touch`.
    Touch {
        /// The key.
        key: &'a [u8],
        /// The new expiry.
        exptime: i64,
        /// Do not reply.
        noreply: bool,
    },
    /// `flush_all [delay]`.
    FlushAll {
        /// Seconds from now (0: now).
        delay: i64,
        /// Do not reply.
        noreply: bool,
    },
    /// `stats [group]`.
    Stats {
        /// The arguments (none: general stats).
        args: Vec<&'a [u8]>,
    },
    /// `version`.
    Version,
    /// `config get <name>`: ElastiCache's auto-discovery (`config get cluster`).
    ConfigGet {
        /// What is asked for.
        name: &'a [u8],
    },
    /// `verbosity <level>`.
    Verbosity {
        /// Do not reply.
        noreply: bool,
    },
    /// `quit`: close the connection.
    Quit,
    /// A meta command on a key (`mg`, `ms`, `md`, `ma`, `me`).
    Meta(Meta),
    /// `mn`: answered `MN` (clients end a pipeline of quiet commands with it).
    MetaNoop,
}

/// A meta command, owned (it may be shipped to the key's core or node).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// What to do.
    pub op: MetaOp,
    /// The key.
    pub key: Vec<u8>,
    /// The flags, validated for `op`.
    pub flags: MetaFlags,
}

/// The meta commands on a key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MetaOp {
    /// `mg`.
    Get,
    /// `ms`, with its data block.
    Set {
        /// The value.
        data: Vec<u8>,
    },
    /// `md`.
    Delete,
    /// `ma`.
    Arith,
    /// `me`.
    Debug,
}

/// The flags of a meta command.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetaFlags {
    /// Flags that add a token to the reply, in request order: `c` (cas), `f` (client
    /// flags), `k` (key), `O` (opaque), `s` (size), `t` (seconds to expiry, -1: never).
    pub returned: Vec<u8>,
    /// `v`: return the value.
    pub value: bool,
    /// `q`: leave out the reply that means "as expected" (`EN` for `mg`, `HD` for the
    /// others).
    pub quiet: bool,
    /// `O<token>`: echoed back.
    pub opaque: Option<Vec<u8>>,
    /// `T<ttl>`: set the expiry.
    pub ttl: Option<i64>,
    /// `C<cas>`: act only if the item's cas is this.
    pub compare_cas: Option<u64>,
    /// `F<flags>` (`ms`): the client flags to store.
    pub client_flags: Option<u32>,
    /// `M<mode>`: `ms` S (set), E (add), A (append), P (prepend), R (replace); `ma` I
    /// or + (incr), D or - (decr). Stored as given.
    pub mode: Option<u8>,
    /// `N<ttl>` (`ma`): create a missing counter with this expiry.
    pub vivify: Option<i64>,
    /// `J<n>` (`ma`): the value a created counter starts at (default 0).
    pub initial: Option<u64>,
    /// `D<n>` (`ma`): the delta (default 1).
    pub delta: Option<u64>,
}

/// The outcome of parsing one command from the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A command, and the bytes it used.
    Command(Command<'a>, usize),
    /// The buffer holds no complete command yet: read more.
    Incomplete,
    /// A bad command: send `reply`, drop `consumed` bytes now and `skip` more as they
    /// arrive (the data block of a value that was refused), then go on, unless `close`.
    Error {
        /// The full reply line, `\r\n` included.
        reply: &'static [u8],
        /// Bytes of the buffer this error used.
        consumed: usize,
        /// Bytes still to discard beyond the buffer.
        skip: usize,
        /// Whether the connection must be closed.
        close: bool,
    },
}

/// `ERROR`: an unknown command.
pub const ERROR: &[u8] = b"ERROR\r\n";
const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
const BAD_DATA: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";
const TOO_LARGE: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
const LINE_TOO_LONG: &[u8] = b"CLIENT_ERROR line too long\r\n";
const BAD_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta argument\r\n";
const BAD_EXPTIME: &[u8] = b"CLIENT_ERROR invalid exptime argument\r\n";
const BAD_DELETE: &[u8] =
    b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
const INVALID_FLAG: &[u8] = b"CLIENT_ERROR invalid flag\r\n";
const UNSUPPORTED_FLAG: &[u8] =
    b"CLIENT_ERROR unsupported flag (sesa has no stale items, win tokens, base64 keys or access times)\r\n";
const BAD_MS_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ms M token\r\n";
const BAD_MA_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ma M token\r\n";
const BAD_TOKEN: &[u8] = b"CLIENT_ERROR bad token in command line format\r\n";
const DUPLICATE_FLAG: &[u8] = b"CLIENT_ERROR duplicate flag\r\n";
const INVALID_OR_DUPLICATE_FLAG: &[u8] = b"CLIENT_ERROR invalid or duplicate flag\r\n";
const OPAQUE_TOO_LONG: &[u8] = b"CLIENT_ERROR opaque token too long\r\n";
/// The longest opaque token memcached echoes.
const OPAQUE_MAX: usize = 32;

fn error(reply: &'static [u8], consumed: usize) -> Parsed<'static> {
    Parsed::Error {
        reply,
        consumed,
        skip: 0,
        close: false,
    }
}

/// Parses the command at the front of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    let Some(nl) = buf
        .iter()
        .take(limits.line_max + 2)
        .position(|b| *b == b'\n')
    else {
        if buf.len() > limits.line_max {
            return Parsed::Error {
                reply: LINE_TOO_LONG,
                consumed: buf.len(),
                skip: 0,
                close: true,
            };
        }
        return Parsed::Incomplete;
    };
    let line_end = nl + 1;
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > limits.line_max {
        return Parsed::Error {
            reply: LINE_TOO_LONG,
            consumed: line_end,
            skip: 0,
            close: true,
        };
    }
    // memcached's own tokenizer holds 24 words; a longer line (a `get` of many keys)
    // is rare enough to pay for a vector.
    let mut inline = [&[][..]; WORDS_INLINE];
    let mut count = 0;
    let mut spilled: Vec<&[u8]> = Vec::new();
    for word in words(line) {
        match inline.get_mut(count) {
            Some(slot) => *slot = word,
            None if spilled.is_empty() => {
                spilled.extend_from_slice(&inline);
                spilled.push(word);
            }
            None => spilled.push(word),
        }
        count += 1;
    }
    let tokens: &[&[u8]] = match spilled.is_empty() {
        true => &inline[..count],
        false => &spilled,
    };
    // The line after the command's name (the first word, after any spaces).
    let after_name = |skip| {
        let spaces = line.iter().take_while(|b| **b == b' ').count();
        let name = tokens.first().map_or(0, |name| name.len());
        Keys {
            line: line.get(spaces + name..).unwrap_or_default(),
            skip,
        }
    };
    let Some((&name, args)) = tokens.split_first() else {
        return error(ERROR, line_end);
    };
    if let [b'm', _] = name {
        return parse_meta(name, args, buf, line_end, limits);
    }
    // memcached 1.6 splits a line at spaces only, and takes every other byte into the
    // key (tools such as memaslap put control characters in theirs). NUL cuts its C
    // string short, and a CR would corrupt the `VALUE` line echoing the key: refused.
    let key_ok =
        |k: &[u8]| k.len() <= limits.key_max && !k.iter().any(|b| matches!(b, 0 | b'\r' | b'\n'));
    // memcached 1.6 checks how many words a command has before anything else, and
    // answers a wrong count `ERROR` (as for an unknown command). `words` counts the
    // command's name too.
    let words = tokens.len();
    let count_ok = match name {
        b"get" | b"gets" | b"gat" | b"gats" => words >= 2,
        b"set" | b"add" | b"replace" | b"append" | b"prepend" => matches!(words, 5 | 6),
        b"cas" => matches!(words, 6 | 7),
        b"incr" | b"decr" | b"touch" => matches!(words, 3 | 4),
        b"delete" => (2..=4).contains(&words),
        b"flush_all" => (1..=3).contains(&words),
        b"verbosity" => matches!(words, 2 | 3),
        _ => true,
    };
    if !count_ok {
        return error(ERROR, line_end);
    }
    // Where memcached looks for `noreply`: the last word, past the required ones; any
    // other word there is ignored.
    let noreply = args.last() == Some(&&b"noreply"[..]);
    let command = match name {
        // A retrieval takes every word as a key (`noreply` included, as memcached does).
        b"get" | b"gets" => {
            if !args.iter().all(|k| key_ok(k)) {
                return error(BAD_FORMAT, line_end);
            }
            Command::Get {
                keys: after_name(0),
                cas: name == b"gets",
            }
        }
        b"gat" | b"gats" => {
            let (t, keys) = (args[0], &args[1..]);
            let Some(exptime) = number::<i64>(t) else {
                return error(BAD_EXPTIME, line_end);
            };
            if !keys.iter().all(|k| key_ok(k)) {
                return error(BAD_FORMAT, line_end);
            }
            Command::Gat {
                exptime,
                keys: after_name(1),
                cas: name == b"gats",
            }
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            return parse_store(name, args, noreply, buf, line_end, limits, &key_ok);
        }
        b"delete" => {
            let key = args[0];
            if !key_ok(key) {
                return error(BAD_FORMAT, line_end);
            }
            // memcached still accepts a "0" hold time before `noreply`.
            let valid = match &args[1..] {
                [] => true,
                [one] => *one == b"0" || noreply,
                [hold, _] => *hold == b"0" && noreply,
                _ => false,
            };
            if !valid {
                return error(BAD_DELETE, line_end);
            }
            Command::Delete { key, noreply }
        }
        b"incr" | b"decr" => {
            let (key, delta) = (args[0], args[1]);
            if !key_ok(key) {
                return error(BAD_FORMAT, line_end);
            }
            match number::<u64>(delta) {
                Some(delta) => Command::Arith {
                    incr: name == b"incr",
                    key,
                    delta,
                    noreply,
                },
                None => return error(BAD_DELTA, line_end),
            }
        }
        b"touch" => {
            let key = args[0];
            if !key_ok(key) {
                return error(BAD_FORMAT, line_end);
            }
            match number::<i64>(args[1]) {
                Some(exptime) => Command::Touch {
                    key,
                    exptime,
                    noreply,
                },
                None => return error(BAD_EXPTIME, line_end),
            }
        }
        b"flush_all" => match args {
            [] | [b"noreply"] => Command::FlushAll { delay: 0, noreply },
            [d, ..] => match number::<i64>(d) {
                Some(delay) => Command::FlushAll { delay, noreply },
                None => return error(BAD_EXPTIME, line_end),
            },
        },
        b"stats" if !noreply => Command::Stats {
            args: args.to_vec(),
        },
        // memcached 1.6 answers `version` whatever follows it.
        b"version" => Command::Version,
        // ElastiCache's form exactly; memcached has no `config` (it answers `ERROR`).
        b"config" if words == 3 && args[0] == b"get" => Command::ConfigGet { name: args[1] },
        b"verbosity" => {
            // With noreply memcached sends nothing, not even for a bad level.
            if !noreply && number::<u32>(args[0]).is_none() {
                return error(BAD_FORMAT, line_end);
            }
            Command::Verbosity { noreply }
        }
        // Whatever follows it.
        b"quit" => Command::Quit,
        _ => return error(ERROR, line_end),
    };
    Parsed::Command(command, line_end)
}

/// Which flags each meta command takes: (supported, valid in memcached but not here).
fn meta_flags_of(name: &[u8]) -> Option<(&'static [u8], &'static [u8])> {
    Some(match name {
        b"mg" => (b"cfkOqstTv", b"bEhlNRu"),
        // `I` (invalidate) is taken on `ms` only without `C`, where it has no effect in
        // memcached either; with `C` it would need stale items.
        b"ms" => (b"cCFIkOqTM", b"bE"),
        b"md" => (b"CkOq", b"bEIxT"),
        b"ma" => (b"cCDJkMNOqtTv", b"bE"),
        b"me" => (b"", b"b"),
        _ => return None,
    })
}

/// A meta command (`mg`, `ms`, `md`, `ma`, `mn`, `me`): memcached 1.6's replies to bad
/// lines, flags and modes.
fn parse_meta<'a>(
    name: &[u8],
    args: &[&'a [u8]],
    buf: &'a [u8],
    line_end: usize,
    limits: &Limits,
) -> Parsed<'a> {
    if name == b"mn" {
        return Parsed::Command(Command::MetaNoop, line_end);
    }
    let Some((supported, unsupported)) = meta_flags_of(name) else {
        return error(ERROR, line_end);
    };
    let Some((&key, rest)) = args.split_first() else {
        return error(ERROR, line_end);
    };
    if key.len() > limits.key_max || key.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        return error(BAD_FORMAT, line_end);
    }
    // `ms` has its data length first.
    let (length, rest) = if name == b"ms" {
        match rest.split_first().map(|(l, r)| (number::<usize>(l), r)) {
            Some((Some(n), r)) => (Some(n), r),
            _ => return error(BAD_FORMAT, line_end),
        }
    } else {
        (None, rest)
    };
    // An error on an `ms` line also drops its data block, as memcached does (it would
    // otherwise be read as a command).
    let error = |reply: &'static [u8], line_end: usize| match length {
        Some(bytes) => {
            let data = bytes.saturating_add(2);
            let here = data.min(buf.len() - line_end);
            Parsed::Error {
                reply,
                consumed: line_end + here,
                skip: data - here,
                close: false,
            }
        }
        None => error(reply, line_end),
    };
    // memcached's `ma` and `md` answer every error in their flags alike.
    let flag_error = |reply: &'static [u8]| {
        if matches!(name, b"ma" | b"md") {
            INVALID_OR_DUPLICATE_FLAG
        } else {
            reply
        }
    };
    let mut flags = MetaFlags::default();
    let mut invalidate = false;
    let mut seen = [false; 128];
    for token in rest {
        let (flag, value) = (token[0], &token[1..]);
        if let Some(seen) = seen.get_mut(usize::from(flag)) {
            if *seen {
                return error(flag_error(DUPLICATE_FLAG), line_end);
            }
            *seen = true;
        }
        if !supported.contains(&flag) {
            return error(
                if unsupported.contains(&flag) {
                    UNSUPPORTED_FLAG
                } else {
                    flag_error(INVALID_FLAG)
                },
                line_end,
            );
        }
        let ok = match flag {
            b'c' | b'f' | b'k' | b's' | b't' => {
                flags.returned.push(flag);
                value.is_empty()
            }
            b'v' => {
                flags.value = true;
                value.is_empty()
            }
            b'q' => {
                flags.quiet = true;
                value.is_empty()
            }
            b'I' => {
                invalidate = true;
                value.is_empty()
            }
            b'O' => {
                if value.len() > OPAQUE_MAX {
                    return error(OPAQUE_TOO_LONG, line_end);
                }
                flags.returned.push(flag);
                flags.opaque = Some(value.to_vec());
                true
            }
            b'T' => number(value).map(|t| flags.ttl = Some(t)).is_some(),
            b'C' => number(value).map(|c| flags.compare_cas = Some(c)).is_some(),
            b'F' => number(value)
                .map(|f| flags.client_flags = Some(f))
                .is_some(),
            b'N' => number(value).map(|t| flags.vivify = Some(t)).is_some(),
            b'J' => number(value).map(|j| flags.initial = Some(j)).is_some(),
            b'D' => number(value).map(|d| flags.delta = Some(d)).is_some(),
            b'M' => {
                let valid: &[u8] = if name == b"ms" {
                    b"SEAPRsepar"
                } else {
                    b"I+D-id"
                };
                match value {
                    [m] if valid.contains(m) => {
                        flags.mode = Some(m.to_ascii_uppercase());
                        true
                    }
                    _ if name == b"ms" => return error(BAD_MS_MODE, line_end),
                    _ => return error(BAD_MA_MODE, line_end),
                }
            }
            _ => false,
        };
        if !ok {
            return error(flag_error(BAD_TOKEN), line_end);
        }
    }
    if invalidate && flags.compare_cas.is_some() {
        return error(UNSUPPORTED_FLAG, line_end);
    }
    let op = match name {
        b"mg" => MetaOp::Get,
        b"md" => MetaOp::Delete,
        b"ma" => MetaOp::Arith,
        b"me" => MetaOp::Debug,
        _ => {
            let bytes = length.unwrap_or(0);
            if bytes > limits.item_max {
                return error(TOO_LARGE, line_end);
            }
            let end = line_end + bytes + 2;
            if buf.len() < end {
                return Parsed::Incomplete;
            }
            if &buf[end - 2..end] != b"\r\n" {
                return self::error(BAD_DATA, end);
            }
            let meta = Meta {
                op: MetaOp::Set {
                    data: buf[line_end..end - 2].to_vec(),
                },
                key: key.to_vec(),
                flags,
            };
            return Parsed::Command(Command::Meta(meta), end);
        }
    };
    let meta = Meta {
        op,
        key: key.to_vec(),
        flags,
    };
    Parsed::Command(Command::Meta(meta), line_end)
}

/// A storage command: its line is parsed; its data block follows.
fn parse_store<'a>(
    name: &[u8],
    args: &[&'a [u8]],
    noreply: bool,
    buf: &'a [u8],
    line_end: usize,
    limits: &Limits,
    key_ok: &dyn Fn(&[u8]) -> bool,
) -> Parsed<'a> {
    // The word count was checked (4 or 5 arguments, one more for cas); a last one that
    // is not `noreply` is ignored, as memcached does.
    if !key_ok(args[0]) {
        return error(BAD_FORMAT, line_end);
    }
    let (Some(flags), Some(exptime), Some(bytes)) = (
        number::<u32>(args[1]),
        number::<i64>(args[2]),
        number::<usize>(args[3]),
    ) else {
        return error(BAD_FORMAT, line_end);
    };
    let mode = match name {
        b"set" => StoreMode::Set,
        b"add" => StoreMode::Add,
        b"replace" => StoreMode::Replace,
        b"append" => StoreMode::Append,
        b"prepend" => StoreMode::Prepend,
        _ => match number::<u64>(args[4]) {
            Some(cas) => StoreMode::Cas(cas),
            None => return error(BAD_FORMAT, line_end),
        },
    };
    if bytes > limits.item_max {
        // Refuse without buffering: the data (and its \r\n) is skipped as it arrives.
        let data = bytes.saturating_add(2);
        let here = data.min(buf.len() - line_end);
        return Parsed::Error {
            reply: TOO_LARGE,
            consumed: line_end + here,
            skip: data - here,
            close: false,
        };
    }
    let end = line_end + bytes + 2;
    if buf.len() < end {
        return Parsed::Incomplete;
    }
    if &buf[end - 2..end] != b"\r\n" {
        return error(BAD_DATA, end);
    }
    Parsed::Command(
        Command::Store {
            mode,
            key: args[0],
            flags,
            exptime,
            data: &buf[line_end..end - 2],
            noreply,
        },
        end,
    )
}

/// A decimal number token (no sign for unsigned types; at most 20 digits).
fn number<T: core::str::FromStr>(token: &[u8]) -> Option<T> {
    if token.is_empty() || token.len() > 20 {
        return None;
    }
    core::str::from_utf8(token).ok()?.parse().ok()
}

/// Appends `n` in decimal (as `format!` would, without making a string: replies are
/// written without an allocation of their own).
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// [`push_decimal`] of a signed number.
pub fn push_signed(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_decimal(out, n.unsigned_abs());
}

/// Appends a `VALUE` line and its data block for a retrieval reply.
pub fn write_value(out: &mut Vec<u8>, key: &[u8], flags: u32, data: &[u8], cas: Option<u64>) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    push_decimal(out, u64::from(flags));
    out.push(b' ');
    push_decimal(out, data.len() as u64);
    if let Some(cas) = cas {
        out.push(b' ');
        push_decimal(out, cas);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}
