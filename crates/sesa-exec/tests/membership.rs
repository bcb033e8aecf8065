//! SWIM membership on three in-process nodes: everyone sees everyone, a stopped node is
//! declared down in under a second, and the same node restarted with a new generation is
//! seen again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sesa_exec::{
    Identity, MemberEvent, Membership, MembershipConfig, Messenger, MessengerConfig, NodeId,
    NodeIdentity, Secret,
};
mod common;

#[derive(Default)]
struct Shared {
    seed: Mutex<Option<NodeIdentity>>,
    all_up: AtomicUsize,
    stopped_at: Mutex<Option<Instant>>,
    node3_back: AtomicUsize,
    finish: AtomicBool,
}

struct Seen {
    detection: Option<Duration>,
    saw_restart: bool,
    events: Vec<MemberEvent>,
}

fn start_node(id: u32, generation: u64, shared: Arc<Shared>) -> std::thread::JoinHandle<Seen> {
    common::node_thread(1, move || async move {
        let me = Identity {
            node: NodeId::new(id),
            generation,
        };
        let messenger =
            Messenger::create(MessengerConfig::new(me, Secret::from_bytes([8; 32]))).unwrap();
        let addr = messenger
            .listen("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let members = Membership::start(messenger, addr, MembershipConfig::fast_local())
            .await
            .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let log = events.clone();
        members
            .subscribe(move |e| log.lock().unwrap().push(e))
            .await
            .unwrap();
        if id == 1 {
            *shared.seed.lock().unwrap() = Some(NodeIdentity {
                node: NodeId::new(1),
                generation,
                addr,
            });
        } else {
            let seed = loop {
                if let Some(seed) = *shared.seed.lock().unwrap() {
                    break seed;
                }
                sesa_event::sleep(Duration::from_millis(2)).await;
            };
            members.announce(seed).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while members.members().await.unwrap().len() < 3 {
            assert!(Instant::now() < deadline, "node {id} never saw all three");
            sesa_event::sleep(Duration::from_millis(5)).await;
        }
        if generation > 1 {
            // The restarted node: stay until the others have seen us again.
            shared.node3_back.fetch_add(1, SeqCst);
            while !shared.finish.load(SeqCst) {
                sesa_event::sleep(Duration::from_millis(5)).await;
            }
            return Seen {
                detection: None,
                saw_restart: true,
                events: vec![],
            };
        }
        shared.all_up.fetch_add(1, SeqCst);
        while shared.all_up.load(SeqCst) < 3 {
            sesa_event::sleep(Duration::from_millis(2)).await;
        }
        if id == 3 {
            // Leave abruptly: the runtime stops and the kernel closes the sockets.
            *shared.stopped_at.lock().unwrap() = Some(Instant::now());
            return Seen {
                detection: None,
                saw_restart: false,
                events: vec![],
            };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while members
            .members()
            .await
            .unwrap()
            .iter()
            .any(|m| m.node == NodeId::new(3))
        {
            assert!(
                Instant::now() < deadline,
                "node {id} never declared node 3 down"
            );
            sesa_event::sleep(Duration::from_millis(1)).await;
        }
        let detection = shared.stopped_at.lock().unwrap().map(|t| t.elapsed());
        // Wait for node 3's next life.
        let deadline = Instant::now() + Duration::from_secs(15);
        let saw_restart = loop {
            let now = members.members().await.unwrap();
            if now
                .iter()
                .any(|m| m.node == NodeId::new(3) && m.generation == 2)
            {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            sesa_event::sleep(Duration::from_millis(5)).await;
        };
        shared.node3_back.fetch_add(1, SeqCst);
        while !shared.finish.load(SeqCst) {
            sesa_event::sleep(Duration::from_millis(5)).await;
        }
        let events = events.lock().unwrap().clone();
        Seen {
            detection,
            saw_restart,
            events,
        }
    })
}

#[test]
fn a_stopped_node_is_detected_quickly_and_its_restart_is_seen() {
    let shared = Arc::new(Shared::default());
    let n1 = start_node(1, 1, shared.clone());
    let n2 = start_node(2, 1, shared.clone());
    let n3 = start_node(3, 1, shared.clone());
    n3.join().unwrap();
    // Restart node 3 with its next generation once the others have noticed it is gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    while shared.stopped_at.lock().unwrap().is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let n3b = start_node(3, 2, shared.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while shared.node3_back.load(SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "the restarted node was not seen by everyone"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    shared.finish.store(true, SeqCst);
    let seen1 = n1.join().unwrap();
    let seen2 = n2.join().unwrap();
    n3b.join().unwrap();
    for (id, seen) in [(1, &seen1), (2, &seen2)] {
        let d = seen.detection.expect("detected");
        eprintln!("node {id} detected node 3 down after {d:?}");
        assert!(d < Duration::from_secs(2), "node {id}: {d:?}");
        assert!(seen.saw_restart, "node {id} saw node 3's new generation");
        assert!(
            seen.events.iter().any(
                |e| matches!(e, MemberEvent::Down(m) if m.node.get() == 3 && m.generation == 1)
            )
        );
        assert!(
            seen.events
                .iter()
                .any(|e| matches!(e, MemberEvent::Up(m) if m.node.get() == 3 && m.generation == 2))
        );
    }
}
