//! The inbox wake-up protocol under shuttle's randomized scheduler: senders push while
//! the receiver drains, arms, spins and parks, in every interleaving shuttle picks. A
//! lost wake-up leaves the receiver parked forever, which shuttle reports as a deadlock.
//!
//! Run with `cargo test -p sesa-hosted --features shuttle --test shuttle_inbox`.
#![cfg(feature = "shuttle")]

use std::sync::Arc;
use std::task::{Wake, Waker};

use sesa_hosted::__private::{Idle, Inbox};
use shuttle::sync::{Condvar, Mutex};
use shuttle::thread;

/// A waker that unparks the receiver thread.
#[derive(Default)]
struct Parker {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Parker {
    fn park(&self) {
        let mut woken = self.woken.lock().unwrap();
        while !*woken {
            woken = self.cv.wait(woken).unwrap();
        }
        *woken = false;
    }
}

impl Wake for Parker {
    fn wake(self: Arc<Self>) {
        *self.woken.lock().unwrap() = true;
        self.cv.notify_one();
    }
}

fn scenario(senders: usize, per_sender: usize, spins: u32) {
    let inbox = Arc::new(Inbox::<usize>::new());
    let parker = Arc::new(Parker::default());
    let waker = Waker::from(parker.clone());
    let handles: Vec<_> = (0..senders)
        .map(|s| {
            let inbox = inbox.clone();
            thread::spawn(move || {
                for i in 0..per_sender {
                    inbox.push(s * 1000 + i);
                }
            })
        })
        .collect();
    // The receiver: the inbox task's poll loop, then the before-park hook, then park.
    let mut received = Vec::new();
    while received.len() < senders * per_sender {
        while let Some(item) = inbox.pop() {
            received.push(item);
        }
        if received.len() == senders * per_sender {
            break;
        }
        if !inbox.arm(&waker) {
            continue;
        }
        match inbox.idle(spins, || false) {
            Idle::Resume => continue,
            Idle::Park => parker.park(),
        }
    }
    for h in handles {
        h.join().unwrap();
    }
    // Per-sender order is preserved.
    for s in 0..senders {
        let mine: Vec<_> = received.iter().filter(|v| **v / 1000 == s).collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{received:?}");
    }
}

#[test]
fn no_wakeup_is_lost_when_the_receiver_parks_at_once() {
    shuttle::check_random(|| scenario(2, 3, 0), 5_000);
}

#[test]
fn no_wakeup_is_lost_when_the_receiver_spins_first() {
    shuttle::check_random(|| scenario(2, 3, 3), 5_000);
}

#[test]
fn no_wakeup_is_lost_exhaustively_for_one_sender() {
    shuttle::check_pct(|| scenario(1, 2, 2), 5_000, 3);
}
