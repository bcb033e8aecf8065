//! The native event runtime: `sesa-event`'s platform seam on the bare machine, one
//! non-preemptive loop per core (the boot CPU only, until the application processors come
//! up), with the same semantics as the hosted runtime: shipped events run in order,
//! never inline; tasks are polled when woken; `quiesce` runs before every event; a
//! sleep wakes at its deadline on the calibrated clock; `stop` ends the loop with an
//! exit code.
//!
//! The network, when the machine has one, is polled every turn (`net.rs`); without one,
//! `net()` refuses every operation with a clear error.
//!
//! Not yet: interrupts (the loop polls: an idle core spins on its timers and the
//! network), and other cores (`ship` to any core but 0 is refused with `NoSuchCore`).

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BinaryHeap, VecDeque};
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use sesa_ebb::{CoreId, EbbNode, NodeConfig};
use sesa_event::net::{Connecting, Net, NetError, TcpListener};
use sesa_event::{
    Event, EventError, IdleHandler, IdleHandlerId, Instant, LocalTask, Platform, ShipError,
};

use crate::cpu::{clock, entropy};
use crate::net::NativeNet;

/// Wakers push task ids here. `Send + Sync` as wakers must be; one CPU uses it, so the
/// lock is never contended.
type Woken = Arc<spinning_top::Spinlock<Vec<u64>>>;

struct TaskWaker {
    task: u64,
    woken: Woken,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.lock().push(self.task);
    }
}

/// A timer: wake `waker` at `at` (ns on the calibrated clock); `seq` orders ties.
struct Timer {
    at: u64,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    /// Reversed: the earliest comes out of the max-heap first.
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A core's timers.
#[derive(Default)]
struct Timers {
    heap: RefCell<BinaryHeap<Timer>>,
    next: Cell<u64>,
}

impl Timers {
    fn add(&self, at: u64, waker: Waker) {
        let seq = self.next.get();
        self.next.set(seq + 1);
        self.heap.borrow_mut().push(Timer { at, seq, waker });
    }
}

/// One core's loop state and its platform.
struct NativeCore {
    core: CoreId,
    tasks: RefCell<BTreeMap<u64, Option<LocalTask>>>,
    next_task: Cell<u64>,
    woken: Woken,
    inbox: RefCell<VecDeque<Event>>,
    timers: Rc<Timers>,
    idle: RefCell<Vec<(IdleHandlerId, IdleHandler)>>,
    next_idle: Cell<u64>,
    stopped: Cell<Option<i32>>,
    net: Option<NativeNet>,
}

impl NativeCore {
    fn spawn(&self, task: LocalTask) {
        let id = self.next_task.get();
        self.next_task.set(id + 1);
        self.tasks.borrow_mut().insert(id, Some(task));
        self.woken.lock().push(id);
    }

    fn poll_task(&self, id: u64) {
        let task = match self.tasks.borrow_mut().get_mut(&id) {
            Some(slot) => slot.take(),
            None => return,
        };
        let Some(mut task) = task else { return };
        let waker = Waker::from(Arc::new(TaskWaker {
            task: id,
            woken: self.woken.clone(),
        }));
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
        let now = clock::now_ns();
        let mut fired = false;
        loop {
            let due = {
                let mut timers = self.timers.heap.borrow_mut();
                match timers.peek() {
                    Some(t) if t.at <= now => timers.pop(),
                    _ => None,
                }
            };
            match due {
                Some(t) => {
                    t.waker.wake();
                    fired = true;
                }
                None => return fired,
            }
        }
    }

    fn run_idle_handlers(&self) -> bool {
        let mut handlers = core::mem::take(&mut *self.idle.borrow_mut());
        let busy = handlers.iter_mut().fold(false, |busy, (_, h)| h() | busy);
        let mut idle = self.idle.borrow_mut();
        let added = core::mem::replace(&mut *idle, handlers);
        idle.extend(added);
        busy
    }
}

impl Platform for NativeCore {
    fn core(&self) -> CoreId {
        self.core
    }

    fn cores(&self) -> usize {
        1
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(clock::now_ns())
    }

    fn unix_time(&self) -> u64 {
        // No wall clock yet (the CMOS RTC comes with timers): time since boot, which
        // memcached-style relative expiry handles and absolute times would misread.
        clock::now_ns() / 1_000_000_000
    }

    fn spawn_local(&self, task: LocalTask) {
        self.spawn(task);
    }

    fn ship(&self, core: CoreId, event: Event) -> Result<(), ShipError> {
        if core != self.core {
            return Err(ShipError::new(
                EventError::NoSuchCore { core, cores: 1 },
                event,
            ));
        }
        if self.stopped.get().is_some() {
            return Err(ShipError::new(EventError::Stopping, event));
        }
        self.inbox.borrow_mut().push_back(event);
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
        let id = IdleHandlerId(self.next_idle.get());
        self.next_idle.set(id.0 + 1);
        self.idle.borrow_mut().push((id, handler));
        id
    }

    fn remove_idle_handler(&self, id: IdleHandlerId) -> bool {
        let mut idle = self.idle.borrow_mut();
        match idle.iter().position(|(h, _)| *h == id) {
            Some(i) => {
                drop(idle.remove(i));
                true
            }
            None => false,
        }
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
        if self.stopped.get().is_none() {
            self.stopped.set(Some(exit_code));
        }
    }

    fn net(&self) -> &dyn Net {
        match &self.net {
            Some(net) => net,
            None => &NoNet,
        }
    }
}

/// A sleep on the calibrated clock: one timer, armed at the first poll.
struct Sleep {
    timers: Rc<Timers>,
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
            self.timers.add(self.deadline, cx.waker().clone());
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

/// Runs `main` as the first task of core 0's loop, with `net` as its network, until an
/// event calls `sesa_event::stop` (or `main`'s future returns: code 0); returns the exit
/// code.
pub fn run<F, Fut>(net: Option<NativeNet>, main: F) -> i32
where
    F: FnOnce() -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let node = EbbNode::new(NodeConfig::with_cores(1));
    let Ok(binding) = node.bind(CoreId::new(0)) else {
        return 1;
    };
    let core = Rc::new(NativeCore {
        core: CoreId::new(0),
        tasks: RefCell::new(BTreeMap::new()),
        next_task: Cell::new(0),
        woken: Arc::new(spinning_top::Spinlock::new(Vec::new())),
        inbox: RefCell::new(VecDeque::new()),
        timers: Rc::new(Timers::default()),
        idle: RefCell::new(Vec::new()),
        next_idle: Cell::new(0),
        stopped: Cell::new(None),
        net,
    });
    let entered = sesa_event::enter(core.clone());
    core.spawn(Box::pin(async move {
        main().await;
        sesa_event::stop(0);
    }));
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
            let event = core.inbox.borrow_mut().pop_front();
            let Some(event) = event else { break };
            event();
            busy = true;
        }
        busy |= core.fire_timers();
        if let Some(net) = &core.net {
            busy |= net.poll();
        }
        let woken = core::mem::take(&mut *core.woken.lock());
        for id in woken {
            core.poll_task(id);
            busy = true;
        }
        if let Some(code) = core.stopped.get() {
            break code;
        }
        if !busy {
            core.run_idle_handlers();
            core::hint::spin_loop();
        }
    };
    // Tasks and events left are dropped on their core, with the platform current.
    core.tasks.borrow_mut().clear();
    core.inbox.borrow_mut().clear();
    core.timers.heap.borrow_mut().clear();
    drop(entered);
    drop(binding);
    code
}
