//! The store's clients in a simulation: a few clients on a client machine, each writing
//! only its own keys (one `set` at a time, with growing values) and reading any key, over
//! the memcached text protocol to a store node of their choice (moving to another when
//! theirs fails); then the final reads. Their history is judged by [`History`].

use std::collections::BTreeMap;

use sesa_event::net::{NetError, Stream};

use super::history::{History, InFlight};
use super::*;

/// Clients, and keys each writes.
const CLIENT_TASKS: u32 = 4;
const KEYS_PER_CLIENT: u32 = 4;
/// A client gives up on an operation after this (its outcome is then unknown).
const OP_LIMIT: Duration = Duration::from_secs(2);

/// A store value: the decimal digits of a `u64`.
pub(super) fn decode(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// What the clients share with the harness.
#[derive(Default)]
pub(super) struct Clients {
    /// Where the store's nodes serve clients, by node (the clients' choices).
    pub serving: RefCell<BTreeMap<NodeId, SocketAddr>>,
    pub history: RefCell<History<String>>,
    /// Whether the clients should stop.
    pub quiet: Cell<bool>,
    /// Whether every fourth write of a key is a `delete` (else all are sets).
    pub deletes: Cell<bool>,
    /// The final reads: requested, then filled by a client.
    pub check: RefCell<Option<BTreeMap<String, Option<Vec<u8>>>>>,
    pub check_done: Cell<bool>,
}

/// The client node: a few clients, and the final reads.
pub(super) async fn clients(shared: Rc<Clients>) {
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
async fn connect_any(shared: &Clients, pick: u64) -> Option<Stream> {
    let serving: Vec<SocketAddr> = shared.serving.borrow().values().copied().collect();
    if serving.is_empty() {
        return None;
    }
    let addr = serving[(pick % serving.len() as u64) as usize];
    sesa_event::timeout(OP_LIMIT, sesa_event::tcp_connect(addr))
        .await
        .and_then(Result::ok)
}

async fn client(shared: Rc<Clients>, c: u32) {
    let mut next = super::random_stream();
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
        if next().is_multiple_of(2) {
            let key = format!("c{c}-k{}", next() % u64::from(KEYS_PER_CLIENT));
            // Which writes delete depends on the key's version, not on a random draw:
            // a run without deletes draws the same numbers.
            let version = shared.history.borrow().next_version(&key);
            let delete = shared.deletes.get() && version.is_multiple_of(4);
            let op = match delete {
                true => InFlight::begin_delete(&shared.history, key.clone()),
                false => InFlight::begin(&shared.history, key.clone()),
            };
            let value = op.value;
            let result = match delete {
                true => sesa_event::timeout(OP_LIMIT, remove(stream, &key)).await,
                false => sesa_event::timeout(OP_LIMIT, set(stream, &key, value)).await,
            };
            if debug {
                let what = if delete { "delete" } else { "set" };
                eprintln!(
                    "{:?} client {c} {what} {key} = {value}: {result:?}",
                    sesa_event::now()
                );
            }
            match result {
                Some(Ok(Stored::Yes)) => op.acked(),
                Some(Ok(Stored::No)) => op.failed(),
                // Refused by the store after it may have applied it on some owners.
                Some(Ok(Stored::Unknown)) => drop(op),
                _ => conn = None, // Unknown: a new connection (and `op` drops as such).
            }
        } else {
            let key = format!(
                "c{}-k{}",
                next() % u64::from(CLIENT_TASKS),
                next() % u64::from(KEYS_PER_CLIENT)
            );
            // Every read is judged: it may not be older than a write acknowledged
            // before it began.
            let floor = shared.history.borrow().floor(&key);
            let result = sesa_event::timeout(OP_LIMIT, get(stream, &key)).await;
            if debug {
                eprintln!(
                    "{:?} client {c} get {key} from {:?}: {:?} (floor {floor:?})",
                    sesa_event::now(),
                    stream.peer_addr(),
                    result
                        .as_ref()
                        .map(|r| r.as_ref().map(|v| v.as_deref().and_then(decode)))
                );
            }
            match result {
                Some(Ok(Some(bytes))) => {
                    let value = decode(&bytes);
                    let mut history = shared.history.borrow_mut();
                    history.read_since(&key, floor, value, Some(&bytes));
                }
                Some(Ok(None)) => shared
                    .history
                    .borrow_mut()
                    .read_since(&key, floor, None, None),
                _ => conn = None,
            }
        }
        sesa_event::sleep(Duration::from_millis(5 + next() % 45)).await;
    }
}

/// What a `set` got.
#[derive(Debug)]
enum Stored {
    /// `STORED`: acknowledged.
    Yes,
    /// Another reply: not applied.
    No,
    /// `SERVER_ERROR`: the store refused it after it may have applied it on some of the
    /// key's owners (a write that could not reach every owner), so its outcome is unknown.
    Unknown,
}

/// `set key 0 0 n`.
async fn set(stream: &mut Stream, key: &str, value: u64) -> Result<Stored, NetError> {
    let value = value.to_string();
    let request = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
    stream.write_all(request.as_bytes()).await?;
    let line = read_line(stream).await?;
    Ok(match line.as_slice() {
        b"STORED" => Stored::Yes,
        l if l.starts_with(b"SERVER_ERROR") => Stored::Unknown,
        _ => Stored::No,
    })
}

/// `delete key`: `DELETED` and `NOT_FOUND` both leave the key absent.
async fn remove(stream: &mut Stream, key: &str) -> Result<Stored, NetError> {
    stream
        .write_all(format!("delete {key}\r\n").as_bytes())
        .await?;
    let line = read_line(stream).await?;
    Ok(match line.as_slice() {
        b"DELETED" | b"NOT_FOUND" => Stored::Yes,
        l if l.starts_with(b"SERVER_ERROR") => Stored::Unknown,
        _ => Stored::No,
    })
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
