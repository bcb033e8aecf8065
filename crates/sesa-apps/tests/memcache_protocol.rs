//! The memcached text protocol parser: every command, memcached's error replies, the
//! limits, pipelining, and arbitrary input.

use proptest::prelude::*;
use sesa_apps::memcache::protocol::{Command, Limits, Parsed, StoreMode, parse, write_value};

fn limits() -> Limits {
    Limits::default()
}

fn one(input: &[u8]) -> Parsed<'_> {
    parse(input, &limits())
}

fn command(input: &[u8]) -> Command<'_> {
    match one(input) {
        Parsed::Command(c, used) => {
            assert_eq!(used, input.len(), "the whole input is one command");
            c
        }
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

fn reply(input: &[u8]) -> (&'static str, usize, usize, bool) {
    match one(input) {
        Parsed::Error {
            reply,
            consumed,
            skip,
            close,
        } => (std::str::from_utf8(reply).unwrap(), consumed, skip, close),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

/// A retrieval's keys, whether it asks for cas values, and its new expiry (`gat`).
fn retrieval(c: Command<'_>) -> (Vec<&[u8]>, bool, Option<i64>) {
    match c {
        Command::Get { keys, cas } => (keys.iter().collect(), cas, None),
        Command::Gat { exptime, keys, cas } => (keys.iter().collect(), cas, Some(exptime)),
        other => panic!("not a retrieval: {other:?}"),
    }
}

#[test]
fn retrieval_commands() {
    let (a, bb, ccc) = (b"a".as_slice(), b"bb".as_slice(), b"ccc".as_slice());
    assert_eq!(
        retrieval(command(b"get a bb ccc\r\n")),
        (vec![a, bb, ccc], false, None)
    );
    assert_eq!(
        retrieval(command(b"gets k\r\n")),
        (vec![b"k".as_slice()], true, None)
    );
    assert_eq!(
        retrieval(command(b"gat 100 k1 k2\r\n")),
        (vec![b"k1".as_slice(), b"k2"], false, Some(100))
    );
    assert_eq!(
        retrieval(command(b"gats -1 k\r\n")),
        (vec![b"k".as_slice()], true, Some(-1))
    );
    // A bare newline ends a line too, as memcached accepts.
    assert!(matches!(command(b"get k\n"), Command::Get { .. }));
    // Words are split at spaces, however many; a tab is part of a word.
    assert_eq!(
        retrieval(command(b"  get   a  bb\tccc \r\n")),
        (vec![a, b"bb\tccc".as_slice()], false, None)
    );
    assert_eq!(
        retrieval(command(b"gat  5   a bb\r\n")),
        (vec![a, bb], false, Some(5))
    );
    // More words than are read without an allocation (24): every key, in order.
    let keys: Vec<String> = (0..100).map(|i| format!("key{i}")).collect();
    let line = format!("get {}\r\n", keys.join(" "));
    let (got, _, _) = retrieval(command(line.as_bytes()));
    assert_eq!(got, keys.iter().map(|k| k.as_bytes()).collect::<Vec<_>>());
    let line = format!("gats 7 {}\r\n", keys.join(" "));
    let (got, cas, touch) = retrieval(command(line.as_bytes()));
    assert_eq!(got.len(), 100);
    assert_eq!((got[99], cas, touch), (b"key99".as_slice(), true, Some(7)));
    // A bad key among many is refused.
    let line = format!("get {} {}\r\n", keys.join(" "), "k".repeat(251));
    assert!(reply(line.as_bytes()).0.starts_with("CLIENT_ERROR"));
}

#[test]
fn storage_commands_carry_their_data() {
    assert_eq!(
        command(b"set k 5 0 3\r\nabc\r\n"),
        Command::Store {
            mode: StoreMode::Set,
            key: b"k",
            flags: 5,
            exptime: 0,
            data: b"abc",
            noreply: false
        }
    );
    for (name, mode) in [
        ("add", StoreMode::Add),
        ("replace", StoreMode::Replace),
        ("append", StoreMode::Append),
        ("prepend", StoreMode::Prepend),
    ] {
        let input = format!("{name} k 0 60 2 noreply\r\nhi\r\n");
        match command(input.as_bytes()) {
            Command::Store {
                mode: m,
                noreply: true,
                data: b"hi",
                exptime: 60,
                ..
            } => assert_eq!(m, mode),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        command(b"cas k 0 0 1 77\r\nx\r\n"),
        Command::Store {
            mode: StoreMode::Cas(77),
            ..
        }
    ));
    // Binary-safe data, including \r\n inside it.
    assert!(matches!(
        command(b"set k 0 0 4\r\n\r\n\r\n\r\n"),
        Command::Store {
            data: b"\r\n\r\n",
            ..
        }
    ));
    assert!(matches!(
        command(b"set k 0 0 0\r\n\r\n"),
        Command::Store { data: b"", .. }
    ));
}

#[test]
fn other_commands() {
    assert_eq!(
        command(b"delete k\r\n"),
        Command::Delete {
            key: b"k",
            noreply: false
        }
    );
    assert_eq!(
        command(b"delete k noreply\r\n"),
        Command::Delete {
            key: b"k",
            noreply: true
        }
    );
    assert_eq!(
        command(b"incr k 18446744073709551615\r\n"),
        Command::Arith {
            incr: true,
            key: b"k",
            delta: u64::MAX,
            noreply: false
        }
    );
    assert!(matches!(
        command(b"decr k 1 noreply\r\n"),
        Command::Arith {
            incr: false,
            noreply: true,
            ..
        }
    ));
    assert_eq!(
        command(b"touch k 10\r\n"),
        Command::Touch {
            key: b"k",
            exptime: 10,
            noreply: false
        }
    );
    assert_eq!(
        command(b"flush_all\r\n"),
        Command::FlushAll {
            delay: 0,
            noreply: false
        }
    );
    assert_eq!(
        command(b"flush_all 30 noreply\r\n"),
        Command::FlushAll {
            delay: 30,
            noreply: true
        }
    );
    assert_eq!(command(b"stats\r\n"), Command::Stats { args: vec![] });
    assert_eq!(
        command(b"stats slabs\r\n"),
        Command::Stats {
            args: vec![b"slabs".as_slice()]
        }
    );
    assert_eq!(command(b"version\r\n"), Command::Version);
    assert_eq!(
        command(b"version foo bar\r\n"),
        Command::Version,
        "as memcached 1.6"
    );
    assert_eq!(
        command(b"verbosity noreply\r\n"),
        Command::Verbosity { noreply: true }
    );
    // A wrong word count is `ERROR`; a bad level a `CLIENT_ERROR` (memcached 1.6.18).
    assert_eq!(reply(b"verbosity\r\n").0, "ERROR\r\n");
    assert_eq!(
        reply(b"verbosity x\r\n").0,
        "CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(reply(b"verbosity foo bar my\r\n").0, "ERROR\r\n");
    // A word past the level that is not `noreply` is ignored.
    assert_eq!(
        command(b"verbosity 1 x\r\n"),
        Command::Verbosity { noreply: false }
    );
    assert_eq!(
        command(b"verbosity 1\r\n"),
        Command::Verbosity { noreply: false }
    );
    assert_eq!(command(b"quit\r\n"), Command::Quit);
    assert_eq!(command(b"quit now\r\n"), Command::Quit);
}

#[test]
fn memcached_error_replies() {
    assert_eq!(reply(b"bogus\r\n").0, "ERROR\r\n");
    assert_eq!(reply(b"\r\n").0, "ERROR\r\n");
    let bad = "CLIENT_ERROR bad command line format\r\n";
    // memcached 1.6.18 counts a command's words first: a wrong count is `ERROR`, like
    // an unknown command (checked against it by tests/kv_vs_memcached.rs in `sesa`).
    for wrong_count in [
        &b"get\r\n"[..],
        b"gets\r\n",
        b"set k 0 0\r\n",
        b"set k 0 0 1 noreply extra\r\n",
        b"cas k 0 0 1\r\n",
        b"incr k\r\n",
        b"incr k 1 noreply x\r\n",
        b"touch k\r\n",
        b"delete\r\n",
        b"delete a b c d\r\n",
        b"flush_all 0 noreply x\r\n",
    ] {
        assert_eq!(reply(wrong_count).0, "ERROR\r\n", "{wrong_count:?}");
    }
    assert_eq!(reply(b"set k x 0 1\r\nz\r\n").0, bad);
    assert_eq!(reply(b"set k 0 0 -1\r\n").0, bad);
    // A last word that is not `noreply` is ignored.
    assert!(matches!(
        command(b"set k 0 0 1 foo\r\nz\r\n"),
        Command::Store { noreply: false, .. }
    ));
    let bad_time = "CLIENT_ERROR invalid exptime argument\r\n";
    assert_eq!(reply(b"touch k x\r\n").0, bad_time);
    assert_eq!(reply(b"gat x k\r\n").0, bad_time);
    assert_eq!(reply(b"flush_all x\r\n").0, bad_time);
    assert_eq!(
        reply(b"delete k 5\r\n").0,
        "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
    );
    // `gat` with no key is an empty retrieval; `get` takes `noreply` as a key.
    assert!(matches!(command(b"gat 10\r\n"), Command::Gat { keys, .. } if keys.is_empty()));
    assert!(matches!(command(b"get a noreply\r\n"), Command::Get { keys, .. } if keys.len() == 2));
    assert_eq!(
        reply(b"incr k abc\r\n").0,
        "CLIENT_ERROR invalid numeric delta argument\r\n"
    );
    // Keys: 250 bytes at most; no NUL or CR. Other control characters pass, as they
    // do in memcached 1.6.18 (checked against it: memaslap's keys hold 0x10 bytes).
    let long = format!("get {}\r\n", "k".repeat(251));
    assert_eq!(reply(long.as_bytes()).0, bad);
    let ok = format!("get {}\r\n", "k".repeat(250));
    assert!(matches!(command(ok.as_bytes()), Command::Get { .. }));
    assert_eq!(reply(b"get a\x00b\r\n").0, bad);
    assert_eq!(reply(b"delete a\rb\r\n").0, bad);
    for key in [&b"a\x01b"[..], b"\x10\x10k", b"a\tb", b"k\x7f"] {
        let line = [b"get ", key, b"\r\n"].concat();
        assert_eq!(retrieval(command(&line)), (vec![key], false, None));
    }
    // A data block not ended by \r\n.
    let (r, consumed, _, close) = reply(b"set k 0 0 3\r\nabcXY");
    assert_eq!(
        (r, consumed, close),
        ("CLIENT_ERROR bad data chunk\r\n", 18, false)
    );
}

#[test]
fn an_oversize_value_is_refused_and_skipped_not_buffered() {
    let limits = Limits {
        item_max: 10,
        ..Limits::default()
    };
    let line = b"set k 0 0 100\r\n";
    let mut input = line.to_vec();
    input.extend_from_slice(&[b'x'; 30]); // only part of the data has arrived
    match parse(&input, &limits) {
        Parsed::Error {
            reply,
            consumed,
            skip,
            close,
        } => {
            assert_eq!(reply, b"SERVER_ERROR object too large for cache\r\n");
            assert_eq!(consumed, input.len(), "what has arrived is dropped now");
            assert_eq!(skip, 100 + 2 - 30, "the rest is skipped as it arrives");
            assert!(!close);
        }
        other => panic!("{other:?}"),
    }
    // A value that fits is left for the next read until it is all there.
    assert_eq!(parse(b"set k 0 0 5\r\nab", &limits), Parsed::Incomplete);
}

#[test]
fn a_line_too_long_closes_the_connection() {
    let limits = Limits {
        line_max: 64,
        ..Limits::default()
    };
    let input = vec![b'g'; 100];
    let Parsed::Error { reply, close, .. } = parse(&input, &limits) else {
        panic!()
    };
    assert_eq!(reply, b"CLIENT_ERROR line too long\r\n");
    assert!(close);
    // Up to the limit, an unfinished line just waits for more.
    assert_eq!(parse(&[b'g'; 60], &limits), Parsed::Incomplete);
}

const PIPELINE: &[u8] =
    b"set a 1 0 3\r\nxyz\r\nget a b\r\nbogus\r\nincr n 5 noreply\r\ngets a\r\ndelete a\r\n";

/// Parses every complete command from `buf[*at..]`, advancing `at`, describing each.
fn drain(buf: &[u8], at: &mut usize, seen: &mut Vec<String>) {
    loop {
        match parse(&buf[*at..], &limits()) {
            Parsed::Command(c, used) => {
                seen.push(format!("{c:?}"));
                *at += used;
            }
            Parsed::Error {
                reply, consumed, ..
            } => {
                seen.push(String::from_utf8_lossy(reply).into_owned());
                *at += consumed;
            }
            Parsed::Incomplete => return,
        }
    }
}

fn run(buf: &[u8]) -> Vec<String> {
    let mut seen = Vec::new();
    drain(buf, &mut 0, &mut seen);
    seen
}

#[test]
fn pipelined_commands_parse_one_after_another_whatever_the_reads() {
    let whole = run(PIPELINE);
    assert_eq!(whole.len(), 6, "{whole:?}");
    assert_eq!(whole[2], "ERROR\r\n");
    // The same stream arriving in two reads split anywhere gives the same commands.
    for split in 0..PIPELINE.len() {
        let mut buf = PIPELINE[..split].to_vec();
        let mut seen = Vec::new();
        let mut at = 0;
        for part in [&PIPELINE[split..], &[][..]] {
            loop {
                match parse(&buf[at..], &limits()) {
                    Parsed::Command(c, used) => {
                        seen.push(format!("{c:?}"));
                        at += used;
                    }
                    Parsed::Error {
                        reply, consumed, ..
                    } => {
                        seen.push(String::from_utf8_lossy(reply).into_owned());
                        at += consumed;
                    }
                    Parsed::Incomplete => break,
                }
            }
            buf.extend_from_slice(part);
        }
        assert_eq!(seen, whole, "split at {split}");
    }
}

#[test]
fn values_are_written_as_memcached_does() {
    let mut out = Vec::new();
    write_value(&mut out, b"k", 7, b"data", None);
    write_value(&mut out, b"j", 0, b"", Some(42));
    assert_eq!(out, b"VALUE k 7 4\r\ndata\r\nVALUE j 0 0 42\r\n\r\n");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_always_make_progress(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        let limits = Limits { line_max: 256, item_max: 64, ..Limits::default() };
        let mut at = 0;
        while at < input.len() {
            match parse(&input[at..], &limits) {
                Parsed::Command(_, used) => { prop_assert!(used > 0); at += used; }
                Parsed::Error { consumed, close, .. } => {
                    prop_assert!(consumed > 0);
                    at += consumed;
                    if close { break; }
                }
                Parsed::Incomplete => break,
            }
        }
    }

    /// Meta command lines with random flag tokens: parsing never panics, and applying
    /// what parses to a partition never panics either.
    #[test]
    fn random_meta_flags_never_panic(
        command in prop::sample::select(vec!["mg k", "ms k 3", "md k", "ma k", "me k", "mn"]),
        tokens in proptest::collection::vec("[cCfFkOqstTvMNJDbIhlESZ+x0-9-]{1,6}", 0..6),
    ) {
        let line = format!("{command} {}\r\nabc\r\n", tokens.join(" "));
        let limits = Limits::default();
        let mut partition = sesa_apps::memcache::store::Partition::new(1 << 16);
        match parse(line.as_bytes(), &limits) {
            Parsed::Command(Command::Meta(meta), used) => {
                prop_assert!(used > 0);
                let mut out = Vec::new();
                for now in [1_700_000_000, 1_700_000_100] {
                    sesa_apps::memcache::meta::apply(&mut partition, &meta, now, &mut out);
                }
            }
            Parsed::Command(_, used) | Parsed::Error { consumed: used, .. } => prop_assert!(used > 0),
            Parsed::Incomplete => prop_assert!(false, "a whole line is never incomplete: {line:?}"),
        }
    }

    #[test]
    fn mutated_pipelines_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut input = PIPELINE.to_vec();
        for (i, b) in flips {
            let at = i.index(input.len());
            input[at] = b;
        }
        let _ = run(&input);
    }
}
