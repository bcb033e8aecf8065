//! The data store on a local cluster of node processes, through the memcached protocol:
//! any node answers any key; `kill -9` of a node loses no acknowledged write and its keys
//! get new replicas; a node paused with SIGSTOP is declared down and removed, losing no
//! acknowledged write; scaling out and in while a client writes fails no request and
//! loses no key; under a pause, a kill and new nodes, every read and the final state
//! are judged against the writes acknowledged before them; a ketama client
//! (libmemcached) given `config get cluster`'s list sends every key to its primary;
//! commands sent on to another node go in batches, and large values come back whole.
//! Every process started is stopped by its pid, also when a test fails.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{alive, lines};

/// A running `sesa kv --nodes N`: its frontend, the node ports and pids, and its stderr.
struct Store {
    frontend: Child,
    ports: BTreeMap<u32, u16>,
    /// Where each node's clients connect (its port on 127.0.0.1, or on its own address
    /// in its own network namespace).
    addrs: BTreeMap<u32, SocketAddr>,
    pids: BTreeMap<u32, u32>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    said: Vec<String>,
}

impl Store {
    fn start(nodes: u32) -> Store {
        Store::start_with(nodes, &[])
    }

    fn start_with(nodes: u32, args: &[&str]) -> Store {
        let mut frontend = Command::new(env!("CARGO_BIN_EXE_sesa"))
            .args(["kv", "--nodes", &nodes.to_string(), "--port", "0"])
            .args(["--cores", "1"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines(frontend.stdout.take().unwrap());
        let stderr = lines(frontend.stderr.take().unwrap());
        let mut store = Store {
            frontend,
            ports: BTreeMap::new(),
            addrs: BTreeMap::new(),
            pids: BTreeMap::new(),
            stdout,
            stderr,
            said: Vec::new(),
        };
        store.wait_for("the store is up", Duration::from_secs(60));
        store.read_ports(nodes as usize, Duration::from_secs(5));
        store
    }

    /// Reads stdout until `n` nodes are known to listen.
    fn read_ports(&mut self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.ports.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stdout
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("only {:?} listen; said {:?}", self.ports, self.said));
            // "node <id> listening on <address>:<port>"
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words[0], "node", "{line}");
            let addr: SocketAddr = words[4].parse().unwrap();
            let node = words[1].parse().unwrap();
            self.ports.insert(node, addr.port());
            self.addrs.insert(node, addr);
        }
    }

    /// Reads stderr (noting node pids) until a line contains `what`.
    fn wait_for(&mut self, what: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stderr
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what:?} within {within:?}; said {:?}", self.said));
            if let Some(rest) = line.strip_prefix("sesa: node ")
                && let Some(pid) = rest.split("(pid ").nth(1)
            {
                let node = rest.split_whitespace().next().unwrap().parse().unwrap();
                self.pids
                    .insert(node, pid.trim_end_matches(')').parse().unwrap());
            }
            self.said.push(line.clone());
            if line.contains(what) {
                return line;
            }
        }
    }

    fn client(&self, node: u32) -> Client {
        Client::at(self.addrs[&node])
    }

    /// What `sesa status --json` says of this store.
    fn status(&self) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_sesa"))
            .args(["status", "--json", "--pid", &self.frontend.id().to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn scale(&mut self, nodes: u32) {
        let out = Command::new(env!("CARGO_BIN_EXE_sesa"))
            .args(["scale", "--nodes", &nodes.to_string()])
            .args(["--pid", &self.frontend.id().to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?} {:?}", self.said);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SIGINT stops the frontend and, through it, every node; whatever is left after
        // that (a test failed midway) is killed by pid.
        common::interrupt_and_reap(&mut self.frontend);
        let deadline = Instant::now() + Duration::from_secs(5);
        for pid in self.pids.values() {
            while alive(*pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(*pid) {
                // SAFETY: as above.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                assert!(
                    std::thread::panicking(),
                    "node pid {pid} outlived its frontend"
                );
            }
        }
    }
}

/// A memcached text-protocol client whose calls report failures instead of panicking
/// (a load thread counts them).
struct Client(TcpStream);

impl Client {
    fn new(port: u16) -> Client {
        Client::at(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn at(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Client(s)
    }

    fn reply(&mut self, request: &[u8], ends: &[u8]) -> std::io::Result<String> {
        self.0.write_all(request)?;
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !(got.ends_with(ends) || got.starts_with(b"SERVER_ERROR") && got.ends_with(b"\r\n")) {
            let n = self.0.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            got.extend_from_slice(&chunk[..n]);
        }
        Ok(String::from_utf8_lossy(&got).into_owned())
    }

    fn set(&mut self, key: &str, value: &str) -> std::io::Result<String> {
        let request = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
        self.reply(request.as_bytes(), b"\r\n")
    }

    /// The value under `key`, if any.
    fn get(&mut self, key: &str) -> Option<String> {
        let reply = self
            .reply(format!("get {key}\r\n").as_bytes(), b"END\r\n")
            .unwrap();
        let mut lines = reply.split("\r\n");
        let head = lines.next()?;
        head.starts_with("VALUE")
            .then(|| lines.next().unwrap_or_default().to_owned())
    }

    fn curr_items(&mut self) -> u64 {
        let stats = self.reply(b"stats\r\n", b"END\r\n").unwrap();
        stats
            .lines()
            .find_map(|l| l.strip_prefix("STAT curr_items "))
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// Writes `<prefix>-<i>` = `<i>` through `port` until told to stop (or 2000 writes, or
/// 60 s), and after each write reads one of the `loaded` keys `k<j>`, which must be
/// found (a key still moving between nodes must not look missing); returns the writes
/// acknowledged, those whose outcome the store said is unknown (`SERVER_ERROR`: the node
/// running it was lost with it), and every reply that was wrong.
fn writer(
    port: u16,
    prefix: &'static str,
    loaded: u32,
    stop: mpsc::Receiver<()>,
) -> (Vec<u32>, Vec<u32>, Vec<String>) {
    let mut client = Client::new(port);
    let (mut acked, mut unknown, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..2000u32 {
        if stop.try_recv().is_ok() || Instant::now() > deadline {
            break;
        }
        match client.set(&format!("{prefix}-{i}"), &i.to_string()) {
            Ok(r) if r == "STORED\r\n" => acked.push(i),
            Ok(r) if r.starts_with("SERVER_ERROR") && r.contains("outcome is unknown") => {
                unknown.push(i)
            }
            Ok(r) => failed.push(r),
            Err(e) => failed.push(e.to_string()),
        }
        let k = format!("k{}", (i * 7919) % loaded);
        if client.get(&k).is_none() {
            failed.push(format!("{k} missing"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    (acked, unknown, failed)
}

/// Reads the `loaded` keys `k<j>` through `port`, 50 per pipelined batch, round and round
/// until told to stop (or 60 s); returns the keys found missing, which must be none.
fn reader(port: u16, loaded: u32, stop: mpsc::Receiver<()>) -> Vec<String> {
    let mut client = Client::new(port);
    let mut missing = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut j = 0;
    while stop.try_recv().is_err() && Instant::now() < deadline {
        let keys: Vec<String> = (0..50).map(|n| format!("k{}", (j + n) % loaded)).collect();
        j = (j + 50) % loaded;
        let request: String = keys.iter().map(|k| format!("get {k}\r\n")).collect();
        client.0.write_all(request.as_bytes()).unwrap();
        for k in keys {
            let mut reply = Vec::new();
            while !reply.ends_with(b"END\r\n") {
                let mut byte = [0u8; 1];
                client.0.read_exact(&mut byte).unwrap();
                reply.push(byte[0]);
            }
            if !reply.starts_with(b"VALUE") {
                missing.push(k);
            }
        }
    }
    missing
}

/// Sends `signal` to node `victim` while a client of node 1 writes `<prefix>-<i>` (and
/// reads the `loaded` keys); waits for the frontend to say `noticed`, then for the
/// 2-node view to be in place; returns the writes acknowledged and how many were
/// answered that their outcome is unknown (in flight to the victim: each may or may not
/// have landed), none having failed.
fn fault_under_writes(
    store: &mut Store,
    victim: u32,
    signal: i32,
    noticed: &str,
    prefix: &'static str,
    loaded: u32,
) -> (Vec<u32>, u64) {
    let (stop, stopped) = mpsc::channel();
    let port = store.ports[&1];
    let load = std::thread::spawn(move || writer(port, prefix, loaded, stopped));
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: a node process this test started (killed by pid at the end if the frontend
    // did not stop it).
    assert_eq!(unsafe { libc::kill(store.pids[&victim] as i32, signal) }, 0);
    store.wait_for(noticed, Duration::from_secs(20));
    store.wait_for(
        "view 2: 2 of 2 node(s) moved their keys",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.send(()).unwrap();
    let (acked, unknown, failed) = load.join().unwrap();
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    assert!(acked.len() > 20, "only {} writes", acked.len());
    assert!(
        unknown.len() <= 5,
        "{} writes of unknown outcome",
        unknown.len()
    );
    (acked, unknown.len() as u64)
}

/// Asserts node `node` holds `base` items and each acknowledged write, and no more
/// than the `unknown` writes of unknown outcome on top.
fn assert_items(c: &mut Client, node: u32, base: u64, acked: &[u32], unknown: u64) {
    let items = c.curr_items();
    let least = base + acked.len() as u64;
    assert!(
        (least..=least + unknown).contains(&items),
        "node {node}: {items} items, {least} acknowledged, {unknown} of unknown outcome"
    );
}

#[test]
fn any_node_answers_any_key_and_kill_9_of_a_node_loses_no_acknowledged_write() {
    let mut store = Store::start(3);
    let mut one = store.client(1);
    for i in 0..300 {
        assert_eq!(
            one.set(&format!("k{i}"), &format!("v{i}")).unwrap(),
            "STORED\r\n"
        );
    }
    for node in [2, 3] {
        let mut c = store.client(node);
        for i in 0..300 {
            assert_eq!(
                c.get(&format!("k{i}")),
                Some(format!("v{i}")),
                "node {node}"
            );
        }
    }
    // Read-modify-write commands work from any node: gets/cas, incr, append.
    let mut two = store.client(2);
    let gets = two.reply(b"gets k7\r\n", b"END\r\n").unwrap();
    let cas: u64 = gets.split_whitespace().nth(4).unwrap().parse().unwrap();
    let mut three = store.client(3);
    let request = format!("cas k7 0 0 2 {cas}\r\nv!\r\n");
    assert_eq!(
        three.reply(request.as_bytes(), b"\r\n").unwrap(),
        "STORED\r\n"
    );
    assert_eq!(
        two.reply(request.as_bytes(), b"\r\n").unwrap(),
        "EXISTS\r\n"
    );
    assert_eq!(one.set("n", "41").unwrap(), "STORED\r\n");
    assert_eq!(three.reply(b"incr n 1\r\n", b"\r\n").unwrap(), "42\r\n");
    assert_eq!(
        two.reply(b"append n 0 0 1\r\n0\r\n", b"\r\n").unwrap(),
        "STORED\r\n"
    );
    assert_eq!(one.get("n"), Some("420".into()));
    // Meta commands too, from any node.
    assert_eq!(
        two.reply(b"ms m 2 T0 F3\r\nhi\r\n", b"\r\n").unwrap(),
        "HD\r\n"
    );
    assert_eq!(
        three.reply(b"mg m v f k\r\n", b"hi\r\n").unwrap(),
        "VA 2 f3 km\r\nhi\r\n"
    );
    assert_eq!(
        one.reply(b"ma m2 N0 J41 v\r\n", b"41\r\n").unwrap(),
        "VA 2\r\n41\r\n"
    );
    assert_eq!(
        two.reply(b"ma m2 v\r\n", b"42\r\n").unwrap(),
        "VA 2\r\n42\r\n"
    );
    assert_eq!(
        three.reply(b"md m q\r\nmn\r\n", b"MN\r\n").unwrap(),
        "MN\r\n"
    );
    assert_eq!(one.reply(b"mg m v\r\n", b"\r\n").unwrap(), "EN\r\n");
    // Every key is on two nodes.
    let copies: u64 = [1, 2, 3].map(|n| store.client(n).curr_items()).iter().sum();
    assert_eq!(copies, 2 * 302);

    // kill -9 of node 2 while a client of node 1 writes.
    let (acked, unknown) =
        fault_under_writes(&mut store, 2, libc::SIGKILL, "node 2 exited", "w", 300);
    // Every acknowledged write is on node 3 and node 1, and every key has two copies
    // again.
    for node in [1, 3] {
        let mut c = store.client(node);
        for i in &acked {
            assert_eq!(c.get(&format!("w-{i}")), Some(i.to_string()), "node {node}");
        }
        for i in 0..300 {
            let want = if i == 7 { "v!".into() } else { format!("v{i}") };
            assert_eq!(c.get(&format!("k{i}")), Some(want), "node {node}");
        }
        assert_items(&mut c, node, 302, &acked, unknown);
    }
    // flush_all empties every node.
    assert_eq!(one.reply(b"flush_all\r\n", b"\r\n").unwrap(), "OK\r\n");
    assert_eq!(store.client(3).curr_items(), 0);
    assert_eq!(one.curr_items(), 0);
}

/// A hung node (SIGSTOP: its process lives, its sockets stay open, it answers nothing)
/// is declared down by SWIM, confirmed silent by the frontend, stopped and replaced in
/// the view; requests that needed it wait for the new view instead of failing, and no
/// acknowledged write is lost. The same invariant as the simulator's store workload,
/// through real processes and the real memcached protocol.
#[test]
fn a_paused_node_is_removed_and_loses_no_acknowledged_write() {
    let mut store = Store::start(3);
    let mut one = store.client(1);
    for i in 0..200 {
        assert_eq!(
            one.set(&format!("k{i}"), &format!("v{i}")).unwrap(),
            "STORED\r\n"
        );
    }
    let (acked, unknown) = fault_under_writes(
        &mut store,
        3,
        libc::SIGSTOP,
        "node 3 declared down",
        "p",
        200,
    );
    let victim = store.pids[&3];
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(victim) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(victim), "the frontend did not stop the paused node");
    for node in [1, 2] {
        let mut c = store.client(node);
        for i in &acked {
            assert_eq!(c.get(&format!("p-{i}")), Some(i.to_string()), "node {node}");
        }
        for i in 0..200 {
            assert_eq!(
                c.get(&format!("k{i}")),
                Some(format!("v{i}")),
                "node {node}"
            );
        }
        assert_items(&mut c, node, 200, &acked, unknown);
    }
}

#[test]
fn scaling_out_and_in_under_writes_fails_no_request_and_loses_no_key() {
    const LOADED: u32 = 2000;
    let mut store = Store::start(2);
    // libmemcached's protocol suite, through a node that is the primary of only some
    // keys (it flushes the store at the end of each of its tests).
    common::memccapable(store.ports[&2]);
    let mut one = store.client(1);
    for i in 0..LOADED {
        assert_eq!(
            one.set(&format!("k{i}"), &format!("v{i}")).unwrap(),
            "STORED\r\n"
        );
    }
    let (stop, stopped) = mpsc::channel();
    let port = store.ports[&1];
    let load = std::thread::spawn(move || writer(port, "w", LOADED, stopped));
    // Readers on both nodes: a key on its way to the new node must never look missing.
    let readers: Vec<_> = [1, 2]
        .map(|node| {
            let (tx, rx) = mpsc::channel();
            let port = store.ports[&node];
            (tx, std::thread::spawn(move || reader(port, LOADED, rx)))
        })
        .into_iter()
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    store.scale(3);
    store.read_ports(3, Duration::from_secs(5));
    let moved = store.wait_for(
        "view 2: 3 of 3 node(s) moved their keys",
        Duration::from_secs(30),
    );
    // Node 3 becomes one of the two owners of about 2/3 of the keys (it is in their top
    // 2 of 3): each of those is copied to it once, and nothing else moves.
    let sent: u64 = moved
        .split(" copies sent")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let loaded = u64::from(LOADED);
    assert!(
        (loaded / 2..loaded + 2000).contains(&sent),
        "{sent} copies for {LOADED} keys and the writes so far: {moved}"
    );
    // `sesa status` shows the new view, where clients reach each node, and the move.
    let status = store.status();
    let shown = &status["store"];
    assert_eq!(shown["epoch"], 2, "{status}");
    assert_eq!(shown["layout"], "Partitioned", "{status}");
    let ports: BTreeMap<u32, u16> = serde_json::from_value(shown["ports"].clone()).unwrap();
    assert_eq!(ports, store.ports);
    assert_eq!(shown["listen"], "127.0.0.1", "{status}");
    let r = &shown["rebalance"];
    assert_eq!(
        (&r["epoch"], &r["nodes"], &r["nodes_done"], &r["finished"]),
        (&2.into(), &3.into(), &3.into(), &true.into()),
        "{status}"
    );
    assert_eq!(r["copies_sent"], sent, "{status}");
    // Both nodes held every key and looked at all of them. The total is counted when
    // the move begins; a node scans its tables one after another, so a key written
    // meanwhile may be seen too: the writer makes at most one write per 2 ms, each on
    // at most both old nodes, so the count may grow by up to one a millisecond of the
    // move (a gentle move of a join lasts seconds).
    let (total, seen, took) = (
        r["keys_total"].as_u64().unwrap(),
        r["keys_seen"].as_u64().unwrap(),
        r["elapsed_ms"].as_u64().unwrap(),
    );
    assert!(total >= 2 * loaded && seen >= 2 * loaded, "{status}");
    assert!(seen.abs_diff(total) < 200 + took, "{status}");
    let mut three = store.client(3);
    for i in 0..LOADED {
        assert_eq!(three.get(&format!("k{i}")), Some(format!("v{i}")));
    }
    store.scale(2);
    store.wait_for(
        "view 3: 3 of 3 node(s) moved their keys",
        Duration::from_secs(30),
    );
    stop.send(()).unwrap();
    for (tx, reader) in readers {
        tx.send(()).unwrap();
        let missing = reader.join().unwrap();
        assert!(missing.is_empty(), "keys missing while moving: {missing:?}");
    }
    let (acked, unknown, failed) = load.join().unwrap();
    // Planned changes fail nothing: no write is even of unknown outcome.
    assert!(
        failed.is_empty() && unknown.is_empty(),
        "requests failed: {failed:?}, of unknown outcome: {unknown:?}"
    );
    for node in [1, 2] {
        let mut c = store.client(node);
        for i in 0..LOADED {
            assert_eq!(
                c.get(&format!("k{i}")),
                Some(format!("v{i}")),
                "node {node}"
            );
        }
        for i in &acked {
            assert_eq!(c.get(&format!("w-{i}")), Some(i.to_string()), "node {node}");
        }
        assert_eq!(
            c.curr_items(),
            u64::from(LOADED) + acked.len() as u64,
            "node {node}"
        );
    }
}

/// `config get cluster` through `c`: the version and the servers (host, port) listed.
fn cluster_config(c: &mut Client) -> (u64, Vec<(String, u16)>) {
    let reply = c.reply(b"config get cluster\r\n", b"END\r\n").unwrap();
    // CONFIG cluster 0 <bytes>\r\n<version>\n<host|ip|port ...>\n\r\nEND\r\n
    let (head, rest) = reply.split_once("\r\n").unwrap();
    let bytes: usize = head
        .strip_prefix("CONFIG cluster 0 ")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(&rest[bytes..], "\r\nEND\r\n", "{reply:?}");
    let (version, list) = rest[..bytes].split_once('\n').unwrap();
    let servers = list
        .trim_end_matches('\n')
        .split(' ')
        .map(|s| {
            let [host, ip, port] = s.split('|').collect::<Vec<_>>()[..] else {
                panic!("{reply:?}")
            };
            assert_eq!(host, ip);
            (host.to_owned(), port.parse().unwrap())
        })
        .collect();
    (version.parse().unwrap(), servers)
}

/// The clients' commands answered where they arrived and sent on, summed over `nodes`.
fn routed(store: &Store, nodes: &[u32]) -> (u64, u64) {
    let sum = sesa_stats(store, nodes, &["sesa_answered_here", "sesa_sent_on"]);
    (sum[0], sum[1])
}

/// The `stats` counters `names`, each summed over `nodes`.
fn sesa_stats(store: &Store, nodes: &[u32], names: &[&str]) -> Vec<u64> {
    let mut sum = vec![0; names.len()];
    for n in nodes {
        let stats = store.client(*n).reply(b"stats\r\n", b"END\r\n").unwrap();
        for (total, name) in sum.iter_mut().zip(names) {
            *total += stats
                .lines()
                .find_map(|l| l.strip_prefix(&format!("STAT {name} ")[..]))
                .unwrap_or_else(|| panic!("no {name} in {stats}"))
                .trim()
                .parse::<u64>()
                .unwrap();
        }
    }
    sum
}

/// The commands a node sends on to another go together, one batch per node a read of
/// a connection needs (not a message each); reads whose values do not fit a batch's
/// answer (8 MiB) are sent again alone, and every reply comes back whole and in order.
#[test]
fn commands_sent_on_go_in_batches_and_large_values_come_back_whole() {
    use std::io::{Read, Write};
    let store = Store::start(3);
    let nodes = [1, 2, 3];
    let names = ["sesa_sent_on", "sesa_sent_on_batches", "sesa_sent_on_alone"];
    let mut conn = TcpStream::connect(("127.0.0.1", store.ports[&1])).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut exchange = |request: &[u8], want: &[u8], what: &str| {
        conn.write_all(request).unwrap();
        let mut got = vec![0; want.len()];
        conn.read_exact(&mut got).unwrap();
        assert!(got == want, "{what}: the replies differ");
    };
    // 600 small keys written and read back through node 1, in pipelines of 200: about
    // a third of them live elsewhere (R = 2 of 3 nodes) and go on in batches.
    let before = sesa_stats(&store, &nodes, &names);
    for round in 0..3 {
        let (mut sets, mut stored, mut gets, mut values) = (vec![], vec![], vec![], vec![]);
        for i in round * 200..(round + 1) * 200 {
            let (key, value) = (format!("small{i}"), format!("v{i}"));
            sets.extend_from_slice(
                format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(),
            );
            stored.extend_from_slice(b"STORED\r\n");
            gets.extend_from_slice(format!("get {key}\r\n").as_bytes());
            values.extend_from_slice(
                format!("VALUE {key} 0 {}\r\n{value}\r\nEND\r\n", value.len()).as_bytes(),
            );
        }
        exchange(&sets, &stored, "sets");
        exchange(&gets, &values, "gets");
    }
    let after = sesa_stats(&store, &nodes, &names);
    let (sent, batches) = (after[0] - before[0], after[1] - before[1]);
    assert!(sent >= 200, "only {sent} of 1,200 commands were sent on");
    assert!(
        batches * 4 <= sent,
        "{sent} commands sent on in {batches} batches: not batched"
    );
    // 72 values of 1,000,000 bytes, read in one pipeline through node 1: the ~24 that
    // live elsewhere go to two nodes, about 12 MB to each, more than a batch's answer
    // holds (8 MiB), so some are sent again alone. Every byte comes back, in order.
    let value = |i: usize| vec![b'a' + (i % 26) as u8; 1_000_000];
    let mut want = Vec::new();
    for i in 0..72 {
        let key = format!("large{i}");
        let mut set = format!("set {key} 0 0 1000000\r\n").into_bytes();
        set.extend_from_slice(&value(i));
        set.extend_from_slice(b"\r\n");
        exchange(&set, b"STORED\r\n", "a large set");
        want.extend_from_slice(format!("VALUE {key} 0 1000000\r\n").as_bytes());
        want.extend_from_slice(&value(i));
        want.extend_from_slice(b"\r\nEND\r\n");
    }
    let gets: String = (0..72).map(|i| format!("get large{i}\r\n")).collect();
    let before = sesa_stats(&store, &nodes, &names);
    exchange(gets.as_bytes(), &want, "large gets");
    let after = sesa_stats(&store, &nodes, &names);
    assert!(
        after[2] > before[2],
        "no read was sent again alone ({} sent on)",
        after[0] - before[0]
    );
}

/// A ketama client (libmemcached itself) given `config get cluster`'s list sends each
/// key to the node that owns it, and after a scale out, to the new list's.
#[test]
fn a_ketama_client_sends_every_key_to_its_primary_and_follows_a_scale_out() {
    let mut store = Store::start_with(3, &["--placement", "ketama"]);
    let listed = |store: &Store| -> Vec<(String, u16)> {
        store
            .addrs
            .values()
            .map(|a| (a.ip().to_string(), a.port()))
            .collect()
    };
    let (version, servers) = cluster_config(&mut store.client(2));
    assert_eq!(servers, listed(&store), "every node, in the view's order");
    // libmemcached in ketama mode, given that list, sends every key to its primary:
    // no node sends a command on.
    let before = routed(&store, &[1, 2, 3]);
    let client = common::libmemcached::Ketama::new(&servers);
    for i in 0..300 {
        assert!(client.set(format!("k{i}").as_bytes(), format!("v{i}").as_bytes()));
    }
    let after = routed(&store, &[1, 2, 3]);
    assert_eq!((after.0 - before.0, after.1 - before.1), (300, 0));
    // A fourth node: the version changes and the list has it; a client following the
    // change again sends every key to its primary, and every key is still there.
    store.scale(4);
    store.read_ports(4, Duration::from_secs(5));
    store.wait_for(
        "view 2: 4 of 4 node(s) moved their keys",
        Duration::from_secs(30),
    );
    let (version_now, servers) = cluster_config(&mut store.client(1));
    assert!(version_now > version, "{version} -> {version_now}");
    assert_eq!(servers, listed(&store));
    let before = routed(&store, &[1, 2, 3, 4]);
    let client = common::libmemcached::Ketama::new(&servers);
    for i in 300..600 {
        assert!(client.set(format!("k{i}").as_bytes(), format!("v{i}").as_bytes()));
    }
    let after = routed(&store, &[1, 2, 3, 4]);
    assert_eq!((after.0 - before.0, after.1 - before.1), (300, 0));
    let mut any = store.client(4);
    for i in 0..600 {
        assert_eq!(any.get(&format!("k{i}")), Some(format!("v{i}")));
    }
    // One node alone is one memcached, which does not know the command.
    let single = common::sesa_kv(&["--placement", "ketama"], 0);
    let mut c = Client::new(single.port);
    assert_eq!(
        c.reply(b"config get cluster\r\n", b"\r\n").unwrap(),
        "ERROR\r\n"
    );
}

/// The paper's progression (section 4.4): one central rep reached by shipping, then
/// central with read caches on the other nodes, kept coherent by invalidation.
#[test]
fn central_and_cached_layouts_serve_any_key_from_any_node_and_stay_coherent() {
    for layout in ["central", "cached"] {
        let store = Store::start_with(3, &["--layout", layout]);
        let up = store.said.last().unwrap().to_lowercase();
        assert!(up.ends_with(&format!("{layout} layout")), "{up}");
        // libmemcached's protocol suite, through the node that owns no keys.
        common::memccapable(store.ports[&3]);
        let (mut one, mut two, mut three) = (store.client(1), store.client(2), store.client(3));
        for i in 0..50 {
            assert_eq!(two.set(&format!("k{i}"), "a").unwrap(), "STORED\r\n");
        }
        for i in 0..50 {
            assert_eq!(three.get(&format!("k{i}")), Some("a".into()), "{layout}");
        }
        // Node 1 holds every key, node 2 replicates it; node 3 owns none. It has them
        // only as cached copies, and only in the cached layout.
        assert_eq!(one.curr_items(), 50, "{layout}");
        assert_eq!(two.curr_items(), 50, "{layout}");
        let cached = three.curr_items();
        assert_eq!(cached, if layout == "cached" { 50 } else { 0 });
        // A write anywhere is seen everywhere at once: the caches were invalidated
        // before it was acknowledged.
        for i in 0..50 {
            assert_eq!(one.set(&format!("k{i}"), "b").unwrap(), "STORED\r\n");
            assert_eq!(three.get(&format!("k{i}")), Some("b".into()), "{layout}");
        }
        assert_eq!(two.reply(b"delete k7\r\n", b"\r\n").unwrap(), "DELETED\r\n");
        assert_eq!(three.get("k7"), None, "{layout}");
        assert_eq!(one.get("k7"), None, "{layout}");
        assert_eq!(
            three.reply(b"incr k8 1\r\n", b"\r\n").unwrap(),
            "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        );
    }
}

/// A read pipelined right after a write of the same key (one read from the client)
/// sees the write on every node, also where that node holds a replica or a cached copy
/// of the key, which the write reaches only after the primary has it.
#[test]
fn a_read_pipelined_after_a_write_sees_it_through_every_node() {
    use std::io::{Read, Write};
    for layout in ["partitioned", "cached"] {
        let store = Store::start_with(3, &["--layout", layout]);
        for node in 1..=3u32 {
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", store.ports[&node])).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            // Two rounds: in the second every key is already on its replicas and in
            // the caches, with the first round's value.
            for round in 0..2 {
                let mut batch = Vec::new();
                let mut want = Vec::new();
                for i in 0..100 {
                    let (key, value) = (format!("n{node}-{i}"), format!("r{round}"));
                    batch.extend_from_slice(format!("set {key} 0 0 2\r\n{value}\r\n").as_bytes());
                    batch.extend_from_slice(format!("get {key}\r\n").as_bytes());
                    want.extend_from_slice(
                        format!("STORED\r\nVALUE {key} 0 2\r\n{value}\r\nEND\r\n").as_bytes(),
                    );
                }
                conn.write_all(&batch).unwrap();
                let mut got = vec![0; want.len()];
                conn.read_exact(&mut got).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "{layout}, node {node}, round {round}"
                );
            }
        }
    }
}

/// What the clients of [`every_operation_is_judged_under_pauses_kills_and_restarts`]
/// saw: one writer per key, with growing values; every read is judged against the
/// writes acknowledged before it began.
#[derive(Default)]
struct Judged {
    /// The newest acknowledged value, by key.
    acked: BTreeMap<String, u64>,
    /// Values of writes whose outcome is unknown (`SERVER_ERROR`, a timeout, a lost
    /// connection), by key: they may take effect late.
    unknown: BTreeMap<String, std::collections::BTreeSet<u64>>,
    /// Broken rules, with what broke them.
    wrong: Vec<String>,
    acks: usize,
    reads: usize,
}

impl Judged {
    /// A value read (`None`: a miss) by a read that began when the key's newest
    /// acknowledged value was `floor`.
    fn judge(&mut self, key: &str, floor: Option<u64>, got: Option<u64>, what: &str) {
        self.reads += 1;
        let late = |v: u64| self.unknown.get(key).is_some_and(|u| u.contains(&v));
        let stale = match (floor, got) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(f), Some(v)) => v < f && !late(v),
        };
        if stale {
            self.wrong.push(format!(
                "{what}: {key} read {got:?} after {floor:?} was acknowledged"
            ));
        }
    }
}

/// Client `c` of a judged run: writes its own keys and reads everyone's, through the
/// node addresses in `addrs` (moving to the next when its node stops answering), until
/// told to stop (or 3,000 operations, or 90 s).
fn judged_client(
    c: u32,
    addrs: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    history: std::sync::Arc<std::sync::Mutex<Judged>>,
    stop: mpsc::Receiver<()>,
) {
    let connect = |n: usize| -> Option<Client> {
        let addrs = addrs.lock().unwrap().clone();
        let s = TcpStream::connect_timeout(&addrs[n % addrs.len()], Duration::from_secs(2)).ok()?;
        // Longer than a write may wait for a lost owner's replacement (10 s).
        s.set_read_timeout(Some(Duration::from_secs(12))).ok()?;
        Some(Client(s))
    };
    let (mut pick, mut conn) = (c as usize, None);
    let mut next_value: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    for i in 0..3000u32 {
        if stop.try_recv().is_ok() || Instant::now() > deadline {
            break;
        }
        let Some(client) = conn.as_mut() else {
            pick += 1;
            conn = connect(pick);
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        if i % 2 == 0 {
            let key = format!("c{c}-k{}", i % 8 / 2);
            let value = next_value.entry(key.clone()).or_insert(0);
            *value += 1;
            let value = *value;
            let reply = client.set(&key, &value.to_string());
            let mut h = history.lock().unwrap();
            match reply {
                Ok(r) if r == "STORED\r\n" => {
                    h.acks += 1;
                    let acked = h.acked.entry(key).or_insert(0);
                    *acked = (*acked).max(value);
                }
                other => {
                    h.unknown.entry(key).or_default().insert(value);
                    if other.is_err() {
                        conn = None;
                    }
                }
            }
        } else {
            let key = format!("c{}-k{}", i % 3, i % 7 % 4);
            let floor = history.lock().unwrap().acked.get(&key).copied();
            match client.reply(format!("get {key}\r\n").as_bytes(), b"END\r\n") {
                Ok(reply) if reply.starts_with("SERVER_ERROR") => {}
                Ok(reply) => {
                    let got = reply
                        .starts_with("VALUE")
                        .then(|| reply.split("\r\n").nth(1).and_then(|v| v.parse().ok()))
                        .flatten();
                    history
                        .lock()
                        .unwrap()
                        .judge(&key, floor, got, "a client's read");
                }
                Err(_) => conn = None,
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Clients on every node write and read while a node is paused (SIGSTOP) for longer
/// than failure detection, another is killed (`kill -9`), and two new nodes replace
/// them: no read older than a write acknowledged before it began, and no acknowledged
/// write lost in the end, judged operation by operation (the simulator's rules, on real
/// processes).
#[test]
fn every_operation_is_judged_under_pauses_kills_and_restarts() {
    let mut store = Store::start(3);
    let run = JudgedRun::start(&store);
    std::thread::sleep(Duration::from_millis(500));
    // A pause longer than failure detection (about 2 s): the frontend stops the node
    // before the view without it goes out; SIGCONT then finds it gone.
    let paused = store.pids[&2];
    // SAFETY: a node process this test started (all are stopped by pid at the end).
    assert_eq!(unsafe { libc::kill(paused as i32, libc::SIGSTOP) }, 0);
    store.wait_for("node 2 declared down", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: as above (a pid that may have exited: then nothing happens).
    unsafe { libc::kill(paused as i32, libc::SIGCONT) };
    store.wait_for("2 of 2 node(s) moved their keys", Duration::from_secs(30));
    let killed = store.pids[&3] as i32;
    // SAFETY: as above.
    let sent = unsafe { libc::kill(killed, libc::SIGKILL) };
    assert_eq!(sent, 0);
    store.wait_for("node 3 exited", Duration::from_secs(10));
    store.wait_for("1 of 1 node(s) moved their keys", Duration::from_secs(30));
    // Two new nodes in their place.
    store.scale(3);
    store.read_ports(5, Duration::from_secs(20));
    run.reach(&store);
    // The new nodes may join in one view or in two.
    store.wait_for("3 of 3 node(s) moved their keys", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let h = run.finish(&store, &[1, 4, 5]);
    assert!(h.wrong.is_empty(), "{:?}", h.wrong);
}

/// The clients of a judged run, on every node of a store, and what they saw.
struct JudgedRun {
    addrs: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    history: std::sync::Arc<std::sync::Mutex<Judged>>,
    clients: Vec<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl JudgedRun {
    /// Three [`judged_client`]s, through the nodes of `store`.
    fn start(store: &Store) -> JudgedRun {
        use std::sync::{Arc, Mutex};
        let addrs = Arc::new(Mutex::new(Vec::new()));
        let history = Arc::new(Mutex::new(Judged::default()));
        let run = JudgedRun {
            addrs,
            history,
            clients: Vec::new(),
        };
        run.reach(store);
        let clients = (0..3u32)
            .map(|c| {
                let (tx, rx) = mpsc::channel();
                let (addrs, history) = (run.addrs.clone(), run.history.clone());
                (
                    tx,
                    std::thread::spawn(move || judged_client(c, addrs, history, rx)),
                )
            })
            .collect();
        JudgedRun { clients, ..run }
    }

    /// The clients use the nodes `store` has now.
    fn reach(&self, store: &Store) {
        *self.addrs.lock().unwrap() = store.addrs.values().copied().collect();
    }

    /// Stops the clients, then judges the final state through each node of `live`:
    /// every acknowledged value there. The history, with whatever broke a rule in
    /// `wrong`.
    fn finish(self, store: &Store, live: &[u32]) -> Judged {
        for (stop, client) in self.clients {
            stop.send(()).unwrap();
            client.join().unwrap();
        }
        let mut h = std::mem::take(&mut *self.history.lock().unwrap());
        let keys: Vec<(String, u64)> = h.acked.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for &node in live {
            let mut client = store.client(node);
            for (key, acked) in &keys {
                let got = client.get(key).and_then(|v| v.parse().ok());
                h.judge(
                    key,
                    Some(*acked),
                    got,
                    &format!("final read on node {node}"),
                );
            }
        }
        assert!(
            h.acks > 100 && h.reads > 100,
            "only {} writes acknowledged and {} reads judged",
            h.acks,
            h.reads
        );
        h
    }
}

/// Network namespaces in which a store's node processes can be cut from one another: a
/// hub (the frontend, the test's clients) bridged to one namespace per node, node `i`
/// at 10.213.0.(10 + i). Made with iproute2 (`ip netns`: root); every one is removed
/// when this is dropped.
struct Namespaces {
    prefix: String,
    nodes: u32,
}

impl Namespaces {
    /// Namespaces for nodes 1 to `nodes`, or why they cannot be made here.
    fn make(nodes: u32) -> Result<Namespaces, String> {
        let net = Namespaces {
            prefix: format!("sesa-kvc{}", std::process::id()),
            nodes,
        };
        let hub = net.hub();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "addr", "add", "10.213.0.1/24", "dev", "br0"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 1..=nodes {
            let (ns, veth) = (net.node(i), format!("v{i}"));
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // One end on the hub's bridge, the other the node's eth0.
            ip(&["-n", &hub, "link", "add", &veth, "type", "veth"]
                .into_iter()
                .chain(["peer", "name", "eth0", "netns", &ns])
                .collect::<Vec<_>>())?;
            ip(&["-n", &hub, "link", "set", &veth, "master", "br0", "up"])?;
            let addr = format!("{}/24", Namespaces::ip_of(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    fn node(&self, i: u32) -> String {
        format!("{}-n{i}", self.prefix)
    }

    fn ip_of(i: u32) -> String {
        format!("10.213.0.{}", 10 + i)
    }

    /// Node `from` sends nothing to node `to` any more (`cut`), or again (`!cut`): a
    /// blackhole route, so packets vanish without an error or a reset, as on a
    /// partitioned network. TCP then fails both ways (its acknowledgements vanish);
    /// SWIM's datagrams only one way.
    fn route(&self, from: u32, to: u32, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        let to = format!("{}/32", Namespaces::ip_of(to));
        ip(&["-n", &self.node(from), "route", verb, "blackhole", &to]).unwrap();
    }

    /// Node `node`'s link down (`cut`: it reaches nobody, not even the frontend) or up.
    fn link(&self, node: u32, cut: bool) {
        let state = if cut { "down" } else { "up" };
        ip(&["-n", &self.node(node), "link", "set", "eth0", state]).unwrap();
    }

    /// Moves the calling thread into the hub: the processes and threads it starts from
    /// then on are there too (a network namespace is per thread, inherited).
    fn enter_hub(&self) {
        let hub = std::fs::File::open(format!("/run/netns/{}", self.hub())).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a descriptor this function keeps open for the call; it
        // changes only the calling thread's network namespace.
        let entered = unsafe { libc::setns(hub.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "{}", std::io::Error::last_os_error());
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth pair, and with it the other.
        for i in 1..=self.nodes {
            let _ = ip(&["netns", "del", &self.node(i)]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
    }
}

/// Runs `ip args`: what it said if it failed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Node processes in network namespaces of their own, cut from one another for longer
/// than every timeout of the store (a replica's 10 s wait for a write, the 5 s wait for
/// a view): two live members cut from each other (both still reach the frontend and the
/// third), a member cut from everyone (it is declared down, stopped, and replaced by a
/// new node), and a one-way cut to the new node. Clients on every node write and read
/// throughout: writes the cut members cannot both take are refused, never acknowledged
/// and lost, and no read is older than a write acknowledged before it began.
#[test]
fn every_operation_is_judged_under_cuts_between_node_processes() {
    let net = match Namespaces::make(4) {
        Ok(net) => net,
        Err(e) => {
            eprintln!("NOT RUN (cuts between nodes): no network namespaces here: {e}");
            return;
        }
    };
    // In a thread of its own, which moves into the hub (the test harness's threads stay
    // where they are).
    std::thread::spawn(move || {
        net.enter_hub();
        let prefix = format!("ip netns exec {}-n{{id}}", net.prefix);
        let mut store = Store::start_with(
            3,
            &["--frontend-listen", "10.213.0.1", "--node-prefix", &prefix],
        );
        for (node, addr) in &store.addrs {
            assert_eq!(addr.ip().to_string(), Namespaces::ip_of(*node), "{addr}");
        }
        let run = JudgedRun::start(&store);
        std::thread::sleep(Duration::from_millis(500));
        // Nodes 1 and 2 cut from each other for 12 s: the writes of keys they both own
        // wait, then are refused.
        net.route(1, 2, true);
        net.route(2, 1, true);
        std::thread::sleep(Duration::from_secs(12));
        net.route(1, 2, false);
        net.route(2, 1, false);
        std::thread::sleep(Duration::from_secs(2));
        // Node 3 cut from everyone: declared down, stopped (through its stdin, which no
        // cut reaches) and replaced in the view.
        net.link(3, true);
        store.wait_for("node 3 declared down", Duration::from_secs(20));
        store.wait_for("2 of 2 node(s) moved their keys", Duration::from_secs(30));
        net.link(3, false);
        store.scale(3);
        store.read_ports(4, Duration::from_secs(20));
        run.reach(&store);
        store.wait_for("3 of 3 node(s) moved their keys", Duration::from_secs(30));
        // Node 1 sends nothing to the new node 4 for 12 s; node 4 still reaches node 1.
        net.route(1, 4, true);
        std::thread::sleep(Duration::from_secs(12));
        net.route(1, 4, false);
        std::thread::sleep(Duration::from_secs(2));
        let h = run.finish(&store, &[1, 2, 4]);
        eprintln!(
            "{} writes acknowledged, {} refused or unknown, {} reads judged",
            h.acks,
            h.unknown.values().map(|v| v.len()).sum::<usize>(),
            h.reads
        );
        assert!(h.wrong.is_empty(), "{:?}", h.wrong);
        assert!(
            !h.unknown.is_empty(),
            "no write was refused: the cuts did not cut"
        );
        drop(store);
        drop(net);
    })
    .join()
    .unwrap();
}
