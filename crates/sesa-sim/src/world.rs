//! The simulated world: nodes, their cores' loops, the virtual clock and the scheduler.
//!
//! # How a run advances
//! Every step the scheduler gathers the cores that have work (a woken task or a shipped
//! event), picks one with the seeded generator, and runs a *turn* there: a few events
//! and task polls, chosen at random between the inbox and the ready tasks. A turn costs
//! a little virtual time (`SimConfig::turn_cost`), so a core that spins still moves the
//! clock. When no core has work, the clock jumps to the next timer (a sleep's deadline,
//! a network delivery). Nothing else moves time or draws randomness, so a seed fixes the
//! whole run.
//!
//! # Many cores on one thread
//! The object model's current-core binding and the event layer's current platform are
//! per thread. Before a turn the scheduler binds the chosen core
//! ([`sesa_ebb::ParkedCore::unpark`]) and enters its platform; when the next turn is
//! another core's, it parks this one. Code above the platform sees what it sees on the
//! hosted runtime: it is on a core of a node, and alone on it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::Ipv4Addr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use sesa_ebb::{CoreBinding, CoreId, EbbNode, NodeConfig, ParkedCore};
use sesa_event::net::Net;
use sesa_event::parts::{IdleHandlers, TimerQueue, WakeList};
use sesa_event::platform::EnterGuard;
use sesa_event::{
    Event, EventError, IdleHandler, IdleHandlerId, Instant, LocalTask, Platform, ShipError,
};

use crate::net::{Close, Network, SimNet};
use crate::rng::Rng;

/// The virtual wall clock at the start of every run (2025-01-01): memcached's absolute
/// expiry times need one, and a fixed one keeps runs alike.
const UNIX_EPOCH_AT_START: u64 = 1_735_689_600;

/// How a simulation behaves; everything random in it comes from `seed`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of every random choice of the run.
    pub seed: u64,
    /// Virtual time a turn of a core costs: drawn between these.
    pub turn_cost: (Duration, Duration),
    /// One-way network latency of a write: drawn between these (a stream's bytes still
    /// arrive in order).
    pub latency: (Duration, Duration),
    /// The most events and task polls a turn runs.
    pub items_per_turn: u32,
    /// EBB ids per node.
    pub ebbs_max: usize,
}

impl SimConfig {
    /// The defaults, with this seed.
    pub fn with_seed(seed: u64) -> Self {
        SimConfig {
            seed,
            turn_cost: (Duration::from_micros(1), Duration::from_micros(5)),
            latency: (Duration::from_micros(20), Duration::from_micros(800)),
            items_per_turn: 8,
            ebbs_max: 1 << 12,
        }
    }
}

/// Names one life of a node: a node restarted with the same id gets a new key, and
/// anything of its previous life (timers, wakers, connections) is recognised as stale.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeKey(pub(crate) u64);

/// What to start on a simulated node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The node's name in reports (the executive's node id, usually).
    pub id: u32,
    /// Its cores.
    pub cores: usize,
    /// Its address on the simulated network.
    pub ip: Ipv4Addr,
}

/// How a node ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEnd {
    /// Its main future returned, or it called `sesa_event::stop` with this code.
    Exited(i32),
    /// The simulation killed it (`Sim::crash`).
    Crashed,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct TaskKey {
    node: NodeKey,
    core: u32,
    task: u64,
}

#[derive(Default)]
struct TaskSlot {
    future: Option<LocalTask>,
    queued: bool,
}

/// One simulated core: its tasks, inbox and idle handlers, and its parked binding.
struct CoreState {
    platform: Rc<SimCore>,
    parked: RefCell<Option<ParkedCore>>,
    tasks: RefCell<BTreeMap<u64, TaskSlot>>,
    ready: RefCell<VecDeque<u64>>,
    inbox: RefCell<VecDeque<Event>>,
    idle: IdleHandlers,
}

impl CoreState {
    fn has_work(&self) -> bool {
        !self.ready.borrow().is_empty() || !self.inbox.borrow().is_empty()
    }
}

/// One life of a simulated node.
pub(crate) struct SimNode {
    pub(crate) key: NodeKey,
    pub(crate) spec: NodeSpec,
    cores: Vec<CoreState>,
    /// Set by `stop` or the main future's end; the scheduler ends the node after the turn.
    exiting: Cell<Option<i32>>,
    /// Paused (as SIGSTOP does): none of its cores runs, and its timers wait.
    paused: Cell<bool>,
}

/// The core bound to the thread right now.
struct Bound {
    node: Rc<SimNode>,
    core: usize,
    binding: CoreBinding,
    entered: EnterGuard,
}

pub(crate) struct World {
    pub(crate) config: SimConfig,
    now: Cell<u64>,
    rng: RefCell<Rng>,
    timers: TimerQueue,
    woken: WakeList<TaskKey>,
    nodes: RefCell<BTreeMap<NodeKey, Rc<SimNode>>>,
    next_key: Cell<u64>,
    next_task: Cell<u64>,
    bound: RefCell<Option<Bound>>,
    pub(crate) net: Network,
    trace: Cell<u64>,
    turns: Cell<u64>,
    panics: RefCell<Vec<String>>,
    ended: RefCell<Vec<(u32, NodeEnd)>>,
}

impl World {
    pub(crate) fn now(&self) -> u64 {
        self.now.get()
    }

    pub(crate) fn random(&self) -> std::cell::RefMut<'_, Rng> {
        self.rng.borrow_mut()
    }

    /// A duration drawn between `range`'s ends, in nanoseconds.
    pub(crate) fn draw(&self, range: (Duration, Duration)) -> u64 {
        let (lo, hi) = (range.0.as_nanos() as u64, range.1.as_nanos() as u64);
        self.rng.borrow_mut().between(lo, hi)
    }

    /// Mixes `words` into the trace hash.
    pub(crate) fn record(&self, words: &[u64]) {
        let mut bytes = Vec::with_capacity(8 + words.len() * 8);
        bytes.extend_from_slice(&self.trace.get().to_le_bytes());
        for w in words {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        self.trace.set(xxhash_rust::xxh3::xxh3_64(&bytes));
    }

    /// Wakes `waker` when the clock reaches `at`.
    pub(crate) fn wake_at(&self, at: u64, waker: Waker) {
        self.timers.add(Instant::from_nanos(at), waker);
    }

    pub(crate) fn node(&self, key: NodeKey) -> Option<Rc<SimNode>> {
        self.nodes.borrow().get(&key).cloned()
    }

    pub(crate) fn node_at(&self, ip: Ipv4Addr) -> Option<Rc<SimNode>> {
        self.nodes
            .borrow()
            .values()
            .find(|n| n.spec.ip == ip)
            .cloned()
    }

    fn spawn(&self, node: &SimNode, core: usize, task: LocalTask) {
        let id = self.next_task.get();
        self.next_task.set(id + 1);
        let state = &node.cores[core];
        state.tasks.borrow_mut().insert(
            id,
            TaskSlot {
                future: Some(task),
                queued: true,
            },
        );
        state.ready.borrow_mut().push_back(id);
    }

    /// Moves woken tasks to their cores' ready queues (once each).
    fn collect_woken(&self) {
        for key in self.woken.take() {
            let Some(node) = self.node(key.node) else {
                continue; // A task of a node that has ended.
            };
            let state = &node.cores[key.core as usize];
            let mut tasks = state.tasks.borrow_mut();
            if let Some(slot) = tasks.get_mut(&key.task)
                && !slot.queued
            {
                slot.queued = true;
                state.ready.borrow_mut().push_back(key.task);
            }
        }
    }

    fn fire_due_timers(&self) {
        self.timers.wake_due(Instant::from_nanos(self.now.get()));
    }

    /// Binds `node`'s core `core` to the thread (parking whichever core was bound).
    fn switch_to(&self, node: &Rc<SimNode>, core: usize) {
        if let Some(b) = &*self.bound.borrow()
            && b.node.key == node.key
            && b.core == core
        {
            return;
        }
        self.unbind();
        let parked = node.cores[core]
            .parked
            .borrow_mut()
            .take()
            .expect("a core not bound to the thread is parked");
        let binding = match parked.unpark() {
            Ok(b) => b,
            Err((_, e)) => panic!("the simulator's thread was still bound: {e}"),
        };
        let entered = sesa_event::enter(node.cores[core].platform.clone());
        *self.bound.borrow_mut() = Some(Bound {
            node: node.clone(),
            core,
            binding,
            entered,
        });
    }

    /// Parks the core bound to the thread, if any.
    fn unbind(&self) {
        let bound = self.bound.borrow_mut().take();
        if let Some(b) = bound {
            drop(b.entered);
            let parked = b.binding.park();
            *b.node.cores[b.core].parked.borrow_mut() = Some(parked);
        }
    }

    /// Runs one turn of `node`'s core `core`.
    fn turn(&self, node: &Rc<SimNode>, core: usize) {
        self.switch_to(node, core);
        let state = &node.cores[core];
        let items = self
            .rng
            .borrow_mut()
            .between(1, self.config.items_per_turn.into());
        for _ in 0..items {
            let (events, tasks) = (state.inbox.borrow().len(), state.ready.borrow().len());
            if events + tasks == 0 {
                break;
            }
            let pick_event = tasks == 0 || (events > 0 && self.rng.borrow_mut().chance(0.5));
            if pick_event {
                // SAFETY: between two items of a turn no rep of this core is lent: the
                // event or poll before has returned, and `with` borrows cannot outlive it.
                #[allow(unsafe_code)]
                unsafe {
                    sesa_ebb::quiesce()
                };
                let event = state.inbox.borrow_mut().pop_front();
                let Some(event) = event else { break };
                self.record(&[self.now.get(), node.key.0, core as u64, 1]);
                if let Err(payload) = catch_unwind(AssertUnwindSafe(event)) {
                    self.panicked(node, core, &*payload);
                }
            } else {
                let id = state.ready.borrow_mut().pop_front();
                let Some(id) = id else { break };
                self.record(&[self.now.get(), node.key.0, core as u64, 2, id]);
                self.poll_task(node, core, id);
            }
            if node.exiting.get().is_some() {
                break;
            }
        }
    }

    fn poll_task(&self, node: &Rc<SimNode>, core: usize, id: u64) {
        let state = &node.cores[core];
        let future = {
            let mut tasks = state.tasks.borrow_mut();
            let Some(slot) = tasks.get_mut(&id) else {
                return;
            };
            slot.queued = false;
            slot.future.take()
        };
        let Some(mut future) = future else { return };
        let waker = self.woken.waker(TaskKey {
            node: node.key,
            core: core as u32,
            task: id,
        });
        let mut cx = Context::from_waker(&waker);
        let done = match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
            Ok(Poll::Ready(())) => true,
            Ok(Poll::Pending) => false,
            Err(payload) => {
                self.panicked(node, core, &*payload);
                true
            }
        };
        let mut tasks = state.tasks.borrow_mut();
        if done {
            tasks.remove(&id);
            drop(tasks);
            // Dropped on its core, with the platform current.
            drop(future);
        } else if let Some(slot) = tasks.get_mut(&id) {
            slot.future = Some(future);
        }
    }

    fn panicked(&self, node: &SimNode, core: usize, payload: &(dyn std::any::Any + Send)) {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-string payload".to_owned());
        self.panics.borrow_mut().push(format!(
            "node {} core {core} at {:?}: {message}",
            node.spec.id,
            Duration::from_nanos(self.now.get())
        ));
    }

    /// Runs each idle handler of every core once; whether any found work.
    fn run_idle_handlers(&self) -> bool {
        let nodes: Vec<Rc<SimNode>> = self.nodes.borrow().values().cloned().collect();
        let mut busy = false;
        for node in nodes.into_iter().filter(|n| !n.paused.get()) {
            for core in 0..node.cores.len() {
                if node.cores[core].idle.is_empty() {
                    continue;
                }
                self.switch_to(&node, core);
                busy |= node.cores[core].idle.run(|handler| {
                    catch_unwind(AssertUnwindSafe(handler))
                        .map_err(|payload| self.panicked(&node, core, &*payload))
                        .ok()
                });
            }
        }
        busy
    }

    /// Ends a node: its connections close (reset, for a crash), its tasks and events are
    /// dropped on their own cores, then its reps.
    fn end_node(&self, node: &Rc<SimNode>, end: NodeEnd) {
        self.nodes.borrow_mut().remove(&node.key);
        self.record(&[self.now.get(), node.key.0, 3]);
        let close = match end {
            NodeEnd::Crashed => Close::Reset,
            NodeEnd::Exited(_) => Close::Eof,
        };
        self.net.node_ended(self, node.key, close);
        for core in 0..node.cores.len() {
            self.switch_to(node, core);
            let state = &node.cores[core];
            // Taken out first: a destructor may spawn or ship (into the emptied queues,
            // which are cleared again below).
            for _ in 0..4 {
                let tasks = std::mem::take(&mut *state.tasks.borrow_mut());
                let events = std::mem::take(&mut *state.inbox.borrow_mut());
                let idle = state.idle.take_all();
                if tasks.is_empty() && events.is_empty() && idle.is_empty() {
                    break;
                }
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    drop(tasks);
                    drop(events);
                    drop(idle);
                }));
            }
            state.ready.borrow_mut().clear();
        }
        self.unbind();
        for state in &node.cores {
            // Unparked on this (now unbound) thread and dropped: the core's reps go.
            let parked = state.parked.borrow_mut().take();
            drop(parked);
        }
        self.ended.borrow_mut().push((node.spec.id, end));
    }
}

/// One core's platform under simulation.
pub(crate) struct SimCore {
    world: Weak<World>,
    node: Weak<SimNode>,
    node_key: NodeKey,
    core: CoreId,
    cores: usize,
    net: SimNet,
}

impl SimCore {
    fn world(&self) -> Rc<World> {
        self.world
            .upgrade()
            .expect("a simulated core outlived its simulation")
    }
}

impl Platform for SimCore {
    fn core(&self) -> CoreId {
        self.core
    }

    fn cores(&self) -> usize {
        self.cores
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(self.world().now())
    }

    fn unix_time(&self) -> u64 {
        UNIX_EPOCH_AT_START + self.world().now() / 1_000_000_000
    }

    fn spawn_local(&self, task: LocalTask) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        self.world().spawn(&node, self.core.index(), task);
    }

    fn ship(&self, core: CoreId, event: Event) -> Result<(), ShipError> {
        let Some(node) = self.node.upgrade() else {
            return Err(ShipError::new(EventError::Stopping, event));
        };
        let Some(state) = node.cores.get(core.index()) else {
            let cores = self.cores;
            return Err(ShipError::new(
                EventError::NoSuchCore { core, cores },
                event,
            ));
        };
        let world = self.world();
        if node.exiting.get().is_some() || world.node(self.node_key).is_none() {
            return Err(ShipError::new(EventError::Stopping, event));
        }
        state.inbox.borrow_mut().push_back(event);
        Ok(())
    }

    fn sleep_until(&self, deadline: Instant) -> LocalTask {
        Box::pin(Sleep {
            world: self.world.clone(),
            deadline: deadline.as_nanos(),
            armed: false,
        })
    }

    fn add_idle_handler(&self, handler: IdleHandler) -> IdleHandlerId {
        match self.node.upgrade() {
            Some(node) => node.cores[self.core.index()].idle.add(handler),
            None => IdleHandlerId(u64::MAX),
        }
    }

    fn remove_idle_handler(&self, id: IdleHandlerId) -> bool {
        self.node
            .upgrade()
            .is_some_and(|node| node.cores[self.core.index()].idle.remove(id))
    }

    fn fill_random(&self, buf: &mut [u8]) {
        self.world().random().fill(buf);
    }

    fn stop(&self, exit_code: i32) {
        if let Some(node) = self.node.upgrade()
            && node.exiting.get().is_none()
        {
            node.exiting.set(Some(exit_code));
        }
    }

    fn net(&self) -> &dyn Net {
        &self.net
    }
}

/// A sleep on the virtual clock.
pub(crate) struct Sleep {
    pub(crate) world: Weak<World>,
    pub(crate) deadline: u64,
    pub(crate) armed: bool,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(world) = self.world.upgrade() else {
            return Poll::Pending;
        };
        if world.now() >= self.deadline {
            return Poll::Ready(());
        }
        if !self.armed {
            // A timer wakes the task once at the deadline; a poll before it (another
            // wake-up of the same task) needs no second timer.
            world.wake_at(self.deadline, cx.waker().clone());
            self.armed = true;
        }
        Poll::Pending
    }
}

/// A deterministic simulation of sesa nodes on one thread.
///
/// ```
/// use std::time::Duration;
/// use sesa_sim::{NodeSpec, Sim, SimConfig};
///
/// let sim = Sim::new(SimConfig::with_seed(1));
/// let spec = NodeSpec { id: 1, cores: 2, ip: [10, 0, 0, 1].into() };
/// sim.start_node(spec, || async {
///     let other = sesa_event::CoreId::new(1);
///     let answer = sesa_event::spawn_on(other, || 6 * 7).await.unwrap();
///     sesa_event::sleep(Duration::from_secs(1)).await;
///     assert_eq!(answer, 42);
/// });
/// sim.run_for(Duration::from_secs(2));
/// assert!(sim.panics().is_empty());
/// assert_eq!(sim.running(), 0); // its main future returned, so the node exited
/// ```
pub struct Sim {
    world: Rc<World>,
}

impl Sim {
    /// A world with no nodes yet.
    pub fn new(config: SimConfig) -> Self {
        let rng = Rng::new(config.seed);
        let world = Rc::new(World {
            config,
            now: Cell::new(0),
            rng: RefCell::new(rng),
            timers: TimerQueue::new(),
            woken: WakeList::new(),
            nodes: RefCell::new(BTreeMap::new()),
            next_key: Cell::new(1),
            next_task: Cell::new(0),
            bound: RefCell::new(None),
            net: Network::default(),
            trace: Cell::new(0),
            turns: Cell::new(0),
            panics: RefCell::new(Vec::new()),
            ended: RefCell::new(Vec::new()),
        });
        world.record(&[world.config.seed]);
        Sim { world }
    }

    /// Starts a node and runs `main()` as a task on its core 0. When `main`'s future
    /// returns, the node exits (as a hosted runtime does).
    ///
    /// # Panics
    /// If another running node has the same address.
    pub fn start_node<F, Fut>(&self, spec: NodeSpec, main: F) -> NodeKey
    where
        F: FnOnce() -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let world = &self.world;
        assert!(
            world.node_at(spec.ip).is_none(),
            "two running nodes at {}",
            spec.ip
        );
        let key = NodeKey(world.next_key.get());
        world.next_key.set(key.0 + 1);
        world.record(&[world.now(), key.0, 0, u64::from(spec.id)]);
        let cores = spec.cores.max(1);
        let ebb = EbbNode::new(NodeConfig {
            cores,
            ebbs_max: world.config.ebbs_max,
        });
        world.unbind();
        let node = Rc::new_cyclic(|weak: &Weak<SimNode>| SimNode {
            key,
            spec: spec.clone(),
            cores: (0..cores)
                .map(|c| {
                    let binding = ebb
                        .bind(CoreId::new(c as u32))
                        .expect("a fresh node's core binds on an unbound thread");
                    CoreState {
                        platform: Rc::new(SimCore {
                            world: Rc::downgrade(world),
                            node: weak.clone(),
                            node_key: key,
                            core: CoreId::new(c as u32),
                            cores,
                            net: SimNet::new(Rc::downgrade(world), key, spec.ip),
                        }),
                        parked: RefCell::new(Some(binding.park())),
                        tasks: RefCell::new(BTreeMap::new()),
                        ready: RefCell::new(VecDeque::new()),
                        inbox: RefCell::new(VecDeque::new()),
                        idle: IdleHandlers::new(),
                    }
                })
                .collect(),
            exiting: Cell::new(None),
            paused: Cell::new(false),
        });
        world.nodes.borrow_mut().insert(key, node.clone());
        let weak = Rc::downgrade(&node);
        world.spawn(
            &node,
            0,
            Box::pin(async move {
                main().await;
                if let Some(node) = weak.upgrade()
                    && node.exiting.get().is_none()
                {
                    node.exiting.set(Some(0));
                }
            }),
        );
        key
    }

    /// Kills a node at once, as `kill -9` does: its peers' connections are reset and
    /// its memory is gone. `false` if it was not running.
    pub fn crash(&self, node: NodeKey) -> bool {
        let Some(n) = self.world.node(node) else {
            return false;
        };
        self.world.end_node(&n, NodeEnd::Crashed);
        true
    }

    /// Pauses a node, as SIGSTOP does: none of its cores runs (its timers and the bytes
    /// sent to it wait) until [`Sim::resume`]; its connections stay open. `false` if it
    /// is not running.
    pub fn pause(&self, node: NodeKey) -> bool {
        let Some(n) = self.world.node(node) else {
            return false;
        };
        self.world.record(&[self.world.now(), node.0, 9]);
        n.paused.set(true);
        true
    }

    /// Lets a paused node run again (SIGCONT).
    pub fn resume(&self, node: NodeKey) {
        if let Some(n) = self.world.node(node) {
            self.world.record(&[self.world.now(), node.0, 10]);
            n.paused.set(false);
        }
    }

    /// Cuts the network from `from` to `to` only: bytes `from` sends to `to` wait until
    /// [`Sim::heal`], while those `to` sends arrive; a connection attempt either way
    /// times out (a handshake needs both).
    pub fn cut_one_way(&self, from: Ipv4Addr, to: Ipv4Addr) {
        self.world.record(&[
            self.world.now(),
            11,
            u64::from(from.to_bits()),
            u64::from(to.to_bits()),
        ]);
        self.world.net.cut_one_way(from, to);
    }

    /// Whether this life of a node is running.
    pub fn is_running(&self, node: NodeKey) -> bool {
        self.world.node(node).is_some()
    }

    /// How many nodes are running.
    pub fn running(&self) -> usize {
        self.world.nodes.borrow().len()
    }

    /// Nodes that have ended, by id, in the order they ended.
    pub fn ended(&self) -> Vec<(u32, NodeEnd)> {
        self.world.ended.borrow().clone()
    }

    /// Cuts the network between `a` and `b` both ways: bytes already sent and new ones
    /// wait until [`Sim::heal`], and connection attempts time out.
    pub fn partition(&self, a: Ipv4Addr, b: Ipv4Addr) {
        self.world.record(&[
            self.world.now(),
            4,
            u64::from(a.to_bits()),
            u64::from(b.to_bits()),
        ]);
        self.world.net.partition(a, b);
    }

    /// Resets every connection between `a` and `b`: each side reads an error after the
    /// bytes already delivered, and writes fail. Returns how many were reset.
    pub fn reset(&self, a: Ipv4Addr, b: Ipv4Addr) -> usize {
        self.world.record(&[
            self.world.now(),
            8,
            u64::from(a.to_bits()),
            u64::from(b.to_bits()),
        ]);
        self.world.net.reset_between(&self.world, a, b)
    }

    /// Ends every partition; held bytes are delivered.
    pub fn heal(&self) {
        self.world.record(&[self.world.now(), 5]);
        self.world.net.heal();
    }

    /// The virtual time since the start.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.world.now())
    }

    /// A random number in `0..n` from the run's generator (for workloads and fault
    /// schedules, so that they replay with the seed too).
    pub fn below(&self, n: u64) -> u64 {
        self.world.random().below(n)
    }

    /// The hash of everything scheduled so far: two runs with the same seed and the
    /// same workload have the same hash; a different one means the run diverged.
    pub fn trace_hash(&self) -> u64 {
        self.world.trace.get()
    }

    /// Turns run so far.
    pub fn turns(&self) -> u64 {
        self.world.turns.get()
    }

    /// Panics caught in node code so far (each a bug), with node, core and time.
    pub fn panics(&self) -> Vec<String> {
        self.world.panics.borrow().clone()
    }

    /// Runs until the virtual clock has advanced by `d`, or nothing is left to run.
    pub fn run_for(&self, d: Duration) {
        let until = self.world.now().saturating_add(d.as_nanos() as u64);
        while self.world.now() < until {
            if !self.step(until) {
                break;
            }
        }
    }

    /// Runs until `done()` holds (checked between turns) or `limit` of virtual time has
    /// passed; whether `done()` held.
    pub fn run_until(&self, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let until = self.world.now().saturating_add(limit.as_nanos() as u64);
        while !done() {
            if self.world.now() >= until || !self.step(until) {
                return done();
            }
        }
        true
    }

    /// One scheduling step; `false` when nothing is left before `until`.
    fn step(&self, until: u64) -> bool {
        let world = &self.world;
        world.collect_woken();
        let runnable: Vec<(Rc<SimNode>, usize)> = world
            .nodes
            .borrow()
            .values()
            .filter(|n| !n.paused.get())
            .flat_map(|n| {
                (0..n.cores.len())
                    .filter(|&c| n.cores[c].has_work())
                    .map(move |c| (n.clone(), c))
            })
            .collect();
        if runnable.is_empty() {
            if world.run_idle_handlers() {
                world.collect_woken();
            }
            let next = world.timers.next_deadline().map(Instant::as_nanos);
            match next {
                Some(at) if at <= until => {
                    world.now.set(world.now.get().max(at));
                    world.fire_due_timers();
                    return true;
                }
                _ => {
                    world.now.set(world.now.get().max(until));
                    return false;
                }
            }
        }
        let pick = world.rng.borrow_mut().below(runnable.len() as u64) as usize;
        let (node, core) = &runnable[pick];
        world.turn(node, *core);
        world.turns.set(world.turns.get() + 1);
        let cost = world.draw(world.config.turn_cost);
        world.now.set(world.now.get() + cost);
        world.fire_due_timers();
        let exiting: Vec<Rc<SimNode>> = world
            .nodes
            .borrow()
            .values()
            .filter(|n| n.exiting.get().is_some())
            .cloned()
            .collect();
        for node in exiting {
            let code = node.exiting.get().unwrap_or(0);
            world.end_node(&node, NodeEnd::Exited(code));
        }
        true
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // Every node ends on its own cores (their tasks may still hold reps and sockets).
        let nodes: Vec<Rc<SimNode>> = self.world.nodes.borrow().values().cloned().collect();
        for node in nodes {
            self.world.end_node(&node, NodeEnd::Exited(0));
        }
        self.world.unbind();
        self.world.timers.clear();
    }
}
