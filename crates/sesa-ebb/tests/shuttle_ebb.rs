//! Randomized concurrency checks of the miss and reclaim protocols under shuttle, which
//! schedules the simulated cores' threads differently in each iteration, switching at
//! every lock and atomic the object model uses.
//!
//! Run with `cargo test -p sesa-ebb --features shuttle --test shuttle_ebb`.
#![cfg(feature = "shuttle")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use sesa_ebb::{
    CoreId, EbbError, EbbNode, EbbRef, EbbRoot, Install, MissContext, MissError, NodeConfig,
    NodeShared, PerCore,
};
use shuttle::sync::Mutex;
use shuttle::thread;

const ITERATIONS: usize = 2_000;

/// Spawns a simulated core. Shuttle's default coroutine stacks are too small for a
/// core's binding (which holds the first translation-table slots inline).
fn spawn_core<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::Builder::new().stack_size(1 << 20).spawn(f).unwrap()
}

#[test]
fn racing_misses_build_one_node_rep_and_one_rep_per_core() {
    shuttle::check_random(
        || {
            let node = EbbNode::new(NodeConfig::with_cores(3));
            let inits = Arc::new(AtomicUsize::new(0));
            let counted = inits.clone();
            let shared_root = Arc::new(NodeShared::new(move || {
                counted.fetch_add(1, SeqCst);
                7u32
            }));
            let shared = node.create_shared(shared_root).unwrap();
            let (per_core, per_core_root) = PerCore::create_on(&node, |core| core.get()).unwrap();
            let handles: Vec<_> = (0..3u32)
                .map(|c| {
                    let node = node.clone();
                    spawn_core(move || {
                        let _bound = node.bind(CoreId::new(c)).unwrap();
                        assert_eq!(per_core.with(|v| *v), c);
                        let addr = shared.with(|v| v as *const u32 as usize);
                        assert_eq!(per_core.with(|v| *v), c, "the hit path agrees");
                        addr
                    })
                })
                .collect();
            let addrs: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert!(addrs.windows(2).all(|w| w[0] == w[1]), "one node rep");
            assert_eq!(inits.load(SeqCst), 1, "built once despite racing misses");
            assert_eq!(per_core_root.reps().count(), 3);
        },
        ITERATIONS,
    );
}

struct Counted {
    value: u32,
    alive: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, SeqCst);
    }
}

struct CountedRoot {
    value: u32,
    alive: Arc<AtomicUsize>,
}

impl EbbRoot for CountedRoot {
    type Rep = Counted;
    fn miss(&self, _cx: &MissContext<'_>) -> Result<Install<Counted>, MissError> {
        self.alive.fetch_add(1, SeqCst);
        Ok(Install::local(Box::new(Counted {
            value: self.value,
            alive: self.alive.clone(),
        })))
    }
}

#[test]
fn destroy_racing_with_accesses_never_reaches_a_reused_id_and_drops_each_rep_once() {
    shuttle::check_random(
        || {
            let node = EbbNode::new(NodeConfig::with_cores(2));
            let alive_old = Arc::new(AtomicUsize::new(0));
            let alive_new = Arc::new(AtomicUsize::new(0));
            let old = node
                .create(CountedRoot {
                    value: 1,
                    alive: alive_old.clone(),
                })
                .unwrap();
            let published: Arc<Mutex<Option<EbbRef<Counted>>>> = Arc::new(Mutex::new(None));
            let cores: Vec<_> = (0..2u32)
                .map(|c| {
                    let (node, published) = (node.clone(), published.clone());
                    spawn_core(move || {
                        let _bound = node.bind(CoreId::new(c)).unwrap();
                        for _ in 0..3 {
                            // SAFETY: between events; nothing is borrowed.
                            unsafe { sesa_ebb::quiesce() };
                            match old.try_with(|r| r.value) {
                                Ok(v) => assert_eq!(v, 1, "stale ref reached another EBB"),
                                Err(EbbError::NoSuchEbb { .. }) => {}
                                Err(e) => panic!("{e}"),
                            }
                            let new = *published.lock().unwrap();
                            if let Some(new) = new {
                                assert_eq!(new.with(|r| r.value), 2);
                            }
                            thread::yield_now();
                        }
                    })
                })
                .collect();
            node.destroy(old.id()).unwrap();
            let new = node
                .create(CountedRoot {
                    value: 2,
                    alive: alive_new.clone(),
                })
                .unwrap();
            *published.lock().unwrap() = Some(new);
            for core in cores {
                core.join().unwrap();
            }
            // Every rep built was dropped exactly once (reclaimed, or at unbind).
            assert_eq!(alive_old.load(SeqCst), 0);
            assert_eq!(alive_new.load(SeqCst), 0);
        },
        ITERATIONS,
    );
}
