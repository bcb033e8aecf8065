//! The hosted runtime: one thread per core, each running a non-preemptive event loop.
//!
//! # A core's loop
//! Each core thread owns a tokio `LocalRuntime` (current-thread, `!Send` tasks allowed)
//! and three things on it:
//! - the **inbox task**, which runs events shipped from other cores (calling
//!   `sesa_ebb::quiesce` before each, which is where destroyed EBBs are reclaimed);
//! - the core's **tasks** (`spawn_local` futures), which tokio polls;
//! - the **idle policy**: an idle inbox task keeps yielding for `idle_spins` rounds
//!   (running the idle handlers each round) before it arms the inbox and lets the thread
//!   park in tokio's driver (epoll plus timers), unless the core's thread is kept waiting
//!   for a CPU, when it parks at once; see `InboxTask` and `contention.rs`;
//! - the **before-park hook**, which tokio calls when nothing is runnable: the final,
//!   race-free check before the thread sleeps.
//!
//! # Shutdown
//! `stop` (or the main future finishing, or a signal) sets `stopping`, refuses further
//! ships, and pushes a no-op into every inbox to wake every core. Each inbox task then
//! ends its core's `block_on`; dropping the `LocalRuntime` drops that core's remaining
//! tasks on their own thread, then the core's EBB binding drops its reps.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Waker};

use sesa_ebb::{CoreId, EbbNode, NodeConfig};
use sesa_event::net::Net;
use sesa_event::parts::IdleHandlers;
use sesa_event::{
    Event, EventError, IdleHandler, IdleHandlerId, Instant, LocalTask, Platform, ShipError,
};

use crate::contention::Contention;
use crate::inbox::{Idle, Inbox};
use crate::net::HostedNet;
use crate::panic::{install_hook, payload_message, set_thread_core};
use crate::{Config, HostedError};

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit<T> {
    /// The main future returned this.
    Completed(T),
    /// An event called `sesa_event::stop(code)`.
    Stopped(i32),
    /// SIGINT or SIGTERM (with `handle_signals`).
    Signaled(i32),
}

impl<T> Exit<T> {
    /// The process exit status this corresponds to: 0, the stop code, or 128 + signal.
    pub fn code(&self) -> i32 {
        match self {
            Exit::Completed(_) => 0,
            Exit::Stopped(code) => *code,
            Exit::Signaled(signal) => 128 + signal,
        }
    }
}

/// Why the runtime stopped (the first reason wins).
#[derive(Clone, Copy, Debug)]
enum StopReason {
    Completed,
    Stopped(i32),
    Signaled(i32),
}

struct Shared {
    inboxes: Box<[Inbox<Event>]>,
    stopping: AtomicBool,
    reason: Mutex<Option<StopReason>>,
    node: Arc<EbbNode>,
    epoch: std::time::Instant,
    config: Config,
    panics: AtomicU64,
}

impl Shared {
    fn stop(&self, reason: StopReason) {
        {
            let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
            if r.is_none() {
                *r = Some(reason);
            }
        }
        if !self.stopping.swap(true, Ordering::SeqCst) {
            for inbox in self.inboxes.iter() {
                inbox.push(Box::new(|| {}));
            }
        }
    }
}

/// A hosted runtime: `cores` event loops on as many threads.
///
/// ```
/// use sesa_hosted::{Config, Exit, Runtime};
///
/// let runtime = Runtime::new(Config { pin_threads: false, ..Config::with_cores(2) }).unwrap();
/// let exit = runtime
///     .run(|| async {
///         let other = sesa_event::CoreId::new(1);
///         sesa_event::spawn_on(other, || 6 * 7).await.unwrap()
///     })
///     .unwrap();
/// assert_eq!(exit, Exit::Completed(42));
/// ```
pub struct Runtime {
    config: Config,
}

type MainFn = Box<dyn FnOnce() -> LocalTask + Send>;

impl Runtime {
    /// A runtime with this configuration.
    ///
    /// # Errors
    /// [`HostedError::Config`] if the configuration is unusable (0 cores, say).
    pub fn new(config: Config) -> Result<Self, HostedError> {
        let cores = config.resolved_cores();
        if cores == 0 || cores > 4096 {
            return Err(HostedError::Config(format!(
                "cores must be 1..=4096, not {cores}"
            )));
        }
        if config.events_per_turn == 0 {
            return Err(HostedError::Config(
                "events_per_turn must be at least 1".into(),
            ));
        }
        Ok(Runtime { config })
    }

    /// How many cores the runtime runs.
    pub fn cores(&self) -> usize {
        self.config.resolved_cores()
    }

    /// Starts every core, runs `main()` as a task on core 0, and returns when the runtime
    /// stops: when `main`'s future completes, an event calls `sesa_event::stop`, or (with
    /// `handle_signals`) on SIGINT/SIGTERM. The calling thread only waits.
    ///
    /// # Errors
    /// [`HostedError::MainPanicked`] if the main future panicked; thread or runtime
    /// creation errors.
    pub fn run<F, Fut>(&self, main: F) -> Result<Exit<Fut::Output>, HostedError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        install_hook();
        let cores = self.cores();
        let shared = Arc::new(Shared {
            inboxes: (0..cores).map(|_| Inbox::new()).collect(),
            stopping: AtomicBool::new(false),
            reason: Mutex::new(None),
            node: EbbNode::new(NodeConfig {
                cores,
                ebbs_max: self.config.ebbs_max,
            }),
            epoch: std::time::Instant::now(),
            config: self.config.clone(),
            panics: AtomicU64::new(0),
        });
        let (output_tx, output_rx) = mpsc::channel::<Result<Fut::Output, String>>();
        let main: MainFn = Box::new(move || {
            Box::pin(async move {
                let output = CatchUnwind(Box::pin(main())).await;
                let failed = output.is_err();
                // The receiver outlives every core thread, so this cannot fail.
                let _ = output_tx.send(output);
                let current = CURRENT.with(|c| c.borrow().clone());
                if let Some(core) = current {
                    if failed {
                        core.shared.panics.fetch_add(1, Ordering::Relaxed);
                    }
                    core.shared.stop(StopReason::Completed);
                }
            })
        });
        let cpus = if self.config.pin_threads {
            let cpus = core_affinity::get_core_ids().unwrap_or_default();
            // Pin only a node that has every CPU the process may use. A smaller node
            // pinned to the first CPUs would stack every such node (and the clients
            // beside them) on those CPUs while the others idle; measured: a 1-core node
            // pinned to CPU 0 served memaslap, which the kernel then kept on CPU 0 too,
            // at half the rate it reached unpinned.
            if cpus.len() == cores {
                cpus
            } else {
                Vec::new()
            }
        } else {
            Vec::new()
        };
        let mut main = Some(main);
        let mut threads = Vec::with_capacity(cores);
        for c in 0..cores {
            let core = CoreId::new(c as u32);
            let for_core = shared.clone();
            let main = if c == 0 { main.take() } else { None };
            let cpu = (!cpus.is_empty()).then(|| cpus[c % cpus.len()]);
            let spawned = std::thread::Builder::new()
                .name(format!("sesa-core-{c}"))
                .spawn(move || core_thread(for_core, core, cpu, main));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shared.stop(StopReason::Stopped(1));
                    threads
                        .into_iter()
                        .for_each(|t: std::thread::JoinHandle<_>| {
                            let _ = t.join();
                        });
                    return Err(HostedError::Spawn(e));
                }
            }
        }
        let mut first_error = None;
        for t in threads {
            let result = t
                .join()
                .unwrap_or_else(|p| Err(HostedError::CoreCrashed(payload_message(&*p))));
            if let Err(e) = result {
                shared.stop(StopReason::Stopped(1));
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let reason = shared
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(StopReason::Completed);
        match reason {
            StopReason::Completed => match output_rx.try_recv() {
                Ok(Ok(output)) => Ok(Exit::Completed(output)),
                Ok(Err(message)) => Err(HostedError::MainPanicked(message)),
                Err(_) => Err(HostedError::CoreCrashed(
                    "the main task ended without a result".into(),
                )),
            },
            StopReason::Stopped(code) => Ok(Exit::Stopped(code)),
            StopReason::Signaled(signal) => Ok(Exit::Signaled(signal)),
        }
    }
}

std::thread_local! {
    /// This thread's core, for the before-park hook (which tokio requires to be `Send`).
    static CURRENT: RefCell<Option<Rc<HostedCore>>> = const { RefCell::new(None) };
}

fn core_thread(
    shared: Arc<Shared>,
    core: CoreId,
    cpu: Option<core_affinity::CoreId>,
    main: Option<MainFn>,
) -> Result<(), HostedError> {
    if let Some(cpu) = cpu
        && !core_affinity::set_for_current(cpu)
    {
        tracing::warn!(
            core = core.get(),
            cpu = cpu.id,
            "could not pin the core's thread"
        );
    }
    let binding = shared.node.bind(core)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(before_park)
        .build_local(Default::default())
        .map_err(HostedError::Tokio)?;
    let this = Rc::new(HostedCore {
        shared: shared.clone(),
        core,
        idle: IdleHandlers::new(),
        net: HostedNet,
        tokio_epoch: tokio::time::Instant::from_std(shared.epoch),
        contention: RefCell::new(Contention::for_this_thread(
            shared.config.contended_wait_pct,
        )),
    });
    set_thread_core(Some(core));
    CURRENT.with(|c| *c.borrow_mut() = Some(this.clone()));
    let platform = sesa_event::enter(this.clone());
    let stopped = Rc::new(StopSignal::default());
    let signals = if core.get() == 0 && shared.config.handle_signals {
        Some(
            runtime
                .block_on(async { Signals::new() })
                .map_err(HostedError::Signals)?,
        )
    } else {
        None
    };
    runtime.block_on(async {
        tokio::task::spawn_local(InboxTask {
            core: this.clone(),
            stopped: stopped.clone(),
            empty_rounds: 0,
            spins: 0,
        });
        if let Some(signals) = signals {
            tokio::task::spawn_local(signals.watch(shared.clone()));
        }
        if let Some(main) = main {
            tokio::task::spawn_local(main());
        }
        poll_fn(|cx| stopped.poll(cx)).await;
    });
    // Tasks still pending are dropped here, on their own core, while the platform is
    // still current (their destructors may use it).
    drop(runtime);
    drop(platform);
    CURRENT.with(|c| *c.borrow_mut() = None);
    drop(this);
    drop(binding);
    set_thread_core(None);
    Ok(())
}

/// tokio's before-park hook: the last look before the thread sleeps. The inbox task
/// has already spun (see `InboxTask`); this runs the idle handlers once more and makes
/// the race-free commit to `IDLE` (or resumes if an event slipped in).
fn before_park() {
    let current = CURRENT.with(|c| c.borrow().clone());
    let Some(core) = current else { return };
    let inbox = core.inbox();
    if core.run_idle_handlers() || inbox.idle(0, || false) == Idle::Resume {
        // A same-thread wake: tokio pushes the inbox task on this core's run queue and
        // does not park.
        inbox.wake();
    }
}

/// One core's platform.
struct HostedCore {
    shared: Arc<Shared>,
    core: CoreId,
    idle: IdleHandlers,
    net: HostedNet,
    tokio_epoch: tokio::time::Instant,
    /// How long this core's thread has lately waited for a CPU: read by the inbox task
    /// as an idle spell begins (whether to spin), and by `cpu_wait_pct`.
    contention: RefCell<Contention>,
}

impl HostedCore {
    fn inbox(&self) -> &Inbox<Event> {
        &self.shared.inboxes[self.core.index()]
    }

    /// Runs every idle handler once; whether any found work. A handler that panics is
    /// reported and removed.
    fn run_idle_handlers(&self) -> bool {
        self.idle
            .run(|handler| match catch_unwind(AssertUnwindSafe(handler)) {
                Ok(found_work) => Some(found_work),
                Err(_) => {
                    self.shared.panics.fetch_add(1, Ordering::Relaxed);
                    None
                }
            })
    }
}

impl Platform for HostedCore {
    fn core(&self) -> CoreId {
        self.core
    }

    fn cores(&self) -> usize {
        self.shared.inboxes.len()
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(self.shared.epoch.elapsed().as_nanos() as u64)
    }

    fn unix_time(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn spawn_local(&self, task: LocalTask) {
        drop(tokio::task::spawn_local(task));
    }

    fn ship(&self, core: CoreId, event: Event) -> Result<(), ShipError> {
        let Some(inbox) = self.shared.inboxes.get(core.index()) else {
            let cores = self.cores();
            return Err(ShipError::new(
                EventError::NoSuchCore { core, cores },
                event,
            ));
        };
        if self.shared.stopping.load(Ordering::Relaxed) {
            return Err(ShipError::new(EventError::Stopping, event));
        }
        inbox.push(event);
        Ok(())
    }

    fn sleep_until(&self, deadline: Instant) -> LocalTask {
        let deadline = self.tokio_epoch + std::time::Duration::from_nanos(deadline.as_nanos());
        Box::pin(tokio::time::sleep_until(deadline))
    }

    fn cpu_wait_pct(&self) -> Option<u32> {
        self.contention.borrow().waited_pct()
    }

    fn yield_now(&self) -> LocalTask {
        // tokio resumes a yielded task only after its driver was polled (sockets and
        // timers): a task woken at once instead waits for the driver's turn, every 61
        // polls, and a counter yielding every 65,536 increments then kept a node from
        // answering its membership probes for over a second on busy CPUs (a debug
        // build under two CPU hogs: the node was declared down).
        Box::pin(tokio::task::yield_now())
    }

    fn add_idle_handler(&self, handler: IdleHandler) -> IdleHandlerId {
        let id = self.idle.add(handler);
        // Make sure the loop passes through its idle hook even if it is parked.
        self.inbox().wake();
        id
    }

    fn remove_idle_handler(&self, id: IdleHandlerId) -> bool {
        self.idle.remove(id)
    }

    fn fill_random(&self, buf: &mut [u8]) {
        // The OS entropy source does not fail on a supported Linux; if it ever does,
        // carrying on with predictable bytes would be worse than stopping the event.
        if let Err(e) = getrandom::fill(buf) {
            panic!("the OS entropy source failed: {e}");
        }
    }

    fn stop(&self, exit_code: i32) {
        self.shared.stop(StopReason::Stopped(exit_code));
    }

    fn net(&self) -> &dyn Net {
        &self.net
    }
}

/// Runs the events other cores ship to this one, and carries the idle policy.
///
/// # Idle policy
/// When its inbox is empty the task does not sleep at once: it *yields* (wakes itself
/// and returns `Pending`), so tokio runs the core's other ready tasks and comes back to
/// it, and it keeps the inbox `ACTIVE` meanwhile, so senders push without any wake-up
/// call. Each empty round also runs the idle handlers. After `idle_spins` consecutive
/// empty rounds in which no handler found work it arms the inbox (`IDLE`: senders now
/// wake it) and really waits; if nothing else is runnable tokio then calls the
/// before-park hook and parks the thread. A core whose thread is kept waiting for a CPU
/// (`Contention`) does not spin: it arms the inbox after its first empty round.
///
/// Spinning here rather than in the before-park hook matters: work that the hook
/// schedules makes tokio poll its driver (an `epoll_wait` syscall) before running it,
/// while a task that finds the event itself runs it straight away.
struct InboxTask {
    core: Rc<HostedCore>,
    stopped: Rc<StopSignal>,
    empty_rounds: u32,
    /// The empty rounds this idle spell may spin, chosen as it begins.
    spins: u32,
}

impl Future for InboxTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let core = &this.core;
        let inbox = core.inbox();
        let budget = core.shared.config.events_per_turn;
        loop {
            let mut ran = 0;
            while ran < budget {
                // SAFETY: a poll of the inbox task is a quiescent point of this core: no
                // other event is running (the loop is non-preemptive and `with` borrows
                // cannot span polls), so no rep is borrowed.
                unsafe { sesa_ebb::quiesce() };
                let Some(event) = inbox.pop() else { break };
                if catch_unwind(AssertUnwindSafe(event)).is_err() {
                    // Reported by the panic hook; the loop goes on.
                    core.shared.panics.fetch_add(1, Ordering::Relaxed);
                }
                ran += 1;
            }
            if core.shared.stopping.load(Ordering::SeqCst) {
                // Drain what is left: dropping the events fails their join handles
                // (Canceled) instead of leaving them pending forever.
                while let Some(event) = inbox.pop() {
                    drop(event);
                }
                this.stopped.fire();
                return Poll::Ready(());
            }
            if ran > 0 {
                this.empty_rounds = 0;
            }
            if ran == budget {
                // Let this core's other tasks and I/O run, then come back.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if core.run_idle_handlers() {
                this.empty_rounds = 0;
            }
            if this.empty_rounds == 0 {
                // An idle spell begins: spin only with a CPU to ourselves.
                this.spins = if core.contention.borrow_mut().contended() {
                    0
                } else {
                    core.shared.config.idle_spins
                };
            }
            if this.empty_rounds < this.spins {
                this.empty_rounds += 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.empty_rounds = 0;
            if inbox.arm(cx.waker()) {
                return Poll::Pending;
            }
        }
    }
}

#[derive(Default)]
struct StopSignal {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl StopSignal {
    fn fire(&self) {
        self.fired.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired.get() {
            return Poll::Ready(());
        }
        *self.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Polls a future, turning a panic into an error carrying its message.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload_message(&*payload))),
        }
    }
}

/// SIGINT and SIGTERM: the first stops the runtime cleanly, a second exits at once.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn watch(mut self, shared: Arc<Shared>) {
        let mut received = 0;
        loop {
            let signal = poll_fn(|cx| {
                if self.interrupt.poll_recv(cx).is_ready() {
                    return Poll::Ready(2);
                }
                if self.terminate.poll_recv(cx).is_ready() {
                    return Poll::Ready(15);
                }
                Poll::Pending
            })
            .await;
            received += 1;
            if received > 1 {
                eprintln!("sesa: second signal {signal}: exiting without waiting for the cores");
                std::process::exit(128 + signal);
            }
            tracing::info!(signal, "stopping on signal");
            shared.stop(StopReason::Signaled(signal));
        }
    }
}
