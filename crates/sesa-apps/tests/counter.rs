//! The distributed counter on the hosted runtime.

use sesa_apps::counter::{Counter, count_on_all_cores, inc_everywhere_dec_once};
use sesa_hosted::{Config, Exit, Runtime};

fn run<T: Send + 'static>(
    cores: usize,
    main: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let config = Config {
        pin_threads: false,
        idle_spins: 100,
        ..Config::with_cores(cores)
    };
    match Runtime::new(config).unwrap().run(|| main).unwrap() {
        Exit::Completed(v) => v,
        other => panic!("{}", other.code()),
    }
}

#[test]
fn the_total_is_exact_across_cores() {
    for cores in [1, 2, 3] {
        let total = run(cores, async { count_on_all_cores(100_003).await.unwrap() });
        assert_eq!(total, cores as i64 * 100_003, "{cores} cores");
    }
}

#[test]
fn inc_dec_val_agree() {
    let v = run(3, async {
        let counter = Counter::create().unwrap();
        assert_eq!(counter.val(), 0, "no rep yet: zero");
        inc_everywhere_dec_once(counter).await.unwrap()
    });
    assert_eq!(v, 2);
}

#[test]
fn a_destroyed_counter_reports_an_error() {
    let failed = run(2, async {
        let counter = Counter::create().unwrap();
        counter.inc();
        sesa_event::destroy(counter.ebb()).await.unwrap();
        counter.try_val().is_err()
    });
    assert!(failed);
}
