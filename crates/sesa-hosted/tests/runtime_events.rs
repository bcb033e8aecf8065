//! The hosted event runtime end to end: shipping, ordering, timers, panics, stop, idle
//! handlers, the network seam, tokio libraries inside events, EBB destruction, and the
//! central template.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use sesa_ebb::{CoreId, EbbError, EbbRoot, Install, MissContext, MissError};
use sesa_event::{Central, EventError, spawn_local, spawn_on};
use sesa_hosted::{Config, Exit, HostedError, Runtime};

fn config(cores: usize) -> Config {
    Config {
        pin_threads: false,
        idle_spins: 200,
        ..Config::with_cores(cores)
    }
}

fn run<F, Fut>(cores: usize, main: F) -> Fut::Output
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future + 'static,
    Fut::Output: Send + 'static,
{
    match Runtime::new(config(cores)).unwrap().run(main).unwrap() {
        Exit::Completed(output) => output,
        other => panic!("runtime ended with {:?}", other.code()),
    }
}

const C1: CoreId = CoreId::new(1);

#[test]
fn spawn_on_runs_on_the_target_core_and_returns_the_result() {
    let (origin, there, value) = run(2, || async {
        let origin = sesa_event::current_core();
        let (there, value) = spawn_on(C1, || (sesa_event::current_core(), 6 * 7))
            .await
            .unwrap();
        (origin, there, value)
    });
    assert_eq!((origin.get(), there.get(), value), (0, 1, 42));
}

#[test]
fn events_shipped_between_two_cores_run_in_order() {
    let seen = run(2, || async {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        for i in 0..1000 {
            let log = log.clone();
            sesa_event::ship(C1, move || log.lock().unwrap().push(i)).unwrap();
        }
        spawn_on(C1, || ()).await.unwrap();
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    });
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
}

#[test]
fn spawn_on_async_builds_a_non_send_future_on_the_target() {
    let v = run(2, || async { spawn_on_async_demo().await });
    assert_eq!(v, (1, 3));
}

async fn spawn_on_async_demo() -> (u32, u32) {
    sesa_event::spawn_on_async(C1, || async {
        let local = Rc::new(Cell::new(1)); // !Send, lives on core 1 only
        sesa_event::yield_now().await;
        local.set(local.get() + 2);
        (sesa_event::current_core().get(), local.get())
    })
    .await
    .unwrap()
}

#[test]
fn timers_sleep_at_least_as_long_as_asked_on_the_platform_clock() {
    let elapsed = run(1, || async {
        let start = sesa_event::now();
        sesa_event::sleep(Duration::from_millis(30)).await;
        sesa_event::now() - start
    });
    assert!(elapsed >= Duration::from_millis(30), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn a_panicking_event_is_an_error_for_its_caller_and_the_loop_goes_on() {
    let (shipped, task, after) = run(2, || async {
        let shipped = spawn_on(C1, || -> u32 { panic!("boom in a shipped event") }).await;
        let task = spawn_local(async { panic!("boom in a task") }).await;
        let after = spawn_on(C1, || 5).await;
        (shipped, task, after)
    });
    assert!(
        matches!(shipped, Err(EventError::Panicked { core }) if core == C1),
        "{shipped:?}"
    );
    assert!(matches!(task, Err(EventError::Panicked { .. })), "{task:?}");
    assert_eq!(after.unwrap(), 5, "core 1 still serves events");
}

#[test]
fn a_panicking_main_future_is_reported_as_an_error() {
    let result = Runtime::new(config(2))
        .unwrap()
        .run(|| async { panic!("main went wrong") });
    match result {
        Err(HostedError::MainPanicked(message)) => assert!(message.contains("main went wrong")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stop_from_any_core_ends_the_run_with_its_code_and_cancels_pending_work() {
    let exit = Runtime::new(config(2)).unwrap().run(|| async {
        sesa_event::ship(C1, || sesa_event::stop(3)).unwrap();
        // Never completes: the runtime stops first.
        sesa_event::sleep(Duration::from_secs(3600)).await;
    });
    assert_eq!(exit.unwrap(), Exit::Stopped(3));
}

#[test]
fn idle_handlers_run_when_idle_keep_polling_while_busy_and_can_be_removed() {
    let (calls_while_busy, calls_after_removal) = run(1, || async {
        let calls = Rc::new(Cell::new(0u32));
        let counted = calls.clone();
        // Reports work for its first 100 calls: the core must keep calling it rather
        // than park, although nothing else is runnable.
        let id = sesa_event::add_idle_handler(move || {
            counted.set(counted.get() + 1);
            counted.get() < 100
        });
        while calls.get() < 100 {
            sesa_event::sleep(Duration::from_millis(1)).await;
        }
        let busy = calls.get();
        assert!(sesa_event::remove_idle_handler(id));
        assert!(!sesa_event::remove_idle_handler(id), "already removed");
        let before = calls.get();
        sesa_event::sleep(Duration::from_millis(20)).await;
        (busy, calls.get() - before)
    });
    assert!(calls_while_busy >= 100);
    assert_eq!(calls_after_removal, 0);
}

#[test]
fn a_parked_core_is_woken_by_a_shipped_event() {
    // No spinning at all: every cross-core event must go through the IDLE -> wake path.
    let cfg = Config {
        idle_spins: 0,
        ..config(2)
    };
    let total = match Runtime::new(cfg)
        .unwrap()
        .run(|| async {
            let mut total = 0u64;
            for i in 0..200u64 {
                total += spawn_on(C1, move || i).await.unwrap();
                if i % 50 == 0 {
                    // Let core 1 really fall asleep now and then.
                    sesa_event::sleep(Duration::from_millis(2)).await;
                }
            }
            total
        })
        .unwrap()
    {
        Exit::Completed(t) => t,
        other => panic!("{:?}", other.code()),
    };
    assert_eq!(total, (0..200).sum::<u64>());
}

#[test]
fn a_task_computing_in_yielded_slices_lets_the_cores_io_in() {
    // tokio polls its driver (sockets, timers) only every 61 task polls, unless a task
    // yields through it: a task that computes in slices, yielding between them, must
    // not keep a socket that became readable waiting for dozens of slices (a node doing
    // so missed its membership probes on busy CPUs and was declared down). Five times:
    // a byte is written while the core is busy, then the task counts its slices until
    // the byte is read.
    let most_slices = run(1, || async {
        let listener = sesa_event::tcp_listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let (wrote, written) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            for () in asked {
                // On loopback the byte is in the reader's socket once write returns.
                std::io::Write::write_all(&mut s, b"x").unwrap();
                wrote.send(()).unwrap();
            }
        });
        let (mut conn, _peer) = listener.accept().await.unwrap();
        let read = Rc::new(Cell::new(0u32));
        spawn_local({
            let read = read.clone();
            async move {
                let mut byte = [0u8; 1];
                while conn.read_exact(&mut byte).await.is_ok() {
                    read.set(read.get() + 1);
                }
            }
        });
        let mut most = 0u32;
        for round in 1..=5 {
            ask.send(()).unwrap();
            // Blocks the core (no yield) until the byte is there: the driver has not
            // looked at the socket since.
            written.recv().unwrap();
            let mut slices = 0u32;
            while read.get() < round {
                slices += 1;
                assert!(slices < 10_000_000, "the byte was never read");
                sesa_event::yield_now().await;
            }
            most = most.max(slices);
        }
        drop(ask);
        writer.join().unwrap();
        most
    });
    assert!(
        most_slices <= 3,
        "a readable socket waited {most_slices} slices of the computing task"
    );
}

#[test]
fn tcp_through_the_platform_seam_inside_events() {
    let echoed = run(2, || async {
        let listener = sesa_event::tcp_listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // The client runs on core 1, the server on core 0.
        let client = sesa_event::spawn_on_async(C1, move || async move {
            let mut s = sesa_event::tcp_connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(b"hello sesa").await.unwrap();
            let mut back = [0u8; 10];
            s.read_exact(&mut back).await.unwrap();
            back.to_vec()
        });
        let (mut conn, _peer) = listener.accept().await.unwrap();
        let mut buf = [0u8; 10];
        conn.read_exact(&mut buf).await.unwrap();
        conn.write_all(&buf).await.unwrap();
        client.await.unwrap()
    });
    assert_eq!(echoed, b"hello sesa");
}

#[test]
fn tcp_errors_are_results_not_panics() {
    let (refused, in_use) = run(1, || async {
        let listener = sesa_event::tcp_listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let in_use = sesa_event::tcp_listen(addr).err();
        drop(listener);
        let refused = sesa_event::tcp_connect(addr).await.err();
        (refused, in_use)
    });
    assert!(matches!(refused, Some(EventError::Net(_))), "{refused:?}");
    assert!(matches!(in_use, Some(EventError::Net(_))), "{in_use:?}");
}

#[test]
fn tokio_libraries_work_inside_events() {
    let dir = std::env::temp_dir().join(format!("sesa-hosted-fs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("note.txt");
    let read = run(2, move || async move {
        // tokio's own file and socket types, used directly from events on core 1.
        spawn_on_async(C1, move || async move {
            tokio::fs::write(&path, b"written by core 1").await.unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let connecting = tokio::task::spawn_local(tokio::net::TcpStream::connect(addr));
            listener.accept().await.unwrap();
            connecting.await.unwrap().unwrap();
            tokio::fs::read_to_string(&path).await.unwrap()
        })
        .await
        .unwrap()
    });
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(read, "written by core 1");
}

use sesa_event::spawn_on_async;

struct DropCounted(Arc<AtomicUsize>);
impl Drop for DropCounted {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

struct DropCountedRoot(Arc<AtomicUsize>);
impl EbbRoot for DropCountedRoot {
    type Rep = DropCounted;
    fn miss(&self, _cx: &MissContext<'_>) -> Result<Install<DropCounted>, MissError> {
        Ok(Install::local(Box::new(DropCounted(self.0.clone()))))
    }
}

#[test]
fn destroy_waits_until_no_core_can_reach_the_reps() {
    let (dropped_after_destroy, stale) = run(2, || async {
        let drops = Arc::new(AtomicUsize::new(0));
        let node = sesa_ebb::EbbNode::current().unwrap();
        let ebb = node.create(DropCountedRoot(drops.clone())).unwrap();
        for r in sesa_event::on_all_cores(move |_| ebb.with(|_| ())).await {
            r.unwrap();
        }
        assert_eq!(drops.load(SeqCst), 0);
        sesa_event::destroy(ebb).await.unwrap();
        let dropped = drops.load(SeqCst);
        let stale = sesa_event::on_all_cores(move |_| {
            matches!(ebb.try_with(|_| ()), Err(EbbError::NoSuchEbb { .. }))
        })
        .await;
        (
            dropped,
            stale.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        )
    });
    assert_eq!(dropped_after_destroy, 2, "both cores dropped their rep");
    assert_eq!(stale, [true, true]);
}

#[test]
fn central_ebb_is_one_rep_reached_by_function_shipping() {
    let (total, homes) = run(2, || async {
        // The rep is !Send: it lives on core 0 only; core 1 reaches it by shipping.
        let counter = Central::create(CoreId::new(0), || Rc::new(Cell::new(0u64))).unwrap();
        let from_core_1 = spawn_on_async(C1, move || async move {
            for _ in 0..10 {
                counter.call(|c| c.set(c.get() + 1)).await.unwrap();
            }
            counter.call(|_| sesa_event::current_core()).await.unwrap()
        })
        .await
        .unwrap();
        for _ in 0..5 {
            counter.call(|c| c.set(c.get() + 1)).await.unwrap();
        }
        let home_here = counter.call(|_| sesa_event::current_core()).await.unwrap();
        let total = counter.call(|c| c.get()).await.unwrap();
        (total, [from_core_1.get(), home_here.get()])
    });
    assert_eq!(total, 15);
    assert_eq!(homes, [0, 0], "every call ran on the home core");
}

#[test]
fn events_cannot_be_started_outside_a_runtime() {
    assert!(sesa_event::try_current_core().is_none());
    let e = sesa_event::ship(CoreId::new(0), || ()).unwrap_err();
    assert!(matches!(e.error, EventError::NotOnCore));
}

#[test]
fn shipping_to_a_missing_core_hands_the_event_back() {
    let ok = run(2, || async {
        let e = sesa_event::ship(CoreId::new(9), || ()).unwrap_err();
        let handle = spawn_on(CoreId::new(9), || ()).await;
        matches!(e.error, EventError::NoSuchCore { cores: 2, .. })
            && matches!(handle, Err(EventError::NoSuchCore { .. }))
    });
    assert!(ok);
}

/// Re-runs this test binary as a child whose runtime panics in an event, and checks what
/// the panic report on stderr says.
#[test]
fn a_panic_is_reported_with_its_core_and_location() {
    if std::env::var_os("SESA_PANIC_CHILD").is_some() {
        run(2, || async {
            let result = spawn_on(C1, || panic!("reported boom")).await;
            assert!(matches!(result, Err(EventError::Panicked { .. })));
        });
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_panic_is_reported_with_its_core_and_location",
            "--nocapture",
        ])
        .env("SESA_PANIC_CHILD", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("sesa: event panicked"))
        .unwrap_or_else(|| panic!("no report in:\n{stderr}"));
    assert!(line.contains("on core 1"), "{line}");
    assert!(line.contains("runtime_events.rs:"), "{line}");
    assert!(line.ends_with("reported boom"), "{line}");
}
