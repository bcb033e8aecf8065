//! The memcached server on one 2-core node, spoken to by a plain TCP client as any
//! memcached client would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use sesa_apps::memcache::protocol::Limits;
use sesa_apps::memcache::server::{Kv, KvConfig, serve, serve_every_core};
use sesa_hosted::{Config, Exit, Runtime};

/// A 2-core node serving memcached, on a thread of the test; stopped and joined when
/// dropped.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(thread) = self.thread.take() {
            let joined = thread.join();
            // Report the node's failure, unless the test is failing already.
            if !std::thread::panicking() {
                joined.unwrap();
            }
        }
    }
}

/// Starts a node serving memcached on core 0.
fn server(config: KvConfig) -> Server {
    server_on(config, false)
}

/// As [`server`], listening on every core if `every_core`.
fn server_on(config: KvConfig, every_core: bool) -> Server {
    let (tx, rx) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let thread = std::thread::spawn(move || {
        let rt = Runtime::new(Config {
            pin_threads: false,
            idle_spins: 100,
            ..Config::with_cores(2)
        })
        .unwrap();
        let exit = rt.run(move || async move {
            let kv = Kv::create(&config).unwrap();
            let any_port = "127.0.0.1:0".parse().unwrap();
            if every_core {
                tx.send(serve_every_core(kv, any_port).await.unwrap())
                    .unwrap();
            } else {
                let listener = sesa_event::tcp_listen(any_port).unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                sesa_event::spawn_local(serve(kv, listener));
            }
            while !stop.load(SeqCst) {
                sesa_event::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(matches!(exit, Ok(Exit::Completed(()))));
    });
    Server {
        addr: rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        stop: done,
        thread: Some(thread),
    }
}

struct Client(TcpStream);

impl Client {
    fn new(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client(s)
    }

    /// Sends `request` and reads exactly the bytes of `expected`.
    fn expect(&mut self, request: &[u8], expected: &[u8]) {
        self.0.write_all(request).unwrap();
        let mut got = vec![0u8; expected.len()];
        self.0.read_exact(&mut got).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "after {:?}",
            String::from_utf8_lossy(request)
        );
    }

    /// Reads up to and including the next `\r\n`.
    fn until_line(&mut self) -> String {
        self.read_until(b"\r\n")
    }

    /// Reads until what was read ends with `suffix`.
    fn read_until(&mut self, suffix: &[u8]) -> String {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(suffix) {
            self.0.read_exact(&mut byte).unwrap();
            got.push(byte[0]);
        }
        String::from_utf8(got).unwrap()
    }

    /// Runs `expect` over each (request, reply) pair in order.
    fn script(&mut self, pairs: &[(&[u8], &[u8])]) {
        for (request, reply) in pairs {
            self.expect(request, reply);
        }
    }

    /// Sends `request` and reads one reply ending with `END\r\n`.
    fn until_end(&mut self, request: &[u8]) -> String {
        self.0.write_all(request).unwrap();
        self.read_until(b"END\r\n")
    }
}

#[test]
fn memcached_commands_work_over_tcp() {
    let server = server(KvConfig::default());
    let addr = server.addr;
    let mut c = Client::new(addr);
    c.script(&[
        (b"get nothing\r\n", b"END\r\n"),
        (b"set k 7 0 5\r\nhello\r\n", b"STORED\r\n"),
        (b"get k\r\n", b"VALUE k 7 5\r\nhello\r\nEND\r\n"),
        (b"add k 0 0 1\r\nx\r\n", b"NOT_STORED\r\n"),
        (b"replace nope 0 0 1\r\nx\r\n", b"NOT_STORED\r\n"),
        (b"append k 0 0 2\r\n!!\r\n", b"STORED\r\n"),
        (b"prepend k 0 0 2\r\n<<\r\n", b"STORED\r\n"),
        (b"get k\r\n", b"VALUE k 7 9\r\n<<hello!!\r\nEND\r\n"),
    ]);
    // gets / cas
    let gets = c.until_end(b"gets k\r\n");
    let cas: u64 = gets
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    c.expect(
        format!("cas k 0 0 1 {}\r\nz\r\n", cas + 1000).as_bytes(),
        b"EXISTS\r\n",
    );
    c.expect(
        format!("cas k 0 0 1 {cas}\r\nz\r\n").as_bytes(),
        b"STORED\r\n",
    );
    c.script(&[
        (b"cas nope 0 0 1 1\r\nz\r\n", b"NOT_FOUND\r\n"),
        // incr / decr
        (b"set n 0 0 2\r\n10\r\n", b"STORED\r\n"),
        (b"incr n 5\r\n", b"15\r\n"),
        (b"decr n 100\r\n", b"0\r\n"),
        (
            b"incr k 1\r\n",
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
        (b"incr nope 1\r\n", b"NOT_FOUND\r\n"),
        // touch / gat / delete; the cas above stored flags 0.
        (b"touch k 100\r\n", b"TOUCHED\r\n"),
        (b"gat 100 k\r\n", b"VALUE k 0 1\r\nz\r\nEND\r\n"),
        (b"delete k\r\n", b"DELETED\r\n"),
        (b"delete k\r\n", b"NOT_FOUND\r\n"),
        // an already expired item
        (b"set e 0 -1 1\r\nx\r\n", b"STORED\r\n"),
        (b"get e\r\n", b"END\r\n"),
        // errors, and the connection goes on
        (b"bogus\r\n", b"ERROR\r\n"),
        (b"get\r\n", b"ERROR\r\n"),
        (
            b"version\r\n",
            concat!("VERSION sesa-", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes(),
        ),
        (b"verbosity 1\r\n", b"OK\r\n"),
        (b"flush_all\r\n", b"OK\r\n"),
        (b"get n\r\n", b"END\r\n"),
    ]);
}

#[test]
fn many_keys_spread_over_cores_and_multi_get_keeps_request_order() {
    let server = server(KvConfig::default());
    let addr = server.addr;
    let mut c = Client::new(addr);
    // Pipelined: 200 sets in one write, with noreply except the last.
    let mut batch = Vec::new();
    for i in 0..200 {
        let v = format!("v{i}");
        let noreply = if i == 199 { "" } else { " noreply" };
        batch.extend_from_slice(
            format!("set key{i} {i} 0 {}{noreply}\r\n{v}\r\n", v.len()).as_bytes(),
        );
    }
    c.expect(&batch, b"STORED\r\n");
    let keys: Vec<String> = (0..200).rev().map(|i| format!("key{i}")).collect();
    let reply = c.until_end(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let values: Vec<&str> = reply
        .lines()
        .filter(|l| !l.starts_with("VALUE") && *l != "END")
        .collect();
    let expected: Vec<String> = (0..200).rev().map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected);
    let stats = c.until_end(b"stats\r\n");
    assert!(stats.contains("STAT curr_items 200\r\n"), "{stats}");
    assert!(stats.contains("STAT threads 2\r\n"), "{stats}");
    assert!(stats.contains("STAT curr_connections 1\r\n"), "{stats}");
    c.expect(b"quit\r\n", b"");
    let mut rest = Vec::new();
    assert_eq!(
        c.0.read_to_end(&mut rest).unwrap(),
        0,
        "quit closes the connection"
    );
}

#[test]
fn an_oversize_value_is_refused_and_its_data_skipped_across_reads() {
    let config = KvConfig {
        limits: Limits {
            item_max: 1024,
            ..Limits::default()
        },
        ..KvConfig::default()
    };
    let server = server(config);
    let addr = server.addr;
    let mut c = Client::new(addr);
    c.0.write_all(b"set big 0 0 5000\r\n").unwrap();
    c.0.write_all(&[b'x'; 2000]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.0.write_all(&[b'x'; 3000]).unwrap();
    // The data's \r\n, then a real command: it must be parsed as a command, not data.
    c.expect(
        b"\r\nget big\r\n",
        b"SERVER_ERROR object too large for cache\r\nEND\r\n",
    );
    c.expect(b"set ok 0 0 2\r\nhi\r\n", b"STORED\r\n");
}

#[test]
fn every_core_accepts_connections_and_all_see_one_store() {
    let server = server_on(KvConfig::default(), true);
    let addr = server.addr;
    // The kernel spreads connections by a hash of their addresses: with 32 of them, the
    // chance that all land on one of two cores is 2 in 2^32.
    let mut clients: Vec<Client> = (0..32).map(|_| Client::new(addr)).collect();
    // The cores accept asynchronously: ask until all 32 are counted (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let per_core = loop {
        let stats = clients[0].until_end(b"stats\r\n");
        let per_core: Vec<u64> = stats
            .lines()
            .find_map(|l| l.strip_prefix("STAT sesa_connections_per_core "))
            .unwrap_or_else(|| panic!("no per-core line in {stats}"))
            .split(',')
            .map(|n| n.parse().unwrap())
            .collect();
        if per_core.iter().sum::<u64>() == 32 || std::time::Instant::now() > deadline {
            break per_core;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(per_core.len(), 2);
    assert_eq!(per_core.iter().sum::<u64>(), 32, "{per_core:?}");
    assert!(per_core.iter().all(|&n| n > 0), "{per_core:?}");
    // Whichever core a client is served on, it sees every other client's writes.
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect(
            format!("set k{i} 0 0 1\r\n{}\r\n", i % 10).as_bytes(),
            b"STORED\r\n",
        );
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let j = (i + 7) % 32;
        c.expect(
            format!("get k{j}\r\n").as_bytes(),
            format!("VALUE k{j} 0 1\r\n{}\r\nEND\r\n", j % 10).as_bytes(),
        );
    }
    drop(clients);
}

#[test]
fn stats_groups_answer_as_memcached_does() {
    let config = KvConfig {
        memory_bytes: 8 << 20,
        ..KvConfig::default()
    };
    let server = server(config);
    let addr = server.addr;
    let mut c = Client::new(addr);
    c.script(&[
        (b"set a 0 0 1\r\nx\r\n", b"STORED\r\n"),
        (b"get a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n"),
        (b"get b\r\n", b"END\r\n"),
    ]);
    let stat = |c: &mut Client, request: &[u8], name: &str| -> String {
        let all = c.until_end(request);
        all.lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
            .unwrap_or_else(|| panic!("no {name} in {all}"))
            .to_owned()
    };
    assert_eq!(stat(&mut c, b"stats\r\n", "get_hits"), "1");
    assert_eq!(stat(&mut c, b"stats\r\n", "get_misses"), "1");
    assert_eq!(stat(&mut c, b"stats\r\n", "total_connections"), "1");
    c.expect(b"stats reset\r\n", b"RESET\r\n");
    assert_eq!(stat(&mut c, b"stats\r\n", "get_hits"), "0");
    assert_eq!(stat(&mut c, b"stats\r\n", "get_misses"), "0");
    assert_eq!(stat(&mut c, b"stats\r\n", "total_connections"), "0");
    // Items are not statistics: the reset keeps them.
    assert_eq!(stat(&mut c, b"stats\r\n", "curr_items"), "1");
    assert_eq!(
        stat(&mut c, b"stats settings\r\n", "maxbytes"),
        (8 << 20).to_string()
    );
    assert_eq!(
        stat(&mut c, b"stats settings\r\n", "item_size_max"),
        (1 << 20).to_string()
    );
    c.script(&[
        (b"stats items\r\n", b"END\r\n"),
        (b"stats no_such_group\r\n", b"ERROR\r\n"),
        (b"get a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n"),
    ]);
}

#[test]
fn connections_over_the_limit_are_told_and_closed() {
    let config = KvConfig {
        max_connections: 3,
        ..KvConfig::default()
    };
    let server = server_on(config, true);
    let addr = server.addr;
    let mut open: Vec<Client> = (0..3).map(|_| Client::new(addr)).collect();
    for c in &mut open {
        c.expect(b"version\r\n", b"VERSION sesa-");
        c.until_line();
    }
    // The fourth is refused with memcached's words, then closed.
    let mut extra = Client::new(addr);
    let mut got = Vec::new();
    extra.0.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"ERROR Too many open connections\r\n");
    assert_eq!(
        open[0]
            .until_end(b"stats settings\r\n")
            .lines()
            .find(|l| l.starts_with("STAT maxconns ")),
        Some("STAT maxconns 3")
    );
    // Once one closes, a new client is served again (the server notices the close
    // asynchronously: retry, bounded).
    drop(open.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Client::new(addr);
        c.0.write_all(b"get x\r\n").unwrap();
        let mut reply = [0u8; 5];
        c.0.read_exact(&mut reply).unwrap();
        if &reply == b"END\r\n" {
            break;
        }
        assert_eq!(&reply, b"ERROR", "neither served nor refused");
        assert!(std::time::Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(open);
}

#[test]
fn a_pipeline_over_both_cores_is_answered_in_request_order() {
    let server = server(KvConfig::default());
    let addr = server.addr;
    let mut c = Client::new(addr);
    // One write of 100 keys' worth of dependent commands (their keys fall on both
    // cores, so some run here and some are shipped), with a whole-store command in the
    // middle; the replies must come back exactly in request order.
    let (mut request, mut expected) = (String::new(), String::new());
    for i in 0..100 {
        let v = i % 10;
        request += &format!(
            "set n{i} 0 0 1\r\n{v}\r\nincr n{i} 1\r\nget n{i}\r\n\
             delete n{i} noreply\r\nget n{i}\r\n"
        );
        let w = (v + 1).to_string();
        expected += &format!(
            "STORED\r\n{w}\r\nVALUE n{i} 0 {}\r\n{w}\r\nEND\r\nEND\r\n",
            w.len()
        );
        if i == 50 {
            request += "set x 0 0 1\r\ny\r\nflush_all\r\nget x\r\n";
            expected += "STORED\r\nOK\r\nEND\r\n";
        }
    }
    c.expect(request.as_bytes(), expected.as_bytes());
}

/// The meta commands, with the replies memcached 1.6.18 sends to the same requests
/// (recorded from it; `t` is the one figure memcached rounds one second lower).
#[test]
fn meta_commands_answer_as_memcached_does() {
    let server = server(KvConfig::default());
    let mut c = Client::new(server.addr);
    c.script(&[
        (b"mg foo v\r\n", b"EN\r\n"),
        (b"mg foo v q\r\nmn\r\n", b"MN\r\n"),
        (b"ms foo 2 T90 F5\r\nhi\r\n", b"HD\r\n"),
        (
            b"mg foo v f s k O123\r\n",
            b"VA 2 f5 s2 kfoo O123\r\nhi\r\n",
        ),
        (b"mg foo\r\n", b"HD\r\n"),
        (b"mg foo k q v\r\n", b"VA 2 kfoo\r\nhi\r\n"),
        (b"mg foo q k\r\nmn\r\n", b"HD kfoo\r\nMN\r\n"),
        (b"ms foo 2 q\r\nho\r\nmn\r\n", b"MN\r\n"),
        (b"ms bar 2 MR\r\nxx\r\n", b"NS\r\n"),
        (b"ms foo 1 MA\r\n!\r\n", b"HD\r\n"),
        (b"mg foo v\r\n", b"VA 3\r\nho!\r\n"),
        (b"ms foo 2 O9 k c MR\r\nhi\r\n", b"HD O9 kfoo c"),
    ]);
    // The cas `c` returned works with `C`; a stale one is refused.
    let cas = c.until_line();
    let cas: u64 = cas.trim_end().parse().unwrap();
    c.script(&[
        (
            format!("ms foo 2 C{}\r\nzz\r\n", cas + 1000).as_bytes(),
            b"EX\r\n",
        ),
        (format!("ms foo 2 C{cas}\r\nzz\r\n").as_bytes(), b"HD\r\n"),
        (format!("md foo C{cas}\r\n").as_bytes(), b"EX\r\n"),
        (b"md foo q\r\nmn\r\n", b"MN\r\n"),
        (b"md foo\r\n", b"NF\r\n"),
        (b"md foo q\r\nmn\r\n", b"NF\r\nMN\r\n"),
        (b"md foo O12 k\r\n", b"NF O12 kfoo\r\n"),
        (b"mg foo O12 k v\r\n", b"EN O12 kfoo\r\n"),
        (b"ms foo 2 O9 k c MR\r\nhi\r\n", b"NS O9 kfoo c0\r\n"),
        // Arithmetic, with creation (N, J), modes and a floor at 0.
        (b"ma cnt\r\n", b"NF\r\n"),
        (b"ma cnt q\r\nmn\r\n", b"NF\r\nMN\r\n"),
        (b"ma cnt N0 J10 v\r\n", b"VA 2\r\n10\r\n"),
        (b"ma cnt v\r\n", b"VA 2\r\n11\r\n"),
        (b"ma cnt MD D3 v t\r\n", b"VA 1 t-1\r\n8\r\n"),
        (b"ma cnt D100 MD v\r\n", b"VA 1\r\n0\r\n"),
        (b"ma cnt O7 k q v\r\nmn\r\n", b"MN\r\n"),
        (b"ms txt 1\r\nx\r\n", b"HD\r\n"),
        (
            b"ma txt\r\n",
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
        (b"me nothere\r\n", b"EN\r\n"),
        (b"ms e 0\r\n\r\n", b"HD\r\n"),
        (b"mg e v s\r\n", b"VA 0 s0\r\n\r\n"),
        (b"ms gone 2 T-1\r\nhi\r\n", b"HD\r\n"),
        (b"mg gone v\r\n", b"EN\r\n"),
        // Bad lines and flags, as memcached answers them; an `ms` error drops its data.
        (b"mn\r\n", b"MN\r\n"),
        (b"mg\r\n", b"ERROR\r\n"),
        (b"mg foo zz\r\n", b"CLIENT_ERROR invalid flag\r\n"),
        (b"mg foo v v\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
        (
            b"mg foo Tx\r\n",
            b"CLIENT_ERROR bad token in command line format\r\n",
        ),
        (
            b"mg foo Oabcdefabcdefabcdefabcdefabcdefabcdef\r\n",
            b"CLIENT_ERROR opaque token too long\r\n",
        ),
        (
            b"ms foo 1 MZ\r\n!\r\n",
            b"CLIENT_ERROR invalid mode for ms M token\r\n",
        ),
        (b"ms foo 1 Zq\r\n!\r\n", b"CLIENT_ERROR invalid flag\r\n"),
        (b"ms foo\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        (
            b"ms foo abc\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (b"ms foo 2 S5\r\nhi\r\n", b"CLIENT_ERROR invalid flag\r\n"),
    ]);
    let long_key = [b"mg ".as_slice(), &[b'a'; 251], b" v\r\n"].concat();
    c.expect(&long_key, b"CLIENT_ERROR bad command line format\r\n");
    // What sesa lacks is said plainly.
    c.expect(
        b"mg foo N30 v\r\n",
        b"CLIENT_ERROR unsupported flag (sesa has no stale items, win tokens, base64 keys or access times)\r\n",
    );
    // `me` shows an item: its expiry, cas and size (key and value).
    c.expect(b"ms dbg 3\r\nabc\r\n", b"HD\r\n");
    c.0.write_all(b"me dbg\r\n").unwrap();
    let line = c.until_line();
    assert!(
        line.starts_with("ME dbg exp=-1 cas=") && line.ends_with(" size=6\r\n"),
        "{line:?}"
    );
}
