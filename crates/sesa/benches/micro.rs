//! `cargo bench -p sesa`: the same suite as `sesa bench micro`, at full size.

fn main() -> anyhow::Result<()> {
    // `cargo test --benches` runs this too: keep that a smoke run.
    let quick = std::env::args().any(|a| a == "--test");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = if quick {
        sesa::bench::MicroConfig::quick(cores)
    } else {
        sesa::bench::MicroConfig::full(cores)
    };
    print!("{}", sesa::bench::micro(&config)?.table());
    Ok(())
}
