//! The native event runtime: `sesa-event`'s platform seam on the bare machine, one
//! non-preemptive loop per core (the boot CPU is core 0; each application processor runs
//! the loop of its core), with the same semantics as the hosted runtime: shipped events
//! run in order, never inline (each core's inbox is a FIFO other cores push to); tasks
//! are polled when woken; `quiesce` runs before every event; a sleep wakes at its
//! deadline on the calibrated clock; `stop` ends every core's loop with an exit code.
//!
//! The network, when the machine has one, belongs to core 0 and is polled every turn of
//! its loop (`net.rs`); the other cores' shared listeners are given no connections (core
//! 0 takes them all and ships work out), and their other socket operations fail saying
//! so. Without a network, `net()` refuses every operation with a clear error.
//!
//! An idle core sleeps in `hlt` until its next timer (the APIC's one-shot timer), a
//! wake-up IPI (sent by a core that ships it an event, wakes one of its tasks, or stops
//! the loops), the network device's interrupt (on core 0), or a nap's end (100 ms, a
//! bound; 200 µs on a network core without a routable interrupt, which must poll). A
//! core sleeps only after 2 ms without work: under load nothing sleeps, the loops poll.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::task::{Context, Poll};

use sesa_ebb::{CoreId, EbbNode, NodeConfig};
use sesa_event::net::{Accepted, Connecting, Net, NetError, TcpListener};
use sesa_event::parts::{IdleHandlers, TimerQueue, WakeList};
use sesa_event::{
    Event, EventError, IdleHandler, IdleHandlerId, Instant, LocalTask, Platform, ShipError,
};

use crate::cpu::{clock, entropy};
use crate::net::NativeNet;

/// What the cores share: their inboxes and the stop code.
struct Shared {
    inboxes: Vec<spinning_top::Spinlock<VecDeque<Event>>>,
    /// `i32::MIN` while running; then the exit code.
    stop: core::sync::atomic::AtomicI64,
    /// Application processors whose loop has ended.
    finished: core::sync::atomic::AtomicUsize,
    /// Cores asleep in `hlt` (a ship to one sends it a wake-up IPI).
    sleeping: Vec<core::sync::atomic::AtomicBool>,
    /// Whether the machine has a network (served by core 0).
    networked: bool,
}

const RUNNING: i64 = i64::MIN;

impl Shared {
    /// After work was put where core `index` looks (its inbox, its wake list): a
    /// wake-up IPI if it has said it sleeps. The fence orders that put before the look
    /// at its flag, as its own store of the flag comes before its last look for work
    /// (`sleep`): one of the two sees the other.
    fn wake_if_asleep(&self, index: usize) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        if self.sleeping[index].load(core::sync::atomic::Ordering::SeqCst) {
            crate::cpu::apic::wake(index);
        }
    }

    fn stopped(&self) -> Option<i32> {
        match self.stop.load(core::sync::atomic::Ordering::Acquire) {
            RUNNING => None,
            code => Some(code as i32),
        }
    }
}

/// One core's loop state and its platform.
struct NativeCore {
    core: CoreId,
    shared: Arc<Shared>,
    tasks: RefCell<BTreeMap<u64, Option<LocalTask>>>,
    next_task: Cell<u64>,
    woken: WakeList<u64>,
    timers: Rc<TimerQueue>,
    idle: IdleHandlers,
    net: Option<NativeNet>,
}

impl NativeCore {
    fn spawn(&self, task: LocalTask) {
        let id = self.next_task.get();
        self.next_task.set(id + 1);
        self.tasks.borrow_mut().insert(id, Some(task));
        self.woken.push(id);
    }

    fn poll_task(&self, id: u64) {
        let task = match self.tasks.borrow_mut().get_mut(&id) {
            Some(slot) => slot.take(),
            None => return,
        };
        let Some(mut task) = task else { return };
        let waker = self.woken.waker(id);
        let ready = task
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready();
        let mut tasks = self.tasks.borrow_mut();
        if ready {
            tasks.remove(&id);
        } else if let Some(slot) = tasks.get_mut(&id) {
            *slot = Some(task);
        }
    }

    fn fire_timers(&self) -> bool {
        self.timers.wake_due(Instant::from_nanos(clock::now_ns()))
    }
}

impl Platform for NativeCore {
    fn core(&self) -> CoreId {
        self.core
    }

    fn cores(&self) -> usize {
        self.shared.inboxes.len()
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(clock::now_ns())
    }

    fn unix_time(&self) -> u64 {
        // The CMOS RTC's time at boot plus the TSC's since. A machine without an RTC
        // (said on the console at boot) counts from boot: relative expiry times still
        // work, absolute ones would be misread.
        let now = clock::now_ns();
        crate::cpu::rtc::unix_time(now).unwrap_or(now / 1_000_000_000)
    }

    fn spawn_local(&self, task: LocalTask) {
        self.spawn(task);
    }

    fn ship(&self, core: CoreId, event: Event) -> Result<(), ShipError> {
        let Some(inbox) = self.shared.inboxes.get(core.index()) else {
            let cores = self.cores();
            return Err(ShipError::new(
                EventError::NoSuchCore { core, cores },
                event,
            ));
        };
        if self.shared.stopped().is_some() {
            return Err(ShipError::new(EventError::Stopping, event));
        }
        inbox.lock().push_back(event);
        self.shared.wake_if_asleep(core.index());
        Ok(())
    }

    fn sleep_until(&self, deadline: Instant) -> LocalTask {
        Box::pin(Sleep {
            timers: self.timers.clone(),
            deadline: deadline.as_nanos(),
            armed: false,
        })
    }

    fn add_idle_handler(&self, handler: IdleHandler) -> IdleHandlerId {
        self.idle.add(handler)
    }

    fn remove_idle_handler(&self, id: IdleHandlerId) -> bool {
        self.idle.remove(id)
    }

    fn fill_random(&self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let Some(bits) = entropy::random_u64() else {
                // The contract is cryptographically secure bytes; carrying on with
                // predictable ones would be worse than stopping.
                panic!("no entropy source: this CPU has no RDRAND (run QEMU with -cpu max)");
            };
            chunk.copy_from_slice(&bits.to_le_bytes()[..chunk.len()]);
        }
    }

    fn stop(&self, exit_code: i32) {
        // The first code wins.
        let _ = self.shared.stop.compare_exchange(
            RUNNING,
            i64::from(exit_code),
            core::sync::atomic::Ordering::AcqRel,
            core::sync::atomic::Ordering::Acquire,
        );
        // Sleeping cores see the stop now, not at their nap's end.
        for index in 0..self.shared.inboxes.len() {
            self.shared.wake_if_asleep(index);
        }
    }

    fn net(&self) -> &dyn Net {
        match (&self.net, self.shared.networked) {
            (Some(net), _) => net,
            (None, true) => &OnCoreZero,
            (None, false) => &NoNet,
        }
    }
}

/// A sleep on the calibrated clock: one timer, armed at the first poll.
struct Sleep {
    timers: Rc<TimerQueue>,
    deadline: u64,
    armed: bool,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if clock::now_ns() >= self.deadline {
            return Poll::Ready(());
        }
        if !self.armed {
            self.armed = true;
            self.timers
                .add(Instant::from_nanos(self.deadline), cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The network seam of a machine without a network device: every operation fails,
/// saying so.
struct NoNet;

fn not_yet() -> NetError {
    NetError::Other("this native node has no network device (virtio-net)".into())
}

impl Net for NoNet {
    fn listen(&self, _addr: SocketAddr) -> Result<Box<dyn TcpListener>, NetError> {
        Err(not_yet())
    }

    fn listen_shared(&self, _addr: SocketAddr) -> Result<Box<dyn TcpListener>, NetError> {
        Err(not_yet())
    }

    fn connect(&self, _addr: SocketAddr) -> Connecting {
        Box::pin(async { Err(not_yet()) })
    }
}

/// The network seam of the cores other than 0 on a machine with a network: the stack
/// and its sockets belong to core 0's loop (smoltcp is single-threaded, and the device
/// is polled there). A shared listener here is a member of the group that never gets a
/// connection: the platform spreads a shared port's connections, and here it gives them
/// all to core 0, whose connections ship their work to the other cores (the data store's
/// commands go to the key's core). Anything else fails, saying where to do it.
struct OnCoreZero;

fn on_core_zero() -> NetError {
    NetError::Other(
        "this native node's network is served by core 0: open sockets there (or ship to it)".into(),
    )
}

impl Net for OnCoreZero {
    fn listen(&self, _addr: SocketAddr) -> Result<Box<dyn TcpListener>, NetError> {
        Err(on_core_zero())
    }

    fn listen_shared(&self, addr: SocketAddr) -> Result<Box<dyn TcpListener>, NetError> {
        Ok(Box::new(NoConnections(addr)))
    }

    fn connect(&self, _addr: SocketAddr) -> Connecting {
        Box::pin(async { Err(on_core_zero()) })
    }
}

/// A shared listener's member that is given no connections (see [`OnCoreZero`]).
struct NoConnections(SocketAddr);

impl TcpListener for NoConnections {
    fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.0)
    }

    fn poll_accept(&self, _cx: &mut Context<'_>) -> Poll<Result<Accepted, NetError>> {
        Poll::Pending
    }
}

/// The longest an idle core sleeps: a bound, not a need. Its timers, the device's
/// interrupt (core 0) and wake-up IPIs (another core shipping it an event, waking one
/// of its tasks, or stopping the loops) end a sleep; a network core without a routable
/// interrupt polls the device every `NAP_POLLED`. Each wake-up of an idle core costs
/// the hypervisor work (under kvm_pvm, ring 0 is emulated): 1,000 naps a second kept
/// an idle single-core node at ~40% of a host CPU there.
const NAP: u64 = 100_000_000;
const NAP_POLLED: u64 = 200_000;
/// Deadlines nearer than this are spun for, not slept for.
const NAP_MIN: u64 = 20_000;
/// How long a core polls after its last work before it sleeps: under load (a request
/// every few hundred microseconds) it never sleeps, as the paper's event loops switch
/// from interrupts to polling under load.
const SPIN: u64 = 2_000_000;

/// Sleeps the core in `hlt` until its next timer (at most a nap), unless work arrived.
/// A ship to it sets off a wake-up IPI once it has said it sleeps, so an event is never
/// left waiting for the nap's end.
fn sleep(core: &NativeCore, inbox: &spinning_top::Spinlock<VecDeque<Event>>, index: usize) {
    use core::sync::atomic::Ordering::SeqCst;
    let now = clock::now_ns();
    // The network's core: interrupts on for the sleep (frames waiting: no sleep), and
    // the stack's own timers bound it.
    let (nap, stack_deadline) = match &core.net {
        Some(net) if net.interrupts() => match net.prepare_sleep() {
            Some(deadline) => (NAP, deadline),
            None => return,
        },
        Some(_) => (NAP_POLLED, u64::MAX),
        None => (NAP, u64::MAX),
    };
    let next = core
        .timers
        .next_deadline()
        .map_or(now + nap, Instant::as_nanos)
        .min(now + nap)
        .min(stack_deadline);
    if next < now + NAP_MIN {
        if let Some(net) = &core.net {
            net.after_sleep();
        }
        core::hint::spin_loop();
        return;
    }
    let flag = &core.shared.sleeping[index];
    flag.store(true, SeqCst);
    // Looked at again after saying so: a ship before this was missed by no one.
    if inbox.lock().is_empty() && core.woken.is_empty() && core.shared.stopped().is_none() {
        crate::cpu::apic::arm(next - now);
        crate::cpu::apic::idle();
    }
    flag.store(false, SeqCst);
    if let Some(net) = &core.net {
        net.after_sleep();
    }
}

/// What the application processors need to join a run: set by `run` before it starts
/// them, read by each in `run_ap`.
static JOIN: spinning_top::Spinlock<Option<(Arc<Shared>, Arc<EbbNode>)>> =
    spinning_top::Spinlock::new(None);

/// Runs `main` as the first task of core 0's loop, with `net` as its network, on
/// `cores` cores (the application processors are started for the others), until an
/// event calls `sesa_event::stop` (or `main`'s future returns: code 0); returns the exit
/// code. Fewer CPUs than `cores` coming up is a failure (code 1), said on the console.
pub fn run<F, Fut>(cores: usize, net: Option<NativeNet>, main: F) -> i32
where
    F: FnOnce() -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let cores = cores.clamp(1, crate::cpu::percpu::MAX_CPUS);
    let node = EbbNode::new(NodeConfig::with_cores(cores));
    let shared = Arc::new(Shared {
        inboxes: (0..cores)
            .map(|_| spinning_top::Spinlock::new(VecDeque::new()))
            .collect(),
        stop: core::sync::atomic::AtomicI64::new(RUNNING),
        finished: core::sync::atomic::AtomicUsize::new(0),
        sleeping: (0..cores)
            .map(|_| core::sync::atomic::AtomicBool::new(false))
            .collect(),
        networked: net.is_some(),
    });
    if cores > 1 {
        *JOIN.lock() = Some((shared.clone(), node.clone()));
        crate::smp::start(run_ap);
        let started = clock::now_ns();
        while crate::cpu::smp::ARRIVED.load(core::sync::atomic::Ordering::Acquire) < cores - 1 {
            if clock::now_ns() - started > 2_000_000_000 {
                crate::println!(
                    "sesa-native: runtime: {} of {cores} CPUs came up",
                    crate::cpu::smp::ARRIVED.load(core::sync::atomic::Ordering::Acquire) + 1
                );
                shared.stop.store(1, core::sync::atomic::Ordering::Release);
                return 1;
            }
            core::hint::spin_loop();
        }
    }
    let code = run_core(
        &shared,
        &node,
        CoreId::new(0),
        net,
        Some(Box::pin(async move {
            main().await;
            sesa_event::stop(0);
        })),
    );
    // The other cores end their loops on the stop code; wait for them (bounded).
    let started = clock::now_ns();
    while shared.finished.load(core::sync::atomic::Ordering::Acquire) < cores - 1
        && clock::now_ns() - started < 1_000_000_000
    {
        core::hint::spin_loop();
    }
    code
}

/// An application processor's part of a run: its core's loop, until the stop.
fn run_ap(index: u32) {
    let join = JOIN.lock().clone();
    let Some((shared, node)) = join else { return };
    if index as usize >= shared.inboxes.len() {
        return; // A CPU the run does not use.
    }
    run_core(&shared, &node, CoreId::new(index), None, None);
    shared
        .finished
        .fetch_add(1, core::sync::atomic::Ordering::AcqRel);
}

/// One core's loop.
fn run_core(
    shared: &Arc<Shared>,
    node: &Arc<EbbNode>,
    id: CoreId,
    net: Option<NativeNet>,
    first: Option<LocalTask>,
) -> i32 {
    let Ok(binding) = node.bind(id) else {
        return 1;
    };
    let core = Rc::new(NativeCore {
        core: id,
        shared: shared.clone(),
        tasks: RefCell::new(BTreeMap::new()),
        next_task: Cell::new(0),
        // A task woken from another core while this one sleeps: a wake-up IPI (the
        // sleeper said so before its last look at the list; see `sleep`).
        woken: {
            let shared = shared.clone();
            let index = id.index();
            WakeList::with_nudge(Arc::new(move || shared.wake_if_asleep(index)))
        },
        timers: Rc::new(TimerQueue::new()),
        idle: IdleHandlers::new(),
        net,
    });
    let entered = sesa_event::enter(core.clone());
    if let Some(task) = first {
        core.spawn(task);
    }
    let inbox = &shared.inboxes[id.index()];
    // When this core last had work: it sleeps only after being idle for `SPIN`.
    let mut last_work = clock::now_ns();
    let code = loop {
        let mut busy = false;
        // Shipped events first, each after a quiescent point.
        loop {
            // SAFETY: a quiescent point of this core: no event or task is running (the
            // loop is non-preemptive and `EbbRef::with` borrows end with their call), so
            // no rep is lent out.
            #[allow(unsafe_code)]
            unsafe {
                sesa_ebb::quiesce()
            };
            let event = inbox.lock().pop_front();
            let Some(event) = event else { break };
            event();
            busy = true;
        }
        busy |= core.fire_timers();
        if let Some(net) = &core.net {
            busy |= net.poll();
        }
        for task in core.woken.take() {
            core.poll_task(task);
            busy = true;
        }
        if let Some(code) = shared.stopped() {
            break code;
        }
        if busy || core.idle.run(|handler| Some(handler())) {
            last_work = clock::now_ns();
        } else if clock::now_ns() - last_work > SPIN {
            sleep(&core, inbox, id.index());
        } else {
            core::hint::spin_loop();
        }
    };
    // Tasks and events left are dropped on their core, with the platform current.
    core.tasks.borrow_mut().clear();
    inbox.lock().clear();
    core.timers.clear();
    drop(entered);
    drop(binding);
    code
}
