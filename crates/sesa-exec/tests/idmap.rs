//! The global id map on three nodes (in-process runtimes over loopback): reads on any
//! node, watches, and surviving the loss of a node that held replicas.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use sesa_exec::idmap::replicas_of;
use sesa_exec::{GlobalIdMap, Identity, Member, Messenger, MessengerConfig, NodeId, Secret};
mod common;

const NODES: u32 = 3;
const KEYS: u64 = 40;

/// Waits (without blocking the core) until `n` nodes have reached this point.
async fn barrier(count: &AtomicUsize, n: usize) {
    count.fetch_add(1, SeqCst);
    while count.load(SeqCst) < n {
        sesa_event::sleep(Duration::from_millis(2)).await;
    }
}

#[derive(Default)]
struct Phases {
    meshed: AtomicUsize,
    written: AtomicUsize,
    watching: AtomicUsize,
    checked: AtomicUsize,
    /// The survivors stay up until both have read everything.
    done: AtomicUsize,
}

type Roster = Vec<(u32, SocketAddr, Member)>;

struct Report {
    read_everything: bool,
    watched: Option<Vec<u8>>,
    never_written: bool,
    after_loss: Option<bool>,
}

fn value_of(key: u64) -> Vec<u8> {
    format!("value-{key}").into_bytes()
}

fn run_node(
    id: u32,
    phases: Arc<Phases>,
    announce: mpsc::Sender<(u32, SocketAddr, Member)>,
    roster: Arc<Mutex<Option<Roster>>>,
) -> std::thread::JoinHandle<Report> {
    common::node_thread(1, move || async move {
        let me = Identity {
            node: NodeId::new(id),
            generation: 1,
        };
        let messenger =
            Messenger::create(MessengerConfig::new(me, Secret::from_bytes([9; 32]))).unwrap();
        let addr = messenger
            .listen("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let map = GlobalIdMap::start(messenger, NodeId::new(id), 2)
            .await
            .unwrap();
        announce.send((id, addr, map.member())).unwrap();
        let roster = loop {
            if let Some(r) = roster.lock().unwrap().clone() {
                break r;
            }
            sesa_event::sleep(Duration::from_millis(2)).await;
        };
        // One connection per pair: the higher id dials the lower.
        for (peer, addr, _) in &roster {
            if *peer < id {
                messenger.connect(*addr).await.unwrap();
            }
        }
        while messenger.peers().await.unwrap().len() < NODES as usize - 1 {
            sesa_event::sleep(Duration::from_millis(2)).await;
        }
        map.set_members(1, roster.iter().map(|(_, _, m)| *m).collect());
        map.activate(1);
        barrier(&phases.meshed, NODES as usize).await;

        if id == 1 {
            for key in 0..KEYS {
                map.set(key, value_of(key)).await.unwrap();
            }
        }
        barrier(&phases.written, NODES as usize).await;
        let mut read_everything = true;
        for key in 0..KEYS {
            let got = map.get(key).await.unwrap();
            read_everything &= got.map(|v| v.value) == Some(value_of(key));
        }
        let never_written = map.get(1_000_000).await.unwrap().is_none();

        // Node 3 watches a key that node 2 then sets.
        let watched = if id == 3 {
            let watcher = map.clone();
            let watch = sesa_event::spawn_local(async move { watcher.watch(500, 0).await });
            barrier(&phases.watching, NODES as usize).await;
            Some(watch.await.unwrap().unwrap().value)
        } else {
            barrier(&phases.watching, NODES as usize).await;
            if id == 2 {
                // Give the watch time to be waiting on its replica.
                sesa_event::sleep(Duration::from_millis(50)).await;
                map.set(500, b"hello".to_vec()).await.unwrap();
            }
            None
        };
        barrier(&phases.checked, NODES as usize).await;

        // Node 1 leaves; once a view without it is in place (the frontend's, when it
        // notices: a get needs every replica of the current view), the survivors read
        // every key, before and after they copy the keys to the new replicas.
        let after_loss = if id == 1 {
            None
        } else {
            while messenger
                .peers()
                .await
                .unwrap()
                .iter()
                .any(|p| p.node == NodeId::new(1))
            {
                sesa_event::sleep(Duration::from_millis(2)).await;
            }
            let all_three: Vec<Member> = roster.iter().map(|(_, _, m)| *m).collect();
            let survivors: Vec<Member> = roster
                .iter()
                .filter(|(peer, _, _)| *peer != 1)
                .map(|(_, _, m)| *m)
                .collect();
            map.set_settled(all_three);
            map.set_members(2, survivors);
            map.activate(2);
            map.rebalance().await.unwrap();
            let mut all = true;
            for key in 0..KEYS {
                let got = map.get(key).await.unwrap();
                all &= got.map(|v| v.value) == Some(value_of(key));
            }
            barrier(&phases.done, NODES as usize - 1).await;
            Some(all)
        };
        Report {
            read_everything,
            watched,
            never_written,
            after_loss,
        }
    })
}

#[test]
fn three_nodes_share_one_map_and_survive_losing_one() {
    let phases = Arc::new(Phases::default());
    let roster = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let nodes: Vec<_> = (1..=NODES)
        .map(|id| run_node(id, phases.clone(), tx.clone(), roster.clone()))
        .collect();
    let mut announced: Roster = (0..NODES)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    announced.sort_by_key(|(id, _, _)| *id);
    // Some keys must have had a replica on node 1, or the loss proves nothing.
    let members: Vec<Member> = announced.iter().map(|(_, _, m)| *m).collect();
    let on_node_1 = (0..KEYS)
        .filter(|k| {
            replicas_of(*k, &members, 2)
                .iter()
                .any(|m| m.node == NodeId::new(1))
        })
        .count();
    assert!(on_node_1 > 0);
    *roster.lock().unwrap() = Some(announced);
    let reports: Vec<Report> = nodes.into_iter().map(|n| n.join().unwrap()).collect();
    for (i, r) in reports.iter().enumerate() {
        assert!(r.read_everything, "node {} read every key", i + 1);
        assert!(
            r.never_written,
            "node {}: an unwritten key reads as None",
            i + 1
        );
    }
    assert_eq!(reports[2].watched.as_deref(), Some(b"hello".as_slice()));
    assert_eq!(
        reports[1].after_loss,
        Some(true),
        "node 2 after node 1 left"
    );
    assert_eq!(
        reports[2].after_loss,
        Some(true),
        "node 3 after node 1 left"
    );
}
