//! The messenger between nodes: each node is a hosted runtime on its own thread, talking
//! over loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::time::Duration;

use sesa_ebb::{CoreId, EbbRoot, Install, MissContext, MissError, PerCore};
use sesa_exec::{
    CallError, ConnectError, Identity, Messenger, MessengerConfig, NodeId, RemoteError, RemoteRep,
    Request, Secret,
};
use sesa_hosted::{Config, Exit, Runtime};

mod common;

fn secret() -> Secret {
    Secret::from_bytes([42; 32])
}

/// Node ids the tests match on (a pattern takes a constant, not a call).
const NODE_1: NodeId = NodeId::new(1);
const NODE_3: NodeId = NodeId::new(3);

fn me(node: u32) -> Identity {
    Identity {
        node: NodeId::new(node),
        generation: 1,
    }
}

/// Runs a node (2 cores) on its own thread.
fn node<T: Send + 'static, Fut: std::future::Future<Output = T> + 'static>(
    main: impl FnOnce() -> Fut + Send + 'static,
) -> std::thread::JoinHandle<T> {
    common::node_thread(2, main)
}

/// A messenger for node 2, connected to the node at `addr`.
async fn connected_client(addr: SocketAddr) -> sesa_exec::MessengerRef {
    let messenger = Messenger::create(MessengerConfig::new(me(2), secret())).unwrap();
    assert_eq!(messenger.connect(addr).await.unwrap(), me(1));
    messenger
}

/// An echo rep that says which core served it; method 9 is unknown.
struct EchoRep {
    core: CoreId,
}

impl RemoteRep for EchoRep {
    fn handle(&self, request: Request<'_>) -> Result<Vec<u8>, RemoteError> {
        match request.method {
            // A digest of a (possibly huge) argument: its length and a checksum.
            2 => {
                let sum = request
                    .payload
                    .iter()
                    .fold(0u64, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
                Ok([
                    (request.payload.len() as u64).to_le_bytes(),
                    sum.to_le_bytes(),
                ]
                .concat())
            }
            1 => {
                let mut out = request.payload.to_vec();
                out.push(self.core.get() as u8);
                out.extend_from_slice(&request.from.node.get().to_le_bytes());
                Ok(out)
            }
            _ => Err(RemoteError::NoHandler),
        }
    }
}

/// A running echo server node.
struct EchoServer {
    addr: SocketAddr,
    ebb: u64,
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Vec<u32>>,
}

impl EchoServer {
    fn start() -> Self {
        Self::with_transfer_max(256 << 20)
    }

    fn with_transfer_max(transfer_max: u64) -> Self {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel();
        let thread = echo_server(ready_tx, stop_rx, transfer_max);
        let (addr, ebb) = ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        EchoServer {
            addr,
            ebb,
            stop,
            thread,
        }
    }

    /// Stops the node; returns the cores that built a rep of the echo EBB.
    fn finish(self) -> Vec<u32> {
        self.stop.send(()).unwrap();
        self.thread.join().unwrap()
    }
}

/// The server node: serves an echo EBB, reports its address and EBB id, then waits for
/// `stop_rx` before returning which cores built a rep (the access misses it saw).
fn echo_server(
    ready: mpsc::Sender<(SocketAddr, u64)>,
    stop: mpsc::Receiver<()>,
    transfer_max: u64,
) -> std::thread::JoinHandle<Vec<u32>> {
    let stop = Arc::new(std::sync::Mutex::new(stop));
    node(move || async move {
        let config = MessengerConfig {
            transfer_max,
            ..MessengerConfig::new(me(1), secret())
        };
        let messenger = Messenger::create(config).unwrap();
        let addr = messenger
            .listen("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (echo, root) = PerCore::create(|core| EchoRep { core }).unwrap();
        messenger.serve(echo).await.unwrap();
        ready.send((addr, echo.id().raw())).unwrap();
        // Wait (without blocking the core) until the test is done.
        loop {
            if stop.lock().unwrap().try_recv().is_ok() {
                break;
            }
            sesa_event::sleep(Duration::from_millis(5)).await;
        }
        root.reps().map(|(c, _)| c.get()).collect::<Vec<_>>()
    })
}

#[test]
fn a_remote_call_reaches_the_rep_on_the_named_core_creating_it_by_a_miss() {
    let server = EchoServer::start();
    let (addr, ebb) = (server.addr, server.ebb);
    let client = node(move || async move {
        let messenger = connected_client(addr).await;
        let ebb = sesa_ebb::EbbId::from_raw(ebb).unwrap();
        // From core 1 of this node, to core 1 of the server.
        let reply = sesa_event::spawn_on_async(CoreId::new(1), move || async move {
            messenger
                .call(NodeId::new(1), CoreId::new(1), ebb, 1, b"hi".to_vec())
                .await
        })
        .await
        .unwrap()
        .unwrap();
        let unknown = messenger
            .call(NodeId::new(1), CoreId::new(0), ebb, 9, vec![])
            .await;
        let no_core = messenger
            .call(NodeId::new(1), CoreId::new(7), ebb, 1, vec![])
            .await;
        let no_ebb = messenger
            .call(
                NodeId::new(1),
                CoreId::new(0),
                sesa_ebb::EbbId::from_raw(ebb.raw() + 1).unwrap(),
                1,
                vec![],
            )
            .await;
        let not_connected = messenger
            .call(NodeId::new(3), CoreId::new(0), ebb, 1, vec![])
            .await;
        (reply, unknown, no_core, no_ebb, not_connected)
    });
    let (reply, unknown, no_core, no_ebb, not_connected) = client.join().unwrap();
    let cores_with_reps = server.finish();
    assert_eq!(
        reply,
        [b'h', b'i', 1, 2, 0, 0, 0],
        "served on core 1, from node 2"
    );
    assert!(matches!(
        unknown,
        Err(CallError::Remote {
            node: NODE_1,
            error: RemoteError::NoHandler
        })
    ));
    assert!(matches!(
        no_core,
        Err(CallError::Remote {
            error: RemoteError::NoSuchCore,
            ..
        })
    ));
    assert!(matches!(
        no_ebb,
        Err(CallError::Remote {
            error: RemoteError::NoHandler,
            ..
        })
    ));
    assert!(matches!(
        not_connected,
        Err(CallError::NotConnected(NODE_3))
    ));
    // Core 1 built its rep when the first call reached it (the access miss); core 0 was
    // reached by the unknown-method call.
    assert_eq!(cores_with_reps, [0, 1]);
}

#[test]
fn a_node_with_the_wrong_secret_is_refused() {
    let server = EchoServer::start();
    let addr = server.addr;
    let intruder = node(move || async move {
        let config = MessengerConfig::new(me(5), Secret::from_bytes([1; 32]));
        let messenger = Messenger::create(config).unwrap();
        messenger.connect(addr).await
    });
    let refused = intruder.join().unwrap();
    server.finish();
    assert!(
        matches!(
            refused,
            Err(ConnectError::Auth(_)) | Err(ConnectError::Closed)
        ),
        "{refused:?}"
    );
}

#[test]
fn garbage_and_oversize_frames_close_that_connection_only() {
    use std::io::{Read, Write};
    let server = EchoServer::start();
    let (addr, ebb) = (server.addr, server.ebb);
    for garbage in [
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        // A valid header announcing a 4 GiB Hello.
        [b"SESA".as_slice(), &[1, 0, 1, 0], &u32::MAX.to_le_bytes()].concat(),
        // A 4 KiB Hello: within the normal frame limit, but not before authentication.
        [b"SESA".as_slice(), &[1, 0, 1, 0], &4096u32.to_le_bytes()].concat(),
    ] {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let sent = std::time::Instant::now();
        s.write_all(&garbage).unwrap();
        // The node sends its Hello, then closes on the bad frame at once: it neither
        // waits for the announced payload nor for the handshake timeout (5 s).
        let mut sink = Vec::new();
        let closed = s.read_to_end(&mut sink);
        assert!(closed.is_ok(), "the node closed the connection: {closed:?}");
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "closed only after {:?}",
            sent.elapsed()
        );
    }
    // The node is still up and serves a real peer.
    let client = node(move || async move {
        let messenger = connected_client(addr).await;
        let ebb = sesa_ebb::EbbId::from_raw(ebb).unwrap();
        messenger
            .call(NodeId::new(1), CoreId::new(0), ebb, 1, b"ok".to_vec())
            .await
    });
    let reply = client.join().unwrap().unwrap();
    server.finish();
    assert_eq!(&reply[..2], b"ok");
}

/// A fake node 1 on a plain socket: completes the real handshake, waits for a `Call`,
/// then vanishes without replying.
fn vanishing_peer() -> (SocketAddr, std::thread::JoinHandle<()>) {
    use sesa_wire::{Auth, FrameDecoder, Handshake, Hello, Limits, MsgType, encode};
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let limits = Limits::default();
        let mut hs = Handshake::new(me(1).into(), [9; 32], secret());
        let mut out = Vec::new();
        encode(MsgType::Hello, &hs.hello(), &limits, &mut out).unwrap();
        s.write_all(&out).unwrap();
        let mut decoder = FrameDecoder::new(limits);
        let mut buf = [0u8; 4096];
        let mut next = |decoder: &mut FrameDecoder, s: &mut std::net::TcpStream| loop {
            if let Some(f) = decoder.next_frame().unwrap() {
                return (f.msg_type, f.payload.to_vec());
            }
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed first");
            decoder.extend(&buf[..n]);
        };
        let (ty, hello) = next(&mut decoder, &mut s);
        assert_eq!(ty, MsgType::Hello);
        let hello: Hello = postcard::from_bytes(&hello).unwrap();
        let auth = hs.on_hello(&hello).unwrap();
        out.clear();
        encode(MsgType::Auth, &auth, &limits, &mut out).unwrap();
        s.write_all(&out).unwrap();
        let (ty, auth) = next(&mut decoder, &mut s);
        assert_eq!(ty, MsgType::Auth);
        hs.on_auth(&postcard::from_bytes::<Auth>(&auth).unwrap())
            .unwrap();
        let (ty, _call) = next(&mut decoder, &mut s);
        assert_eq!(ty, MsgType::Call);
        // Vanish mid-call.
        drop(s);
    });
    (addr, thread)
}

#[test]
fn a_vanishing_peer_fails_pending_calls_instead_of_hanging_them() {
    let (addr, fake) = vanishing_peer();
    let client = node(move || async move {
        let messenger = connected_client(addr).await;
        let ebb = sesa_ebb::EbbId::from_raw((1 << 32) | 5).unwrap();
        let result = messenger
            .call(NodeId::new(1), CoreId::new(1), ebb, 1, vec![])
            .await;
        let peers = messenger.peers().await.unwrap();
        (result, peers)
    });
    let (result, peers) = client.join().unwrap();
    fake.join().unwrap();
    assert!(
        matches!(result, Err(CallError::PeerLost(NODE_1))),
        "{result:?}"
    );
    assert!(peers.is_empty(), "the lost peer was dropped");
}

#[test]
fn a_stopping_peer_says_so() {
    // A handler that stops its whole node mid-call: the node still answers.
    struct Stopper;
    struct StopperRoot(Arc<AtomicUsize>);
    impl EbbRoot for StopperRoot {
        type Rep = Stopper;
        fn miss(&self, _cx: &MissContext<'_>) -> Result<Install<Stopper>, MissError> {
            self.0.fetch_add(1, SeqCst);
            Ok(Install::local(Box::new(Stopper)))
        }
    }
    impl RemoteRep for Stopper {
        fn handle(&self, _request: Request<'_>) -> Result<Vec<u8>, RemoteError> {
            sesa_event::stop(0);
            Ok(vec![])
        }
    }
    let (ready_tx, ready_rx) = mpsc::channel();
    let misses = Arc::new(AtomicUsize::new(0));
    let counted = misses.clone();
    let server = std::thread::spawn(move || {
        let config = Config {
            pin_threads: false,
            idle_spins: 100,
            ..Config::with_cores(2)
        };
        Runtime::new(config)
            .unwrap()
            .run(move || async move {
                let messenger = Messenger::create(MessengerConfig::new(me(1), secret())).unwrap();
                let addr = messenger
                    .listen("127.0.0.1:0".parse().unwrap())
                    .await
                    .unwrap();
                let node = sesa_ebb::EbbNode::current().unwrap();
                let ebb = node.create(StopperRoot(counted)).unwrap();
                messenger.serve(ebb).await.unwrap();
                ready_tx.send((addr, ebb.id().raw())).unwrap();
                sesa_event::sleep(Duration::from_secs(60)).await;
            })
            .unwrap()
    });
    let (addr, ebb) = ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let client = node(move || async move {
        let messenger = connected_client(addr).await;
        let ebb = sesa_ebb::EbbId::from_raw(ebb).unwrap();
        messenger
            .call(NodeId::new(1), CoreId::new(1), ebb, 1, vec![])
            .await
    });
    let result = client.join().unwrap();
    assert_eq!(server.join().unwrap(), Exit::Stopped(0));
    assert!(
        matches!(
            result,
            Err(CallError::Remote {
                error: RemoteError::Stopping,
                ..
            }) | Err(CallError::PeerLost(NODE_1))
        ),
        "{result:?}"
    );
    assert_eq!(
        misses.load(SeqCst),
        1,
        "the call reached the rep on core 1 via a miss"
    );
}

fn digest(payload: &[u8]) -> Vec<u8> {
    let sum = payload
        .iter()
        .fold(0u64, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
    [(payload.len() as u64).to_le_bytes(), sum.to_le_bytes()].concat()
}

#[test]
fn a_large_argument_is_shipped_in_chunks_and_arrives_whole() {
    let server = EchoServer::start();
    let (addr, ebb) = (server.addr, server.ebb);
    // 40 MiB: more than two frame limits' worth, sent as 1 MiB chunks.
    let payload: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let expected = digest(&payload);
    let client = node(move || async move {
        let messenger = connected_client(addr).await;
        let ebb = sesa_ebb::EbbId::from_raw(ebb).unwrap();
        let big = messenger
            .call(NodeId::new(1), CoreId::new(1), ebb, 2, payload)
            .await;
        // The connection still serves ordinary calls afterwards.
        let small = messenger
            .call(NodeId::new(1), CoreId::new(0), ebb, 2, vec![1, 2, 3])
            .await;
        (big, small)
    });
    let (big, small) = client.join().unwrap();
    server.finish();
    assert_eq!(big.unwrap(), expected);
    assert_eq!(small.unwrap(), digest(&[1, 2, 3]));
}

#[test]
fn an_argument_over_the_peers_limit_is_refused_with_a_reply() {
    let server = EchoServer::with_transfer_max(8 << 20);
    let (addr, ebb) = (server.addr, server.ebb);
    let client = node(move || async move {
        let messenger = connected_client(addr).await;
        let ebb = sesa_ebb::EbbId::from_raw(ebb).unwrap();
        let over = messenger
            .call(NodeId::new(1), CoreId::new(0), ebb, 2, vec![7; 10 << 20])
            .await;
        let under = messenger
            .call(NodeId::new(1), CoreId::new(0), ebb, 2, vec![7; 4 << 20])
            .await;
        (over, under)
    });
    let (over, under) = client.join().unwrap();
    server.finish();
    match over {
        Err(CallError::Remote {
            error: RemoteError::Refused(why),
            ..
        }) => {
            assert!(why.contains("exceeds"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(under.unwrap(), digest(&[7; 4 << 20]));
}
