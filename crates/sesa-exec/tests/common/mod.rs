//! Shared by the executive's multi-node tests: a node is a hosted runtime on its own
//! thread.

use sesa_hosted::{Config, Exit, Runtime};

/// Runs a node with `cores` cores on its own thread; its main future's output is the
/// thread's result. Panics (failing the test) if the node stops any other way.
pub fn node_thread<T, Fut>(
    cores: usize,
    main: impl FnOnce() -> Fut + Send + 'static,
) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    std::thread::spawn(move || {
        let config = Config {
            pin_threads: false,
            idle_spins: 100,
            ..Config::with_cores(cores)
        };
        match Runtime::new(config).unwrap().run(main).unwrap() {
            Exit::Completed(v) => v,
            other => panic!("a node stopped with {}", other.code()),
        }
    })
}
