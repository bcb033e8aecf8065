//! `sesa bench kv-elastic`: the data store growing and losing a node under load.
//!
//! The run: `sesa kv --nodes 3` (one core per node) is started as a child process and
//! `keys` keys are loaded. Client threads then keep a pipelined load on the nodes (90%
//! gets of loaded keys, 10% sets of fresh keys, whose acknowledgements are recorded),
//! and the completed requests are counted per second. After a baseline, `sesa scale
//! --nodes 4`; once that is done and the load has run on, `kill -9` of node 2, whose
//! clients reconnect to the other nodes. At the end every acknowledged write is read
//! back.
//!
//! The figures, as the issue asks for them (Redis Cluster 7.0 measured on this machine:
//! 33.5 s for 3 -> 4 under load, worst second 58%; 3 s below half after a kill):
//! - `scale_seconds`: from the scale request until every node has moved its keys;
//! - `scale_worst_second`: the lowest whole-second throughput from the request until
//!   then, relative to the baseline;
//! - `kill_seconds_below_half`: whole seconds after the kill below half the baseline;
//! - `acked_writes`, `lost_writes` (must be 0), `indeterminate_writes` (in flight when a
//!   connection broke, or answered `SERVER_ERROR`, which the store says of a write whose
//!   outcome is unknown: neither acknowledged nor refused), `failed_requests` (other
//!   error replies), `missing_keys` (gets of loaded keys that missed; must be 0).
//!
//! With `cpu_share`, each node process runs in a CPU share of its own (as `sesa bench
//! kv-scale` does: [`crate::cgroup`]), the fourth node's too, and the clients spread
//! over the four nodes once the keys moved (and over the three left after the kill):
//! the growth 3 -> 4 under load, with each node a machine's worth of CPU.
//!
//! Every process it starts is stopped by its PID at the end, also on failure.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::Serialize;

use crate::bench_kv::{Clients, Conn, Rng, key, line, push_set, set_keys};

/// The run's sizes.
#[derive(Clone, Debug)]
pub struct ElasticConfig {
    /// Keys loaded before the measurement.
    pub keys: usize,
    /// Seconds of load before scaling (the baseline), and after each change.
    pub settle_seconds: u64,
    /// Client connections.
    pub connections: usize,
    /// Requests per batch.
    pub pipeline: usize,
    /// Memory per node, MiB.
    pub memory_mb: usize,
    /// Each node process in a CPU share of its own, this many CPUs ([`crate::cgroup`]);
    /// the clients then spread over the four nodes once the keys moved (and over the
    /// three left after the kill).
    pub cpu_share: Option<f64>,
    /// How clients pick a node (ketama: the store places keys by ketama, and each
    /// client sends each key to its primary, reading `config get cluster` again after
    /// each change).
    pub clients: Clients,
}

impl ElasticConfig {
    /// The published run: 1 M keys.
    pub fn full() -> Self {
        ElasticConfig {
            keys: 1_000_000,
            settle_seconds: 5,
            connections: 6,
            pipeline: 16,
            memory_mb: 512,
            cpu_share: None,
            clients: Clients::AnyNode,
        }
    }

    /// A smoke run (the figures mean little).
    pub fn quick() -> Self {
        ElasticConfig {
            keys: 20_000,
            settle_seconds: 2,
            connections: 3,
            pipeline: 8,
            memory_mb: 64,
            cpu_share: None,
            clients: Clients::AnyNode,
        }
    }
}

/// What the run measured.
#[derive(Clone, Debug, Serialize)]
pub struct ElasticReport {
    /// Keys loaded.
    pub keys: usize,
    /// How the nodes' CPU shares were made (empty without `cpu_share`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub shares: String,
    /// Requests per second before the scale request.
    pub baseline_ops: f64,
    /// From `sesa scale --nodes 4` until every node moved its keys.
    pub scale_seconds: f64,
    /// Copies sent to the new node, as the frontend reported.
    pub scale_copies: u64,
    /// The worst whole second of throughput while scaling, relative to the baseline.
    pub scale_worst_second: f64,
    /// Requests per second once the keys moved (4 nodes): the whole seconds between the
    /// move's end and the kill; 0 when none fits (a short settle).
    pub after_scale_ops: f64,
    /// The worst second while scaling relative to [`ElasticReport::after_scale_ops`]
    /// (what the move itself cost, apart from the 4 nodes' own throughput); 0 when
    /// `after_scale_ops` is.
    pub scale_worst_vs_after: f64,
    /// Whole seconds after the kill with under half the baseline throughput.
    pub kill_seconds_below_half: u32,
    /// Writes acknowledged with `STORED`.
    pub acked_writes: u64,
    /// Acknowledged writes not read back at the end.
    pub lost_writes: u64,
    /// Writes in flight on a connection that broke.
    pub indeterminate_writes: u64,
    /// Requests answered with an error.
    pub failed_requests: u64,
    /// Gets of loaded keys that found nothing.
    pub missing_keys: u64,
    /// Requests completed in each second of the load.
    pub per_second: Vec<u64>,
}

impl ElasticReport {
    /// A table for people.
    pub fn table(&self) -> String {
        let shares = match self.shares.is_empty() {
            true => String::new(),
            false => format!("shares                 {}\n", self.shares),
        };
        format!(
            "{shares}keys loaded            {}\n\
             baseline               {:.0} requests/s\n\
             scale 3 -> 4 nodes     {:.2} s, {} copies moved, worst second {:.0}% of baseline\n\
             after the move         {:.0} requests/s (worst second {:.0}% of it)\n\
             kill -9 of node 2      {} s below half the baseline\n\
             writes                 {} acknowledged, {} lost, {} indeterminate\n\
             failed requests        {}\n\
             loaded keys missing    {}\n\
             requests per second    {:?}\n",
            self.keys,
            self.baseline_ops,
            self.scale_seconds,
            self.scale_copies,
            self.scale_worst_second * 100.0,
            self.after_scale_ops,
            self.scale_worst_vs_after * 100.0,
            self.kill_seconds_below_half,
            self.acked_writes,
            self.lost_writes,
            self.indeterminate_writes,
            self.failed_requests,
            self.missing_keys,
            self.per_second,
        )
    }
}

/// `sesa kv --nodes 3` as a child: its ports and node pids as it reports them.
struct Store {
    /// The nodes' CPU shares, if any: removed at the end of `drop`, once the nodes
    /// stopped.
    shares: Option<crate::cgroup::NodeShares>,
    frontend: Child,
    ports: Arc<Mutex<BTreeMap<u32, u16>>>,
    pids: BTreeMap<u32, u32>,
    stderr: mpsc::Receiver<String>,
}

impl Store {
    fn start(config: &ElasticConfig) -> anyhow::Result<Store> {
        let exe = std::env::current_exe().context("finding the sesa executable")?;
        let placement = match config.clients {
            Clients::Ketama => "ketama",
            Clients::AnyNode => "rendezvous",
        };
        let mut frontend = Command::new(exe)
            .args(["kv", "--nodes", "3", "--port", "0", "--cores", "1"])
            .args(["-m", &config.memory_mb.to_string()])
            .args(["--placement", placement])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting sesa kv --nodes 3")?;
        let ports = Arc::new(Mutex::new(BTreeMap::new()));
        let out = frontend.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let err = frontend.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let found = ports.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // "node <id> listening on 127.0.0.1:<port>"
                let words: Vec<&str> = line.split_whitespace().collect();
                if let (Some(id), Some(addr)) = (words.get(1), words.get(4))
                    && let (Ok(id), Some(Ok(port))) =
                        (id.parse(), addr.rsplit(':').next().map(str::parse))
                {
                    found
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, port);
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let shares = match config.cpu_share {
            Some(share) => {
                let pid = frontend.id();
                Some(crate::cgroup::NodeShares::start(
                    move || crate::bench_kv::children_of(pid),
                    share,
                )?)
            }
            None => None,
        };
        let mut store = Store {
            shares,
            frontend,
            ports,
            pids: BTreeMap::new(),
            stderr: rx,
        };
        store.wait_for("the store is up", Duration::from_secs(60))?;
        if let Some(shares) = &store.shares {
            shares.wait_for(3, Duration::from_secs(10))?;
        }
        Ok(store)
    }

    /// Reads the frontend's stderr until a line holds `what`; notes node pids.
    fn wait_for(&mut self, what: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stderr
                .recv_timeout(left)
                .map_err(|_| anyhow!("the store did not say {what:?} within {within:?}"))?;
            if let Some(rest) = line.strip_prefix("sesa: node ")
                && let Some(pid) = rest.split("(pid ").nth(1)
                && let (Some(Ok(node)), Ok(pid)) = (
                    rest.split_whitespace().next().map(str::parse),
                    pid.trim_end_matches(')').parse(),
                )
            {
                self.pids.insert(node, pid);
            }
            if line.contains(what) {
                return Ok(line);
            }
        }
    }

    fn ports(&self) -> BTreeMap<u32, u16> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        signal(self.frontend.id(), "INT");
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.frontend.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.frontend.kill();
        let _ = self.frontend.wait();
        for pid in self.pids.values() {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                // A node of this run's store, left behind.
                signal(*pid, "KILL");
            }
        }
        // Now that the nodes are gone, their groups can be removed.
        drop(self.shares.take());
    }
}

/// Sends `sig` to `pid` through kill(1) (this crate has no unsafe code for kill(2)).
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

const KEY_SIZE: usize = 32;
const VALUE_SIZE: usize = 64;

/// What the load threads share.
struct Load {
    started: Instant,
    stop: AtomicBool,
    /// Completed requests per second since `started`.
    per_second: Vec<AtomicU64>,
    /// Ports clients may (re)connect to (the killed node's is removed).
    ports: Mutex<Vec<u16>>,
    /// The store's nodes as `config get cluster` lists them, for ketama clients
    /// (`None`: any-node clients); read again after each change.
    servers: Mutex<Option<Arc<crate::bench_kv::Servers>>>,
    /// Raised when the clients should spread again over `ports` (client `t` to the
    /// `t`-th): each reconnects before its next batch.
    spread: AtomicU64,
    failed: AtomicU64,
    missing: AtomicU64,
    indeterminate: AtomicU64,
}

impl Load {
    /// Ketama clients' list of the nodes, read again (through node 1, which stays).
    fn refresh(&self, store: &Store) -> anyhow::Result<()> {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if servers.is_some() {
            let one = store.ports()[&1];
            *servers = Some(Arc::new(crate::bench_kv::servers(
                ([127, 0, 0, 1], one).into(),
            )?));
        }
        Ok(())
    }
}

/// Reads the replies to a connection's part of the batch (`None` a get, `Some(n)` the
/// set of `w<t>-<n>`; `sent`: whether it went out), noting acknowledged sets in
/// `acked`; the replies read (all of them, or those before a failure).
fn receive(
    conn: &mut Conn<Option<u64>>,
    sent: bool,
    load: &Load,
    acked: &mut Vec<u64>,
) -> (usize, anyhow::Result<()>) {
    let mut answered = 0;
    let outcome = (|| -> anyhow::Result<()> {
        let Conn {
            stream,
            batch,
            buf,
            at,
            ..
        } = &mut *conn;
        if !sent {
            bail!("the batch could not be sent");
        }
        for set in batch.iter() {
            let first = line(stream, buf, at)?;
            let reply = buf[first.clone()].to_vec();
            match set {
                Some(n) if reply == b"STORED" => acked.push(*n),
                // Refused after it may have run (its node lost with it, say):
                // neither acknowledged nor refused.
                Some(_) if reply.starts_with(b"SERVER_ERROR") => {
                    load.indeterminate.fetch_add(1, Relaxed);
                }
                Some(_) => {
                    load.failed.fetch_add(1, Relaxed);
                }
                None if reply.starts_with(b"VALUE ") => {
                    line(stream, buf, at)?;
                    line(stream, buf, at)?;
                }
                None if reply == b"END" => {
                    load.missing.fetch_add(1, Relaxed);
                }
                None => {
                    load.failed.fetch_add(1, Relaxed);
                }
            }
            answered += 1;
        }
        Ok(())
    })();
    if outcome.is_err() {
        // The node went away mid-batch: the sets not answered are neither
        // acknowledged nor refused.
        let unanswered = conn.batch[answered..]
            .iter()
            .filter(|s| s.is_some())
            .count();
        load.indeterminate.fetch_add(unanswered as u64, Relaxed);
    }
    (answered, outcome)
}

/// One client: batches of gets of loaded keys and sets of fresh keys until `stop`;
/// returns the fresh keys acknowledged (thread `t`'s set `n` is key `w<t>-<n>`, value
/// `n`). An any-node client sends everything to one node and reopens a broken
/// connection to the next live one; a ketama client ([`Load::servers`]) sends each key
/// to its primary, or, while that node cannot be reached, to the next owner on the ring.
fn client(load: &Load, t: usize, keys: usize, pipeline: usize) -> Vec<u64> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1));
    let mut acked = Vec::new();
    let mut n = 0u64;
    let mut which = t;
    let mut spread = load.spread.load(Relaxed);
    'connect: while !load.stop.load(Relaxed) {
        let servers = load
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let ports: Vec<u16> = match &servers {
            Some(s) => s.addrs.iter().map(|a| a.port()).collect(),
            None => {
                let ports = load.ports.lock().unwrap_or_else(|p| p.into_inner());
                vec![ports[which % ports.len()]]
            }
        };
        let mut conns: Vec<Option<Conn<Option<u64>>>> = ports
            .iter()
            .map(|&p| Conn::open(([127, 0, 0, 1], p).into()).ok())
            .collect();
        while !load.stop.load(Relaxed) {
            if load.spread.load(Relaxed) != spread || conns.iter().all(Option::is_none) {
                if conns.iter().all(Option::is_none) {
                    which += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                spread = load.spread.load(Relaxed);
                continue 'connect;
            }
            for c in conns.iter_mut().flatten() {
                c.clear();
            }
            // A ketama client's batch holds `pipeline` requests per node listed (as
            // `sesa bench kv` does: see `run`).
            for _ in 0..pipeline * conns.len() {
                let r = rng.next();
                let (k, set) = match r.is_multiple_of(10) {
                    true => (format!("w{t}-{n}").into_bytes(), Some(n)),
                    false => (key((r >> 8) as usize % keys, KEY_SIZE), None),
                };
                let to = match &servers {
                    Some(s) => s.ring.owners(&k).find(|&i| conns[i].is_some()),
                    None => Some(0),
                };
                let Some(c) = to.and_then(|i| conns[i].as_mut()) else {
                    continue;
                };
                match set {
                    Some(n) => push_set(&mut c.request, &k, n.to_string().as_bytes()),
                    None => {
                        c.request.extend_from_slice(b"get ");
                        c.request.extend_from_slice(&k);
                        c.request.extend_from_slice(b"\r\n");
                    }
                }
                c.batch.push(set);
                n += u64::from(set.is_some());
            }
            // Every part out first, then the replies: the nodes work at once.
            let sent: Vec<bool> = conns
                .iter_mut()
                .map(|slot| match slot.as_mut().filter(|c| !c.batch.is_empty()) {
                    Some(c) => c.stream.write_all(&c.request).is_ok(),
                    None => false,
                })
                .collect();
            let mut answered = 0;
            for (slot, sent) in conns.iter_mut().zip(sent) {
                let Some(c) = slot.as_mut().filter(|c| !c.batch.is_empty()) else {
                    continue;
                };
                let (read, outcome) = receive(c, sent, load, &mut acked);
                answered += read;
                if outcome.is_err() {
                    *slot = None;
                }
            }
            let second = load.started.elapsed().as_secs() as usize;
            if let Some(c) = load.per_second.get(second) {
                c.fetch_add(answered as u64, Relaxed);
            }
            if servers.is_none() && conns[0].is_none() {
                which += 1;
                continue 'connect;
            }
        }
    }
    acked
}

/// Runs the benchmark.
///
/// # Errors
/// The store could not be started, scaled or read.
pub fn run(config: &ElasticConfig) -> anyhow::Result<ElasticReport> {
    let mut store = Store::start(config)?;
    let ports = store.ports();
    if ports.len() != 3 {
        bail!("expected 3 nodes listening, saw {ports:?}");
    }
    // Load the keys, a third through each node.
    let nodes: Vec<u16> = ports.values().copied().collect();
    let per = config.keys.div_ceil(nodes.len());
    std::thread::scope(|s| -> anyhow::Result<()> {
        let loaders: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, &port)| {
                let range = (i * per).min(config.keys)..((i + 1) * per).min(config.keys);
                s.spawn(move || {
                    let addr = ([127, 0, 0, 1], port).into();
                    set_keys(addr, range, KEY_SIZE, VALUE_SIZE)
                })
            })
            .collect();
        for l in loaders {
            l.join().map_err(|_| anyhow!("a loader panicked"))??;
        }
        Ok(())
    })?;
    let settle = Duration::from_secs(config.settle_seconds);
    let load = Load {
        started: Instant::now(),
        stop: AtomicBool::new(false),
        per_second: (0..600).map(|_| AtomicU64::new(0)).collect(),
        ports: Mutex::new(nodes.clone()),
        servers: Mutex::new(match config.clients {
            Clients::Ketama => Some(Arc::new(crate::bench_kv::servers(
                ([127, 0, 0, 1], nodes[0]).into(),
            )?)),
            Clients::AnyNode => None,
        }),
        spread: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        missing: AtomicU64::new(0),
        indeterminate: AtomicU64::new(0),
    };
    let frontend_pid = store.frontend.id();
    let mut stopped_at = Duration::ZERO;
    let (acked, scale, kill_at) = std::thread::scope(|s| -> anyhow::Result<_> {
        // Ketama clients each hold a connection to every node and send `pipeline`
        // requests per node a batch: a third as many give every node as many
        // connections, each as deep, as any-node clients spread over three nodes.
        let threads = match config.clients {
            Clients::Ketama => config.connections.div_ceil(3),
            Clients::AnyNode => config.connections,
        };
        let clients: Vec<_> = (0..threads)
            .map(|t| {
                let load = &load;
                s.spawn(move || client(load, t, config.keys, config.pipeline))
            })
            .collect();
        let outcome = (|| -> anyhow::Result<_> {
            std::thread::sleep(settle);
            // Grow 3 -> 4.
            let asked = load.started.elapsed();
            let exe = std::env::current_exe()?;
            let scaled = Command::new(&exe)
                .args(["scale", "--nodes", "4", "--pid", &frontend_pid.to_string()])
                .output()?;
            if !scaled.status.success() {
                bail!("sesa scale: {}", String::from_utf8_lossy(&scaled.stderr));
            }
            let done = store.wait_for("view 2: 4 of 4 node(s) moved", Duration::from_secs(300))?;
            let finished = load.started.elapsed();
            if config.cpu_share.is_some() || config.clients == Clients::Ketama {
                // Four machines' worth of CPU: the clients spread over the four nodes
                // (ketama clients read the new list).
                *load.ports.lock().unwrap_or_else(|p| p.into_inner()) =
                    store.ports().values().copied().collect();
                load.refresh(&store)?;
                load.spread.fetch_add(1, Relaxed);
            }
            let copies: u64 = done
                .split(" copies sent")
                .next()
                .and_then(|s| s.rsplit(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            std::thread::sleep(settle);
            // kill -9 of node 2.
            let victim = *store
                .pids
                .get(&2)
                .ok_or_else(|| anyhow!("node 2's pid unknown"))?;
            let port = ports[&2];
            load.ports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|p| *p != port);
            let kill_at = load.started.elapsed();
            signal(victim, "KILL");
            if config.cpu_share.is_some() {
                load.spread.fetch_add(1, Relaxed);
            }
            store.wait_for("view 3:", Duration::from_secs(60))?;
            if config.clients == Clients::Ketama {
                load.refresh(&store)?;
                load.spread.fetch_add(1, Relaxed);
            }
            std::thread::sleep(settle);
            Ok(((asked, finished, copies), kill_at))
        })();
        load.stop.store(true, Relaxed);
        stopped_at = load.started.elapsed();
        let mut acked = Vec::new();
        for (t, c) in clients.into_iter().enumerate() {
            let mine = c.join().map_err(|_| anyhow!("a client panicked"))?;
            acked.extend(mine.into_iter().map(|n| (t, n)));
        }
        let (scale, kill_at) = outcome?;
        Ok((acked, scale, kill_at))
    })?;
    // Read every acknowledged write back through a surviving node.
    let survivor = store.ports()[&1];
    let mut stream = TcpStream::connect(("127.0.0.1", survivor))
        .with_context(|| format!("reading back through node 1 (port {survivor})"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (mut buf, mut at) = (Vec::new(), 0);
    let mut lost = 0u64;
    for chunk in acked.chunks(256) {
        let mut request = Vec::new();
        for (t, n) in chunk {
            request.extend_from_slice(format!("get w{t}-{n}\r\n").as_bytes());
        }
        stream.write_all(&request)?;
        for (_, n) in chunk {
            let first = line(&mut stream, &mut buf, &mut at)?;
            if buf[first].starts_with(b"VALUE ") {
                let value = line(&mut stream, &mut buf, &mut at)?;
                if buf[value] != *n.to_string().as_bytes() {
                    lost += 1;
                }
                line(&mut stream, &mut buf, &mut at)?;
            } else {
                lost += 1;
            }
        }
    }
    // Whole seconds of load only.
    let seconds = stopped_at.as_secs() as usize;
    let per_second: Vec<u64> = load.per_second[..seconds]
        .iter()
        .map(|c| c.load(Relaxed))
        .collect();
    let ((asked, finished, copies), kill_at) = (scale, kill_at);
    // The baseline: whole seconds before the scale request, the first left out (warm-up).
    let before = &per_second[1.min(per_second.len())..(asked.as_secs() as usize).max(1)];
    let baseline = before.iter().sum::<u64>() as f64 / before.len().max(1) as f64;
    let window = asked.as_secs() as usize..=(finished.as_secs() as usize);
    let worst = per_second
        .iter()
        .enumerate()
        .filter(|(s, _)| window.contains(s))
        .map(|(_, c)| *c)
        .min()
        .unwrap_or(0);
    // Four nodes, settled: the whole seconds after the move's and before the kill's.
    let after = per_second
        .get(finished.as_secs() as usize + 1..(kill_at.as_secs() as usize).min(per_second.len()))
        .unwrap_or_default();
    let after_scale_ops = after.iter().sum::<u64>() as f64 / after.len().max(1) as f64;
    let below_half = per_second
        .iter()
        .enumerate()
        .filter(|(s, c)| *s >= kill_at.as_secs() as usize && (**c as f64) < baseline / 2.0)
        .count() as u32;
    Ok(ElasticReport {
        keys: config.keys,
        shares: match (&store.shares, config.cpu_share) {
            (Some(s), Some(share)) => format!("{share} CPU per node, {}", s.kind()),
            _ => String::new(),
        },
        baseline_ops: baseline,
        scale_seconds: (finished - asked).as_secs_f64(),
        scale_copies: copies,
        scale_worst_second: worst as f64 / baseline.max(1.0),
        after_scale_ops,
        scale_worst_vs_after: if after_scale_ops > 0.0 {
            worst as f64 / after_scale_ops
        } else {
            0.0
        },
        kill_seconds_below_half: below_half,
        acked_writes: acked.len() as u64,
        lost_writes: lost,
        indeterminate_writes: load.indeterminate.load(Relaxed),
        failed_requests: load.failed.load(Relaxed),
        missing_keys: load.missing.load(Relaxed),
        per_second,
    })
}
