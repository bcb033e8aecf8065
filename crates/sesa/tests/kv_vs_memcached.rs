//! The data store against memcached itself: the same scripts of commands, sent to a
//! real memcached (Debian's 1.6.18, installed by `scripts/test.sh`), to one `sesa kv`
//! node, and to a node of a 3-node store that owns none of the keys, must get the same
//! replies byte for byte. Only the values that are meant to differ are masked: cas
//! unique numbers (each server numbers its own writes). A native node (the kernel under
//! QEMU) answers the same scripts.
//!
//! Each script runs on a fresh connection after `flush_all`, and ends with `mn` (the
//! meta no-op), whose `MN` reply says everything before it was answered.

mod common;

use common::{Server, sesa_kv};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

fn memcached() -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("memcached")
        .args([
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-t",
            "1",
        ])
        // memcached refuses to run as root without a user to become.
        .args(["-u", "nobody"])
        .spawn()
        .unwrap_or_else(|e| {
            panic!("memcached cannot run ({e}): install it (scripts/test.sh does)")
        });
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "memcached did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// Sends `script` then `mn`, and returns everything answered before the `MN`.
fn run(port: u16, script: &[u8]) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"flush_all\r\n").unwrap();
    let mut ok = [0; 4];
    conn.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"OK\r\n");
    conn.write_all(script).unwrap();
    conn.write_all(b"mn\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    while !got.ends_with(b"MN\r\n") {
        match conn.read(&mut buf) {
            Ok(0) => break, // Closed by the server: what it said is the reply.
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no MN after {:?}: {e}", String::from_utf8_lossy(&got)),
        }
    }
    mask_cas(&String::from_utf8_lossy(&got))
}

/// Masks cas unique numbers: the fifth word of a `VALUE` line (`gets`, `gats`) and the
/// `c<number>` flag of a meta reply.
fn mask_cas(reply: &str) -> String {
    reply
        .split_inclusive("\r\n")
        .map(|line| {
            let words: Vec<&str> = line.trim_end().split(' ').collect();
            let meta = ["HD", "VA", "EN", "NS", "EX", "NF"].contains(&words[0]);
            if words[0] == "VALUE" && words.len() == 5 {
                format!("{} <cas>\r\n", words[..4].join(" "))
            } else if meta {
                let masked: Vec<String> = words
                    .iter()
                    .map(|w| match w.strip_prefix('c') {
                        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                            "c<cas>".to_owned()
                        }
                        _ => (*w).to_owned(),
                    })
                    .collect();
                format!("{}\r\n", masked.join(" "))
            } else {
                line.to_owned()
            }
        })
        .collect()
}

/// The scripts: each exercises one area, error replies included.
fn scripts() -> Vec<(&'static str, Vec<u8>)> {
    let long_key = "k".repeat(251);
    let key_250 = "k".repeat(250);
    vec![
        (
            "storage commands",
            b"set a 5 0 3\r\none\r\nget a\r\nadd a 0 0 1\r\nx\r\nadd b 0 0 3\r\ntwo\r\n\
              replace c 0 0 1\r\nx\r\nreplace b 7 0 4\r\nTWO!\r\nappend a 9 0 2\r\n++\r\n\
              prepend a 9 0 2\r\n--\r\nappend zz 0 0 1\r\nx\r\nprepend zz 0 0 1\r\nx\r\n\
              get a b c\r\nget a a\r\n"
                .to_vec(),
        ),
        (
            "cas and gets",
            b"set a 0 0 1\r\nx\r\ngets a\r\ncas a 0 0 1 999999999\r\ny\r\n\
              cas nope 0 0 1 1\r\ny\r\ncas a 0 0 1\r\ny\r\ngets a nope\r\n"
                .to_vec(),
        ),
        (
            "incr and decr",
            b"set n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\nincr n 18446744073709551615\r\n\
              incr n 1\r\nset m 0 0 1\r\n9\r\nincr m 1\r\nget m\r\nincr nope 1\r\n\
              set s 0 0 3\r\nabc\r\nincr s 1\r\nincr n abc\r\nincr n -1\r\ndecr n\r\n\
              set big 0 0 20\r\n18446744073709551615\r\nincr big 1\r\nget big\r\n\
              set sp 0 0 2\r\n 5\r\nincr sp 1\r\nget sp\r\nset w 0 0 4\r\n12 a\r\n\
              incr w 1\r\nget w\r\nset z 0 0 3\r\n12a\r\nincr z 1\r\n\
              set neg 0 0 2\r\n-0\r\nincr neg 1\r\nget neg\r\n"
                .to_vec(),
        ),
        (
            "expiry, touch and gat",
            b"set a 0 -1 1\r\nx\r\nget a\r\nset b 0 100 1\r\ny\r\ntouch b 200\r\n\
              touch nope 10\r\ngat 300 b nope\r\ngats 300 b\r\ngat -1 b\r\nget b\r\n\
              gat\r\ntouch b\r\n"
                .to_vec(),
        ),
        (
            "delete",
            b"set a 0 0 1\r\nx\r\ndelete a\r\ndelete a\r\nset a 0 0 1\r\nx\r\n\
              delete a 0\r\ndelete a 5\r\ndelete a noreply\r\nget a\r\ndelete\r\n"
                .to_vec(),
        ),
        (
            "noreply",
            b"set a 0 0 1 noreply\r\nx\r\nadd a 0 0 1 noreply\r\ny\r\n\
              append a 0 0 1 noreply\r\nz\r\nincr a 1 noreply\r\ntouch a 10 noreply\r\n\
              get a\r\nset n 0 0 1 noreply\r\n1\r\nincr n 4 noreply\r\nget n\r\n"
                .to_vec(),
        ),
        (
            "malformed commands",
            format!(
                "bogus\r\nget\r\nset a 0 0\r\nset a 0 0 abc\r\nx\r\nset a abc 0 1\r\nx\r\n\
                 set {long_key} 0 0 1\r\nx\r\nset {key_250} 0 0 1\r\nx\r\n\
                 get {key_250}\r\nset a 0 0 3\r\ntoolong\r\nget a\r\nverbosity\r\n\
                 verbosity 1\r\nflush_all abc\r\nflush_all 0\r\nflush_all noreply\r\n\
                 GET a\r\nset a 0 0 -1\r\n"
            )
            .into_bytes(),
        ),
        (
            // First on its connection: memcached drops the replies it still holds for
            // earlier commands when a retrieval fails this way (sesa keeps them).
            "a retrieval of a key over 250 bytes",
            format!("get a {long_key}\r\nset a 0 0 1\r\nx\r\nget a\r\n").into_bytes(),
        ),
        ("an item over the size limit", {
            let mut s = b"set big 0 0 2000000\r\n".to_vec();
            s.extend(std::iter::repeat_n(b'x', 2_000_000));
            s.extend_from_slice(b"\r\nget big\r\nset ok 0 0 2\r\nhi\r\nget ok\r\n");
            s
        }),
        (
            "meta commands",
            b"ms a 3\r\nabc\r\nmg a v\r\nmg a v k f s\r\nmg nope v\r\nmg nope v q\r\n\
              mg a k v O123\r\nms a 2 F5 T100\r\nhi\r\nmg a f t v\r\nms a 1 MA\r\n!\r\n\
              mg a v\r\nms a 1 MP\r\n<\r\nmg a v\r\nms b 1 ME\r\nx\r\nms b 1 ME\r\ny\r\n\
              ms c 1 MR\r\nx\r\nmd a\r\nmd a\r\nmd a q\r\nmg a v\r\nms n 1\r\n5\r\n\
              ma n\r\nma n v\r\nma n MD D2 v\r\nma nope\r\nma nope N0 J13 v\r\n\
              mg a c v\r\nms a 1 I\r\nx\r\nms a S1\r\nx\r\nmg\r\nms a\r\nma n D-1\r\n\
              ma n Dabc\r\nma n D1 D2\r\nma n Z\r\nmd a Z\r\nmd a q q\r\nmg a v v\r\n\
              mg a Z\r\nmg a Tabc\r\nms a 1 T1 T2\r\nx\r\nms a 1 MX\r\nx\r\nma n MX\r\n\
              ms m 2\r\n10\r\nma m MD D2 v t\r\nmg m v\r\nma m v\r\n"
                .to_vec(),
        ),
    ]
}

/// Runs every script on both servers; fails listing each script whose replies differ,
/// line by line.
fn compare(name: &str, reference: u16, sesa: u16) {
    let mut differences = String::new();
    for (what, script) in scripts() {
        let want = run(reference, &script);
        let got = run(sesa, &script);
        if got == want {
            continue;
        }
        differences += &format!("\nscript {what:?}:\n");
        let (got, want): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
        for i in 0..got.len().max(want.len()) {
            let (g, w) = (got.get(i), want.get(i));
            if g != w {
                differences += &format!("  line {i}: sesa {g:?}, memcached {w:?}\n");
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{name}: sesa and memcached differ{differences}"
    );
}

#[test]
fn one_node_answers_every_script_as_memcached_does() {
    let reference = memcached();
    let one = sesa_kv(&["--cores", "2"], 0);
    compare("one node", reference.port, one.port);
}

#[test]
fn a_store_of_three_nodes_answers_every_script_as_memcached_does() {
    let reference = memcached();
    // With the central layout every key lives on node 1 (and its replica, node 2), so
    // every command sent to node 3 is shipped to another node.
    let store = sesa_kv(&["--nodes", "3", "--cores", "1", "--layout", "central"], 3);
    compare("node 3 of 3", reference.port, store.port);
}

/// A native node (the kernel of `crates/sesa-native` under QEMU's TCG, two cores) runs
/// the same store code on its own platform: the same replies as memcached, libmemcached's
/// conformance suite, and absolute expiry times read against its wall clock (the CMOS
/// RTC), as memcached reads them.
#[test]
fn a_native_node_answers_every_script_as_memcached_does() {
    let reference = memcached();
    let node = common::native_kv(2, 16, 256);
    let port = node.server.port;
    compare("a native node", reference.port, port);
    common::memccapable(port);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let script = format!(
        "set past 0 {} 1\r\nx\r\nset soon 0 {} 1\r\ny\r\nget past soon\r\n",
        now - 5,
        now + 600
    );
    let want = run(reference.port, script.as_bytes());
    assert_eq!(
        want,
        "STORED\r\nSTORED\r\nVALUE soon 0 1\r\ny\r\nEND\r\nMN\r\n"
    );
    assert_eq!(
        run(port, script.as_bytes()),
        want,
        "{}",
        node.console.lock().unwrap()
    );
    let console = node.console.lock().unwrap().clone();
    assert!(
        console.contains("(Unix seconds, CMOS RTC)")
            && console.contains("kv: serving the memcached protocol on 0.0.0.0:11211 (2 cores"),
        "{console}"
    );
}
