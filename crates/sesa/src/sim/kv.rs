//! The data store under faults: with R = 2 and at most one owner of a key lost at a
//! time, no acknowledged write lost and no value read that was never written.
//!
//! The store is the real one: each store node runs `sesa_apps::memcache` (the per-core
//! `Kv`, the cluster `Node`, `serve_every_core` on its address), and node 0 is the
//! frontend, driving views with the same `Coordinator` as `sesa kv`. Clients run on a
//! client node and speak the memcached text protocol over the simulated network to a
//! store node of their choice, moving to another when theirs fails. Each client writes
//! only its own keys, one `set` at a time, with growing values, and reads any key.
//!
//! Unlike `sesa kv`'s frontend, which never takes a lost node id back, this one lets a
//! crashed node rejoin under its id with a new generation (a restart); it first sends a
//! view without the node, so the rejoined, empty node is a new owner that gets copies.

use std::collections::{BTreeMap, BTreeSet};

use sesa_apps::memcache::cluster::{self as store, Coordinator, Layout, Member};
use sesa_apps::memcache::protocol::Limits;
use sesa_apps::memcache::server::{self, Kv, KvConfig};
use sesa_event::net::{NetError, Stream};

use super::history::{History, InFlight};
use super::*;

/// The frontend's node id.
const FRONTEND: u32 = 0;
/// The clients' node id (never faulted: clients stand outside the cluster).
const CLIENTS: u32 = 200;
/// The port store nodes serve clients on.
const CLIENT_PORT: u16 = 11211;
/// Clients, and keys each writes.
const CLIENT_TASKS: u32 = 4;
const KEYS_PER_CLIENT: u32 = 4;
/// A client gives up on an operation after this (its outcome is then unknown).
const OP_LIMIT: Duration = Duration::from_secs(2);
/// How long the cluster has to settle after the faults stop, before the final reads.
const SETTLE: Duration = Duration::from_secs(3);

/// A store value: the decimal digits of a `u64`.
fn decode(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[derive(Default)]
struct Shared {
    /// Store nodes that registered (started their store) and are not known lost.
    registered: RefCell<BTreeMap<u32, Member>>,
    /// Store nodes in the frontend's current view (the clients' choices).
    serving: RefCell<BTreeSet<u32>>,
    /// Store nodes lost since the frontend last looked.
    lost: RefCell<Vec<u32>>,
    /// Store nodes asked to leave, not yet taken out of the view.
    leave: RefCell<Vec<u32>>,
    /// Whether the frontend's last view change finished and nothing waits.
    settled: Cell<bool>,
    history: RefCell<History<String>>,
    quiet: Cell<bool>,
    /// The final reads: requested, then filled by a client.
    check: RefCell<Option<BTreeMap<String, Option<Vec<u8>>>>>,
    check_done: Cell<bool>,
}

struct KvCluster {
    shared: Rc<Shared>,
    cores: usize,
}

impl Cluster for KvCluster {
    fn start(&mut self, sim: &Sim, id: u32, generation: u64) -> NodeKey {
        let shared = self.shared.clone();
        let cores = self.cores;
        sim.start_node(spec(id, cores), move || store_node(shared, id, generation))
    }

    fn lost(&mut self, _sim: &Sim, id: u32, _generation: u64) {
        self.shared.registered.borrow_mut().remove(&id);
        self.shared.lost.borrow_mut().push(id);
        self.shared.settled.set(false);
    }

    fn leave(&mut self, _sim: &Sim, id: u32) -> bool {
        if self.shared.registered.borrow().len() <= 2 {
            return false;
        }
        self.shared.registered.borrow_mut().remove(&id);
        self.shared.leave.borrow_mut().push(id);
        self.shared.settled.set(false);
        true
    }

    fn faultable(&self) -> Vec<u32> {
        self.shared.registered.borrow().keys().copied().collect()
    }

    fn reachable(&self) -> Vec<u32> {
        let mut ids = self.faultable();
        ids.extend([FRONTEND, CLIENTS]);
        ids
    }

    fn settled(&self) -> bool {
        self.shared.settled.get()
    }
}

pub(super) fn run(sim: &Sim, options: &Options, faults: &mut Faults) -> (Counts, Vec<String>) {
    let shared = Rc::new(Shared::default());
    {
        let shared = shared.clone();
        sim.start_node(spec(FRONTEND, 1), move || frontend(shared));
    }
    let mut cluster = KvCluster {
        shared: shared.clone(),
        cores: options.cores,
    };
    let mut lives = BTreeMap::new();
    for id in 1..=options.nodes.max(2) {
        let key = cluster.start(sim, id, 1);
        lives.insert(id, Life { key, generation: 1 });
    }
    {
        let shared = shared.clone();
        sim.start_node(spec(CLIENTS, 1), move || clients(shared));
    }
    fault_phase(sim, options, &mut cluster, &mut lives, faults);
    shared.quiet.set(true);
    sim.run_for(SETTLE);
    let settled = sim.run_until(Duration::from_secs(60), || shared.settled.get());
    *shared.check.borrow_mut() = Some(BTreeMap::new());
    let finished = sim.run_until(Duration::from_secs(60), || shared.check_done.get());
    let mut history = std::mem::take(&mut *shared.history.borrow_mut());
    if !settled {
        history.fail("the store did not settle in 60 s of virtual time after the faults".into());
    }
    if !finished {
        history.fail("the final reads did not finish in 60 s of virtual time".into());
    }
    let reads = shared.check.borrow_mut().take().unwrap_or_default();
    history.finish(&reads, decode)
}

/// The frontend: the store's coordinator. Sends a view when nodes register, are lost
/// or leave, and waits for each move to finish.
async fn frontend(shared: Rc<Shared>) {
    let Some(messenger) = messenger(FRONTEND, 1).await else {
        return;
    };
    let mut coordinator = Coordinator::new(messenger, 2, Layout::Partitioned);
    let mut members: BTreeMap<u32, Member> = BTreeMap::new();
    // Whether the last view change finished moving keys.
    let mut last_done = true;
    loop {
        let lost: Vec<u32> = std::mem::take(&mut *shared.lost.borrow_mut());
        let leaving_ids: Vec<u32> = std::mem::take(&mut *shared.leave.borrow_mut());
        let mut changed = false;
        for id in lost {
            changed |= members.remove(&id).is_some();
        }
        let mut leaving = Vec::new();
        for id in leaving_ids {
            if let Some(m) = members.remove(&id) {
                leaving.push(m);
                changed = true;
            }
        }
        // Newcomers only in a view of their own, after any loss: a node lost and back
        // under the same id must first leave the view, or the view would look unchanged
        // and nobody would copy its keys to its new, empty life. (The `sesa kv`
        // frontend never takes a lost node id back; this one lets it rejoin.)
        if !changed {
            for (id, m) in shared.registered.borrow().iter() {
                if members.get(id) != Some(m) {
                    members.insert(*id, *m);
                    changed = true;
                }
            }
        }
        if changed && !members.is_empty() {
            shared.settled.set(false);
            let debug = std::env::var_os("SESA_SIM_DEBUG").is_some();
            if debug {
                eprintln!(
                    "{:?} frontend: view {} of {:?}, leaving {:?}",
                    sesa_event::now(),
                    coordinator.view().map_or(0, |v| v.epoch) + 1,
                    members.keys().collect::<Vec<_>>(),
                    leaving.iter().map(|m| m.node).collect::<Vec<_>>()
                );
            }
            let r = coordinator.change(&members, &leaving, |_| {}).await;
            if debug {
                eprintln!("{:?} frontend: {:?}", sesa_event::now(), r);
            }
            *shared.serving.borrow_mut() = members.keys().copied().collect();
            let done = r.finished;
            last_done = done;
            // A leaving node stops once its keys have moved.
            for m in &leaving {
                let _ = store::call(messenger, *m, store::StoreRequest::Progress).await;
            }
            let more = !shared.lost.borrow().is_empty()
                || !shared.leave.borrow().is_empty()
                || shared
                    .registered
                    .borrow()
                    .iter()
                    .any(|(id, m)| members.get(id) != Some(m));
            shared.settled.set(done && !more);
        } else if !changed {
            shared.settled.set(last_done);
        }
        sesa_event::sleep(Duration::from_millis(20)).await;
    }
}

/// A store node: its store, served to clients on its address; registers with the
/// frontend; keeps connected to the frontend and the other store nodes.
async fn store_node(shared: Rc<Shared>, id: u32, generation: u64) {
    let Some(messenger) = messenger(id, generation).await else {
        return;
    };
    let config = KvConfig {
        limits: Limits::default(),
        memory_bytes: 64 << 20,
        max_connections: 1024,
        pid: 0,
    };
    let Ok(kv) = Kv::create(&config) else { return };
    let Ok((node, kv)) = store::Node::start(messenger, kv).await else {
        return;
    };
    let addr = SocketAddr::new(ip_of(id).into(), CLIENT_PORT);
    if server::serve_every_core(kv, addr).await.is_err() {
        return;
    }
    let mut registered = false;
    loop {
        let mut peers: Vec<u32> = shared.registered.borrow().keys().copied().collect();
        peers.push(FRONTEND);
        mesh(messenger, id, peers.into_iter()).await;
        if !registered
            && messenger
                .peers()
                .await
                .is_ok_and(|p| p.iter().any(|p| p.node == FRONTEND))
        {
            shared.registered.borrow_mut().insert(id, node.member());
            shared.settled.set(false);
            registered = true;
        }
        sesa_event::sleep(Duration::from_millis(20)).await;
    }
}

/// The client node: a few clients, and the final reads.
async fn clients(shared: Rc<Shared>) {
    let tasks: Vec<_> = (0..CLIENT_TASKS)
        .map(|c| sesa_event::spawn_local(client(shared.clone(), c)))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    // Wait for the final reads to be asked for, then read every key.
    while shared.check.borrow().is_none() {
        sesa_event::sleep(Duration::from_millis(20)).await;
    }
    let keys: Vec<String> = shared.history.borrow().keys();
    let mut conn: Option<Stream> = None;
    let mut pick = sesa_event::random_u64();
    for key in keys {
        for _ in 0..10 {
            if conn.is_none() {
                pick = pick.wrapping_add(1);
                conn = connect_any(&shared, pick).await;
            }
            let Some(stream) = conn.as_mut() else {
                sesa_event::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match sesa_event::timeout(OP_LIMIT, get(stream, &key)).await {
                Some(Ok(got)) => {
                    if let Some(check) = shared.check.borrow_mut().as_mut() {
                        check.insert(key.clone(), got);
                    }
                    break;
                }
                _ => conn = None,
            }
        }
    }
    shared.check_done.set(true);
}

/// A connection to a serving store node, chosen by `pick`.
async fn connect_any(shared: &Shared, pick: u64) -> Option<Stream> {
    let serving: Vec<u32> = shared.serving.borrow().iter().copied().collect();
    if serving.is_empty() {
        return None;
    }
    let node = serving[(pick % serving.len() as u64) as usize];
    let addr = SocketAddr::new(ip_of(node).into(), CLIENT_PORT);
    sesa_event::timeout(OP_LIMIT, sesa_event::tcp_connect(addr))
        .await
        .and_then(Result::ok)
}

async fn client(shared: Rc<Shared>, c: u32) {
    let mut rng = sesa_event::random_u64() | 1;
    let mut next = move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut conn: Option<Stream> = None;
    let debug = std::env::var_os("SESA_SIM_DEBUG").is_some();
    while !shared.quiet.get() {
        if conn.is_none() {
            conn = connect_any(&shared, next()).await;
            if debug {
                eprintln!(
                    "{:?} client {c} connected to {:?}",
                    sesa_event::now(),
                    conn.as_ref().map(|s| s.peer_addr())
                );
            }
            if conn.is_none() {
                sesa_event::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let Some(stream) = conn.as_mut() else {
            continue;
        };
        if next() % 2 == 0 {
            let key = format!("c{c}-k{}", next() % u64::from(KEYS_PER_CLIENT));
            let op = InFlight::begin(&shared.history, key.clone());
            let value = op.value;
            let result = sesa_event::timeout(OP_LIMIT, set(stream, &key, value)).await;
            if debug {
                eprintln!(
                    "{:?} client {c} set {key} = {value}: {result:?}",
                    sesa_event::now()
                );
            }
            match result {
                Some(Ok(true)) => op.acked(),
                Some(Ok(false)) => op.failed(),
                _ => conn = None, // Unknown: a new connection (and `op` drops as such).
            }
        } else {
            let key = format!(
                "c{}-k{}",
                next() % u64::from(CLIENT_TASKS),
                next() % u64::from(KEYS_PER_CLIENT)
            );
            match sesa_event::timeout(OP_LIMIT, get(stream, &key)).await {
                Some(Ok(Some(bytes))) => {
                    shared.history.borrow_mut().read(
                        &key,
                        decode(&bytes),
                        &bytes,
                        "a client's read",
                    );
                }
                Some(Ok(None)) => {}
                _ => conn = None,
            }
        }
        sesa_event::sleep(Duration::from_millis(5 + next() % 45)).await;
    }
}

/// `set key 0 0 n`: `Ok(true)` on STORED, `Ok(false)` on an error reply.
async fn set(stream: &mut Stream, key: &str, value: u64) -> Result<bool, NetError> {
    let value = value.to_string();
    let request = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
    stream.write_all(request.as_bytes()).await?;
    let line = read_line(stream).await?;
    Ok(line == b"STORED")
}

/// `get key`: the value, or `None` on a miss.
async fn get(stream: &mut Stream, key: &str) -> Result<Option<Vec<u8>>, NetError> {
    stream
        .write_all(format!("get {key}\r\n").as_bytes())
        .await?;
    let line = read_line(stream).await?;
    if line == b"END" {
        return Ok(None);
    }
    let header = String::from_utf8_lossy(&line).into_owned();
    let mut words = header.split(' ');
    let (Some("VALUE"), Some(_key), Some(_flags), Some(len)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(NetError::Other(format!("unexpected reply {header:?}")));
    };
    let len: usize = len
        .parse()
        .map_err(|_| NetError::Other(format!("bad length in {header:?}")))?;
    let mut value = vec![0; len + 2];
    stream.read_exact(&mut value).await?;
    value.truncate(len);
    if read_line(stream).await? != b"END" {
        return Err(NetError::Other("no END after the value".into()));
    }
    Ok(Some(value))
}

/// One `\r\n`-terminated line, without its terminator (byte by byte: the replies here
/// are short, and nothing past the line may be consumed).
async fn read_line(stream: &mut Stream) -> Result<Vec<u8>, NetError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        stream.read_exact(&mut byte).await?;
        if byte[0] == b'\n' && line.last() == Some(&b'\r') {
            line.pop();
            return Ok(line);
        }
        line.push(byte[0]);
        if line.len() > 4096 {
            return Err(NetError::Other("an over-long reply line".into()));
        }
    }
}
