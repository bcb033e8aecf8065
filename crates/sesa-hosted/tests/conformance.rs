//! The platform conformance suite (`sesa_event::conformance`) on the hosted platform, on
//! one core and on three; and `stop` ending every core's loop.

use sesa_hosted::{Config, Exit, Runtime};

fn suite_on(cores: usize) {
    let config = Config {
        pin_threads: false,
        idle_spins: 200,
        ..Config::with_cores(cores)
    };
    let exit = Runtime::new(config)
        .unwrap()
        .run(|| sesa_event::conformance::run(|check| check.runs_here()))
        .unwrap();
    let Exit::Completed(results) = exit else {
        panic!("the runtime ended with {}", exit.code());
    };
    let ran = results.len();
    let failed: Vec<_> = results.into_iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "on {cores} core(s): {failed:#?}");
    // Every check but those that need two cores ran.
    let expected = sesa_event::conformance::CHECKS
        .iter()
        .filter(|c| cores >= 2 || c.needs != sesa_event::conformance::Needs::TwoCores)
        .count();
    assert_eq!(ran, expected);
}

#[test]
fn the_hosted_platform_conforms_on_one_core() {
    suite_on(1);
}

#[test]
fn the_hosted_platform_conforms_on_three_cores() {
    suite_on(3);
}

#[test]
fn stop_ends_every_loop_with_its_code() {
    let config = Config {
        pin_threads: false,
        ..Config::with_cores(3)
    };
    let exit = Runtime::new(config)
        .unwrap()
        .run(|| async {
            // Every core busy with a task that never ends on its own.
            for core in sesa_event::all_cores() {
                sesa_event::spawn_on_async(core, core::future::pending::<()>);
            }
            sesa_event::sleep(std::time::Duration::from_millis(20)).await;
            sesa_event::stop(7);
            core::future::pending::<()>().await;
        })
        .unwrap();
    assert_eq!(exit.code(), 7);
}
