//! The object model on plain threads standing in for cores: templates, hand-written
//! miss handlers, errors, and the lifecycle (destroy, reclaim, id reuse).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::thread;

use sesa_ebb::{
    CoreBinding, CoreId, EbbError, EbbNode, EbbRef, EbbRoot, Install, MissContext, MissError,
    NodeConfig, NodeShared, PerCore,
};
use static_assertions::{assert_impl_all, assert_not_impl_any};

assert_not_impl_any!(CoreBinding: Send, Sync);
assert_impl_all!(EbbRef<Rc<Cell<u8>>>: Send, Sync, Copy);

fn node(cores: usize) -> Arc<EbbNode> {
    EbbNode::new(NodeConfig::with_cores(cores))
}

/// Runs `f(core)` on one thread per core, each bound to its core, and waits for all.
fn on_each_core(node: &Arc<EbbNode>, f: impl Fn(CoreId) + Sync) {
    thread::scope(|s| {
        for c in 0..node.cores() {
            let (node, f) = (node.clone(), &f);
            s.spawn(move || {
                let core = CoreId::new(c as u32);
                let _bound = node.bind(core).unwrap();
                f(core);
            });
        }
    });
}

#[test]
fn per_core_reps_are_created_lazily_one_per_core_and_enumerable() {
    let node = node(4);
    let created = Arc::new(AtomicUsize::new(0));
    let made = created.clone();
    let (ebb, root) = PerCore::create_on(&node, move |core| {
        made.fetch_add(1, SeqCst);
        (core, AtomicI64::new(0))
    })
    .unwrap();
    assert_eq!(created.load(SeqCst), 0, "no rep before any access");
    assert_eq!(root.reps().count(), 0);

    // Only cores 1 and 3 touch it.
    on_each_core(&node, |core| {
        if core.get() % 2 == 1 {
            for _ in 0..1000 {
                ebb.with(|(owner, n)| {
                    assert_eq!(*owner, core, "a core only ever reaches its own rep");
                    n.store(n.load(Relaxed) + 1, Relaxed);
                });
            }
        }
    });
    assert_eq!(created.load(SeqCst), 2, "one rep per core that accessed it");
    let cores: Vec<u32> = root.reps().map(|(c, _)| c.get()).collect();
    assert_eq!(cores, [1, 3]);
    let total: i64 = root.reps().map(|(_, (_, n))| n.load(Relaxed)).sum();
    assert_eq!(total, 2000);
}

#[test]
fn node_shared_maps_one_rep_on_every_core() {
    let node = node(4);
    let inits = Arc::new(AtomicUsize::new(0));
    let counted = inits.clone();
    let root = Arc::new(NodeShared::new(move || {
        counted.fetch_add(1, SeqCst);
        AtomicI64::new(0)
    }));
    let ebb = node.create_shared(root.clone()).unwrap();
    let addresses = std::sync::Mutex::new(Vec::new());
    on_each_core(&node, |_| {
        let addr = ebb.with(|rep| {
            rep.fetch_add(1, SeqCst);
            rep as *const AtomicI64 as usize
        });
        addresses.lock().unwrap().push(addr);
    });
    assert_eq!(inits.load(SeqCst), 1, "the shared rep is built once");
    let addresses = addresses.into_inner().unwrap();
    assert!(addresses.windows(2).all(|w| w[0] == w[1]), "{addresses:?}");
    assert_eq!(root.rep().unwrap().load(SeqCst), 4);
}

/// A hand-written handler: core 0 gets the home rep, cores 1-2 get a forwarding rep that
/// names the home core, core 3 is refused.
struct Homed;

enum HomedRep {
    Home(Cell<u32>),
    Forward(CoreId),
}

impl EbbRoot for Homed {
    type Rep = HomedRep;
    fn miss(&self, cx: &MissContext<'_>) -> Result<Install<HomedRep>, MissError> {
        match cx.core().get() {
            0 => Ok(Install::local(Box::new(HomedRep::Home(Cell::new(0))))),
            3 => Err(MissError::new("core 3 is not allowed here")),
            _ => Ok(Install::local(Box::new(HomedRep::Forward(CoreId::new(0))))),
        }
    }
}

#[test]
fn hand_written_handler_installs_home_forwarding_or_refuses() {
    let node = node(4);
    let ebb = node.create(Homed).unwrap();
    on_each_core(&node, |core| match core.get() {
        0 => ebb.with(|rep| match rep {
            HomedRep::Home(n) => n.set(n.get() + 1),
            HomedRep::Forward(_) => panic!("core 0 is home"),
        }),
        3 => {
            let error = ebb.try_with(|_| ()).unwrap_err();
            assert!(
                matches!(&error, EbbError::MissRefused { core, .. } if core.get() == 3),
                "{error}"
            );
            assert!(
                error.to_string().contains("core 3 is not allowed"),
                "{error}"
            );
            // A refusal is not cached: the next access asks the handler again.
            assert!(ebb.try_with(|_| ()).is_err());
        }
        _ => ebb.with(|rep| assert!(matches!(rep, HomedRep::Forward(c) if c.get() == 0))),
    });
}

#[test]
fn with_panics_with_the_miss_error_when_the_miss_fails() {
    let node = node(4);
    let ebb = node.create(Homed).unwrap();
    let message = thread::scope(|s| {
        s.spawn(|| {
            let _bound = node.bind(CoreId::new(3)).unwrap();
            std::panic::catch_unwind(|| ebb.with(|_| ())).unwrap_err()
        })
        .join()
        .unwrap()
    });
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.contains("refused core 3"), "{message}");
}

#[test]
fn access_off_a_core_is_an_error() {
    let node = node(1);
    let (ebb, _) = PerCore::create_on(&node, |_| 1u8).unwrap();
    assert!(matches!(ebb.try_with(|_| ()), Err(EbbError::NotOnCore)));
    assert!(matches!(EbbNode::current(), Err(EbbError::NotOnCore)));
    assert_eq!(sesa_ebb::current_core(), None);
}

#[test]
fn binding_rules_are_enforced() {
    let node = node(2);
    let bound = node.bind(CoreId::new(0)).unwrap();
    assert_eq!(sesa_ebb::current_core(), Some(CoreId::new(0)));
    assert!(matches!(
        node.bind(CoreId::new(1)),
        Err(EbbError::Bind { .. })
    ));
    thread::scope(|s| {
        s.spawn(|| {
            let again = node.bind(CoreId::new(0));
            assert!(
                matches!(again, Err(EbbError::Bind { .. })),
                "core 0 is taken"
            );
            let far = node.bind(CoreId::new(2));
            assert!(matches!(far, Err(EbbError::Bind { .. })), "no core 2");
        });
    });
    drop(bound);
    thread::scope(|s| {
        s.spawn(|| {
            node.bind(CoreId::new(0)).unwrap();
        });
    });
}

#[test]
fn lookup_checks_the_rep_type() {
    let node = node(1);
    let (ebb, _) = PerCore::create_on(&node, |_| 7u32).unwrap();
    let same: EbbRef<u32> = node.lookup(ebb.id()).unwrap();
    assert_eq!(same, ebb);
    let wrong = node.lookup::<u64>(ebb.id());
    assert!(
        matches!(wrong, Err(EbbError::TypeMismatch { .. })),
        "{wrong:?}"
    );
    let root = node.root::<NodeShared<u32>>(ebb.id());
    assert!(matches!(root, Err(EbbError::RootTypeMismatch { .. })));
    assert!(node.root::<PerCore<u32>>(ebb.id()).is_ok());
}

#[test]
fn the_id_limit_is_enforced_and_counts_unreclaimed_ebbs() {
    let node = EbbNode::new(NodeConfig {
        cores: 1,
        ebbs_max: 3,
    });
    let _bound = node.bind(CoreId::new(0)).unwrap();
    let ids: Vec<_> = (0..3)
        .map(|i| PerCore::create(move |_| i).unwrap().0)
        .collect();
    assert!(matches!(
        PerCore::create(|_| 9),
        Err(EbbError::IdsExhausted { limit: 3 })
    ));
    ids[0].destroy().unwrap();
    assert!(
        PerCore::create(|_| 9).is_err(),
        "destroyed but not reclaimed still counts"
    );
    // SAFETY: no rep is borrowed on this thread.
    unsafe { sesa_ebb::quiesce() };
    assert!(PerCore::create(|_| 9).is_ok());
}

/// A rep that records the thread that drops it.
struct Tracked {
    value: u32,
    drops: Arc<std::sync::Mutex<Vec<(u32, thread::ThreadId)>>>,
    _not_send: Rc<()>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops
            .lock()
            .unwrap()
            .push((self.value, thread::current().id()));
    }
}

struct TrackedRoot {
    value: u32,
    drops: Arc<std::sync::Mutex<Vec<(u32, thread::ThreadId)>>>,
}

impl EbbRoot for TrackedRoot {
    type Rep = Tracked;
    fn miss(&self, _cx: &MissContext<'_>) -> Result<Install<Tracked>, MissError> {
        Ok(Install::local(Box::new(Tracked {
            value: self.value,
            drops: self.drops.clone(),
            _not_send: Rc::new(()),
        })))
    }
}

#[test]
fn destroy_drops_reps_on_their_own_cores_and_reuses_the_id_safely() {
    let node = node(2);
    let drops = Arc::new(std::sync::Mutex::new(Vec::new()));
    let old = node
        .create(TrackedRoot {
            value: 1,
            drops: drops.clone(),
        })
        .unwrap();
    // Two cores, each a thread that serves requests in order, like an event loop.
    let (to_core, from_main): (Vec<_>, Vec<_>) = (0..2)
        .map(|_| std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>())
        .unzip();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(u32, thread::ThreadId)>();
    let handles: Vec<_> = from_main
        .into_iter()
        .enumerate()
        .map(|(c, rx)| {
            let node = node.clone();
            thread::spawn(move || {
                let _bound = node.bind(CoreId::new(c as u32)).unwrap();
                for event in rx {
                    // Before each event: a quiescent point, as in the hosted loop.
                    // SAFETY: no rep is borrowed between events.
                    unsafe { sesa_ebb::quiesce() };
                    event();
                }
            })
        })
        .collect();
    type Probe = Arc<dyn Fn() -> (u32, thread::ThreadId) + Send + Sync>;
    let run_everywhere = |f: Probe| {
        for tx in &to_core {
            let (done, f) = (done_tx.clone(), f.clone());
            tx.send(Box::new(move || done.send(f()).unwrap())).unwrap();
        }
        (0..to_core.len())
            .map(|_| {
                done_rx
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .expect("a core died or hung")
            })
            .collect::<Vec<_>>()
    };
    let seen = run_everywhere(Arc::new(move || {
        (old.with(|r| r.value), thread::current().id())
    }));
    assert!(seen.iter().all(|(v, _)| *v == 1));
    let core_threads: Vec<_> = seen.iter().map(|(_, t)| *t).collect();

    node.destroy(old.id()).unwrap();
    assert!(node.destroy(old.id()).is_err(), "destroy is not repeatable");
    assert_eq!(node.live_ebbs(), 0);
    // Each core drops its rep at its next quiescent point, on its own thread.
    let stale = run_everywhere(Arc::new(move || {
        let r = old.try_with(|r| r.value);
        assert!(matches!(r, Err(EbbError::NoSuchEbb { .. })), "{r:?}");
        (0, thread::current().id())
    }));
    assert_eq!(stale.len(), 2);
    let dropped = drops.lock().unwrap().clone();
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    for (_, t) in &dropped {
        assert!(core_threads.contains(t), "reps are dropped on their cores");
    }
    assert_eq!(node.dying_ebbs(), 0);

    // The index is free again: the next EBB reuses it with a new generation, and the
    // stale reference can never reach its reps.
    let new = node
        .create(TrackedRoot {
            value: 2,
            drops: drops.clone(),
        })
        .unwrap();
    assert_eq!(new.id().index(), old.id().index());
    assert_ne!(new.id().generation(), old.id().generation());
    let after = run_everywhere(Arc::new(move || {
        assert!(
            old.try_with(|r| r.value).is_err(),
            "stale ref reached a rep"
        );
        (new.with(|r| r.value), thread::current().id())
    }));
    assert!(after.iter().all(|(v, _)| *v == 2));

    drop(to_core);
    handles.into_iter().for_each(|h| h.join().unwrap());
    // Unbinding dropped the new EBB's reps too.
    assert_eq!(drops.lock().unwrap().len(), 4);
}

#[test]
fn an_index_is_not_reused_until_every_core_reclaimed() {
    let node = node(2);
    let _core0 = node.bind(CoreId::new(0)).unwrap();
    let (a, _) = PerCore::create(|_| 1u8).unwrap();
    a.with(|_| ());
    a.destroy().unwrap();
    // SAFETY: no rep is borrowed.
    assert_eq!(unsafe { sesa_ebb::quiesce() }, 1, "core 0 dropped its rep");
    let (b, _) = PerCore::create(|_| 2u8).unwrap();
    assert_ne!(
        b.id().index(),
        a.id().index(),
        "core 1 has not reclaimed yet"
    );
    thread::scope(|s| {
        s.spawn(|| {
            let _core1 = node.bind(CoreId::new(1)).unwrap();
            // SAFETY: no rep is borrowed.
            assert_eq!(unsafe { sesa_ebb::quiesce() }, 0, "core 1 never had a rep");
        });
    });
    let (c, _) = PerCore::create(|_| 3u8).unwrap();
    assert_eq!(c.id().index(), a.id().index());
    assert_eq!(c.with(|v| *v), 3);
    assert!(a.try_with(|_| ()).is_err());
}

/// A handler that touches its own EBB: the nested miss installs first, and the outer
/// candidate is dropped rather than overwriting it.
struct SelfReferential {
    me: std::sync::OnceLock<EbbRef<u32>>,
    built: AtomicUsize,
}

impl EbbRoot for SelfReferential {
    type Rep = u32;
    fn miss(&self, _cx: &MissContext<'_>) -> Result<Install<u32>, MissError> {
        let n = self.built.fetch_add(1, SeqCst) as u32;
        if n == 0 {
            let inner = self.me.get().unwrap().with(|v| *v);
            assert_eq!(inner, 1);
        }
        Ok(Install::local(Box::new(n)))
    }
}

#[test]
fn a_nested_miss_on_the_same_ebb_wins_and_the_outer_candidate_is_dropped() {
    let node = node(1);
    let _bound = node.bind(CoreId::new(0)).unwrap();
    let root = Arc::new(SelfReferential {
        me: std::sync::OnceLock::new(),
        built: AtomicUsize::new(0),
    });
    let ebb = node.create_shared(root.clone()).unwrap();
    root.me.set(ebb).unwrap();
    assert_eq!(
        ebb.with(|v| *v),
        1,
        "the nested (second) candidate was installed"
    );
    assert_eq!(ebb.with(|v| *v), 1);
    assert_eq!(root.built.load(SeqCst), 2);
}

/// Ids past the slots kept inline in the core binding live in the heap part of the
/// table; both parts serve, reclaim and reuse alike.
#[test]
fn many_ebbs_use_the_inline_and_heap_parts_of_the_table_alike() {
    const N: u64 = 1_500;
    let node = node(2);
    let ebbs: Vec<_> = (0..N)
        .map(|i| PerCore::create_on(&node, move |_| i).unwrap().0)
        .collect();
    assert!(
        ebbs.iter().any(|e| e.id().index() >= 1024),
        "reaches the heap part"
    );
    let ebbs = Arc::new(ebbs);
    on_each_core(&node, |_| {
        for (i, ebb) in ebbs.iter().enumerate() {
            assert_eq!(ebb.with(|v| *v), i as u64);
        }
    });
    for ebb in ebbs.iter() {
        node.destroy(ebb.id()).unwrap();
    }
    on_each_core(&node, |_| {
        // These threads are new bindings: the first ones dropped their reps when they
        // unbound, so there is nothing left to drop, only destructions to acknowledge.
        // SAFETY: no rep is borrowed.
        assert_eq!(unsafe { sesa_ebb::quiesce() }, 0);
        for ebb in ebbs.iter() {
            assert!(ebb.try_with(|_| ()).is_err());
        }
    });
    assert_eq!(node.dying_ebbs(), 0);
    let again: Vec<_> = (0..N)
        .map(|i| PerCore::create_on(&node, move |_| i + 10_000).unwrap().0)
        .collect();
    on_each_core(&node, |_| {
        for (i, ebb) in again.iter().enumerate() {
            assert_eq!(ebb.with(|v| *v), i as u64 + 10_000);
        }
        for old in ebbs.iter() {
            assert!(
                old.try_with(|_| ()).is_err(),
                "a stale ref reached a reused index"
            );
        }
    });
}

#[test]
fn static_ids_are_known_in_advance_claimed_once_and_never_reused() {
    use sesa_ebb::{EbbId, STATIC_INDICES};
    let node = node(1);
    let _bound = node.bind(CoreId::new(0)).unwrap();
    let root = Arc::new(NodeShared::new(|| 42u32));
    let ebb = node.create_static(3, root.clone()).unwrap();
    assert_eq!(
        ebb.id(),
        EbbId::static_id(3),
        "the id is known without asking"
    );
    assert_eq!(ebb.with(|v| *v), 42);
    let again = node.create_static(3, Arc::new(NodeShared::new(|| 0u32)));
    assert!(matches!(
        again,
        Err(EbbError::StaticIdUnavailable { index: 3 })
    ));
    let out_of_range = node.create_static(STATIC_INDICES, Arc::new(NodeShared::new(|| 0u32)));
    assert!(matches!(
        out_of_range,
        Err(EbbError::StaticIdUnavailable { .. })
    ));
    // Dynamic ids never land on static indices.
    for _ in 0..40 {
        let (e, _) = PerCore::create(|_| 0u8).unwrap();
        assert!(e.id().index() >= STATIC_INDICES);
    }
    // Destroyed, a static index is retired: neither claimable again nor reused.
    ebb.destroy().unwrap();
    // SAFETY: no rep is borrowed.
    unsafe { sesa_ebb::quiesce() };
    assert!(
        node.create_static(3, Arc::new(NodeShared::new(|| 0u32)))
            .is_err()
    );
    assert!(ebb.try_with(|_| ()).is_err());
}

assert_not_impl_any!(sesa_ebb::ParkedCore: Send, Sync);

/// Counts the drops of a rep.
struct Counted(u32, Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_add(1, SeqCst);
    }
}

/// Makes each core's `Counted` rep, owned by that core's table.
struct CountedRoot {
    value: u32,
    created: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl EbbRoot for CountedRoot {
    type Rep = Counted;
    fn miss(&self, cx: &MissContext<'_>) -> Result<Install<Counted>, MissError> {
        self.created.fetch_add(1, SeqCst);
        let value = self.value + cx.core().get();
        Ok(Install::local(Box::new(Counted(
            value,
            self.dropped.clone(),
        ))))
    }
}

#[test]
fn parked_cores_of_two_nodes_take_turns_on_one_thread() {
    // Two nodes of two cores each, all four cores on this one thread: unpark one, use
    // it, park it, go to the next. Each core keeps its own reps across turns, in the
    // inline slots and past them.
    const EBBS: u32 = 600;
    let (created, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let nodes = [node(2), node(2)];
    let mut parked = Vec::new();
    let mut ebbs = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for c in 0..2 {
            parked.push((n, node.bind(CoreId::new(c)).unwrap().park()));
        }
        let mine: Vec<EbbRef<Counted>> = (0..EBBS)
            .map(|i| {
                node.create(CountedRoot {
                    value: n as u32 * 1_000_000 + i * 10,
                    created: created.clone(),
                    dropped: dropped.clone(),
                })
                .unwrap()
            })
            .collect();
        ebbs.push(mine);
    }
    for _round in 0..3 {
        for (n, core) in std::mem::take(&mut parked) {
            let c = core.core().get();
            let bound = core.unpark().ok().unwrap();
            for (i, ebb) in ebbs[n].iter().enumerate() {
                let want = n as u32 * 1_000_000 + i as u32 * 10 + c;
                assert_eq!(ebb.with(|rep| rep.0), want);
            }
            // A second core cannot come onto a bound thread.
            let other = nodes[1 - n].bind(CoreId::new(0));
            assert!(other.is_err());
            parked.push((n, bound.park()));
        }
    }
    // One rep per EBB per core, made by the first access and kept afterwards.
    assert_eq!(created.load(SeqCst), 2 * 2 * EBBS as usize);
    assert_eq!(dropped.load(SeqCst), 0);
    // Dropping a parked core drops its reps.
    drop(parked);
    assert_eq!(dropped.load(SeqCst), 2 * 2 * EBBS as usize);
    // And frees its core for a new binding.
    drop(nodes[0].bind(CoreId::new(1)).unwrap());
}
