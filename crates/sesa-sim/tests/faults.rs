//! The simulator's faults as the nodes see them: a paused node runs nothing until it is
//! resumed; a one-way cut holds the bytes of one direction only.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use sesa_sim::{NodeSpec, Sim, SimConfig};

fn spec(id: u32) -> NodeSpec {
    NodeSpec {
        id,
        cores: 1,
        ip: [10, 0, 0, id as u8].into(),
    }
}

#[test]
fn a_paused_node_runs_nothing_until_resumed_and_keeps_its_connections() {
    let sim = Sim::new(SimConfig::with_seed(3));
    let ticks = Rc::new(Cell::new(0u32));
    let t = ticks.clone();
    let node = sim.start_node(spec(1), move || async move {
        loop {
            sesa_event::sleep(Duration::from_millis(10)).await;
            t.set(t.get() + 1);
        }
    });
    sim.run_for(Duration::from_millis(500));
    let before = ticks.get();
    assert!(before > 10, "{before}");
    assert!(sim.pause(node));
    sim.run_for(Duration::from_secs(5));
    assert_eq!(ticks.get(), before, "a paused node ran");
    assert!(sim.is_running(node));
    sim.resume(node);
    sim.run_for(Duration::from_millis(500));
    assert!(ticks.get() > before + 10, "{} after {before}", ticks.get());
}

/// Writes `byte` on `stream` once a tick, forever, and counts in `got` what it reads.
async fn chatter(mut stream: sesa_event::net::Stream, byte: &[u8], got: Rc<Cell<usize>>) {
    let mut buf = [0u8; 64];
    loop {
        let _ = stream.write_all(byte).await;
        if let Some(Ok(n)) =
            sesa_event::timeout(Duration::from_millis(10), stream.read(&mut buf)).await
        {
            got.set(got.get() + n);
        }
    }
}

#[test]
fn a_one_way_cut_holds_one_direction_until_healed() {
    let sim = Sim::new(SimConfig::with_seed(4));
    let (a, b) = (spec(1), spec(2));
    let server: SocketAddr = SocketAddr::new(b.ip.into(), 9000);
    // What each side has read: (bytes from the client, bytes from the server).
    let at_server = Rc::new(Cell::new(0usize));
    let at_client = Rc::new(Cell::new(0usize));
    let got = at_server.clone();
    sim.start_node(b.clone(), move || async move {
        let listener = sesa_event::tcp_listen(server).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        chatter(stream, b"s", got).await;
    });
    let got = at_client.clone();
    sim.start_node(a.clone(), move || async move {
        let stream = sesa_event::tcp_connect(server).await.unwrap();
        chatter(stream, b"c", got).await;
    });
    sim.run_for(Duration::from_millis(500));
    assert!(at_server.get() > 0 && at_client.get() > 0);
    // Cut from the client to the server only.
    sim.cut_one_way(a.ip, b.ip);
    sim.run_for(Duration::from_millis(100));
    let (server_before, client_before) = (at_server.get(), at_client.get());
    sim.run_for(Duration::from_secs(2));
    assert_eq!(at_server.get(), server_before, "bytes crossed the cut");
    assert!(
        at_client.get() > client_before + 10,
        "the other way stopped too"
    );
    sim.heal();
    sim.run_for(Duration::from_millis(500));
    assert!(
        at_server.get() > server_before,
        "held bytes not delivered after the heal"
    );
    assert!(sim.panics().is_empty(), "{:?}", sim.panics());
}
