//! The `sesa` command.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sesa::bench::{MicroConfig, micro};
use sesa_hosted::{Config, Exit, Runtime};

/// sesa: a distributed library OS of Elastic Building Blocks.
#[derive(Parser)]
#[command(name = "sesa", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs an application.
    Run {
        #[command(subcommand)]
        app: App,
    },
    /// Runs the memcached-compatible data store: on one node in this process, or on an
    /// elastic cluster of `--nodes` local node processes (this process is the frontend).
    Kv(KvCmd),
    /// Runs one node of an application (started by the frontend, or by hand to join one).
    Node(sesa_frontend::NodeArgs),
    /// Shows a running application: its nodes, cores, EBBs and messages.
    Status(StatusCmd),
    /// Grows or shrinks a running application to a number of nodes (new nodes join and
    /// take work; leaving nodes drain first). Waits until it is done.
    Scale(ScaleCmd),
    /// Runs benchmarks.
    Bench {
        #[command(subcommand)]
        suite: Suite,
    },
    /// Runs workloads on the deterministic simulator under random faults (crashes,
    /// restarts, partitions, joins, leaves) and checks their invariants: one seed
    /// (`--seed`, to replay a failure) or a sweep (`--seeds N`).
    Sim(SimCmd),
}

#[derive(Subcommand)]
enum App {
    /// The paper's distributed counter: every core increments one counter EBB K times,
    /// then the total is printed as `total=<n>` (n = cores x K, exactly).
    Counter(CounterCmd),
    /// Prints files from nodes: each node reads its share of the files through the
    /// frontend's offloaded file system and prints them through its offloaded console.
    Cat(CatCmd),
}

/// The arguments of `Command::Kv`.
#[derive(clap::Args)]
struct KvCmd {
    /// The first node's port.
    #[arg(long, default_value_t = 11211)]
    port: u16,
    /// The address the store's nodes listen on (like memcached's -l; 0.0.0.0: every
    /// interface).
    #[arg(short = 'l', long, default_value = "127.0.0.1")]
    listen: std::net::IpAddr,
    /// Cores (default: all the process may use).
    #[arg(long)]
    cores: Option<usize>,
    /// Memory for items, in MiB (like memcached's -m).
    #[arg(short = 'm', long = "memory", default_value_t = 64)]
    memory_mb: usize,
    /// Largest item, in bytes (like memcached's -I; default 1 MiB).
    #[arg(long, default_value_t = 1 << 20)]
    item_max: usize,
    /// Open client connections allowed (like memcached's -c).
    #[arg(short = 'c', long, default_value_t = 1024)]
    max_connections: u64,
    /// Nodes; node i listens on port + i - 1. More than 1 runs them as processes
    /// under this one, which prints `node <id> listening on 127.0.0.1:<port>` per node.
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// Owners of each key on a cluster (a primary and its replicas).
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    /// How a cluster places keys: `partitioned` over every node (the default),
    /// `central` on the first node(s), or `cached`: central, with a read cache on
    /// every other node (the paper's progression, section 4.4).
    #[arg(long, default_value = "partitioned")]
    layout: sesa_apps::memcache::cluster::Layout,
    /// Which nodes own a key of a partitioned cluster: `rendezvous` (the default:
    /// a change moves the fewest keys) or `ketama` (libmemcached's ketama over the
    /// nodes' client addresses: a ketama client that reads `config get cluster` sends
    /// every key to its primary).
    #[arg(long, default_value = "rendezvous")]
    placement: sesa_apps::memcache::cluster::Placement,
    /// The address `config get cluster` gives clients for the nodes when they listen
    /// on every interface (-l 0.0.0.0); default 127.0.0.1.
    #[arg(long)]
    advertise: Option<std::net::IpAddr>,
    /// Empty polls an idle core makes before it sleeps (0: sleep at once; more
    /// spends CPU to answer sooner).
    #[arg(long)]
    idle_spins: Option<u32>,
    /// A cluster's frontend listens for its nodes on this address (default 127.0.0.1:
    /// nodes on this machine; nodes in other network namespaces need one they reach).
    /// A node that reaches it from an address other than 127.0.0.1 listens there (for
    /// its clients too, instead of `-l`'s).
    #[arg(long, default_value = "127.0.0.1")]
    frontend_listen: std::net::IpAddr,
    /// A command each node process of a cluster runs under, `{id}` standing for the
    /// node's id (e.g. `ip netns exec ns{id}`: node 3 in network namespace ns3). It must
    /// exec the node, whose process the frontend stops by its id.
    #[arg(long, value_name = "COMMAND")]
    node_prefix: Option<String>,
    #[command(flatten)]
    native: NativeArgs,
}

/// The arguments of `Command::Status`.
#[derive(clap::Args)]
struct StatusCmd {
    /// The frontend's process id (default: the most recently started application).
    #[arg(long)]
    pid: Option<u32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The arguments of `Command::Scale`.
#[derive(clap::Args)]
struct ScaleCmd {
    /// The number of nodes wanted.
    #[arg(long)]
    nodes: u32,
    /// The frontend's process id (default: the most recently started application).
    #[arg(long)]
    pid: Option<u32>,
}

/// The arguments of `Command::Sim`.
#[derive(clap::Args)]
struct SimCmd {
    /// The workload (default: every one, `Workload::ALL`).
    #[arg(long)]
    workload: Option<sesa::sim::Workload>,
    /// Runs this one seed and prints its outcome in full.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Runs this many seeds, from `--first`.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed of a sweep.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Nodes at the start.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Cores per node.
    #[arg(long, default_value_t = 2)]
    cores: usize,
    /// Virtual seconds of faults.
    #[arg(long, default_value_t = 8)]
    fault_seconds: u64,
    /// Injects no faults (a baseline).
    #[arg(long)]
    no_faults: bool,
    /// How wide the faults are: `standard` (cuts shorter than failure detection) or
    /// `wide` (cuts from 5 ms to 20 s, longer than every timeout, half of them with
    /// their connections reset).
    #[arg(long, value_enum, default_value_t = sesa::sim::Profile::Standard)]
    faults: sesa::sim::Profile,
    /// Takes nodes away without waiting for repairs (two replicas of a key may be
    /// lost at once): shows that the checkers report losses.
    #[arg(long)]
    careless: bool,
    /// The store's clients (workloads store and kv) also delete: every fourth write of
    /// a key is a `delete`, judged as a version of the key like a set.
    #[arg(long)]
    deletes: bool,
    /// Prints one JSON line per run.
    #[arg(long)]
    json: bool,
    /// Runs this many simulations at once (default: one per CPU).
    #[arg(long)]
    jobs: Option<usize>,
}

/// The arguments of `Suite::KvElastic`.
#[derive(clap::Args)]
struct BenchKvElasticCmd {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// A small run (the figures mean little).
    #[arg(long)]
    quick: bool,
    /// Keys loaded first (default 1 M; quick 20 k).
    #[arg(long)]
    keys: Option<usize>,
    /// Each node process in a CPU share of its own, this many CPUs (a cgroup each,
    /// the fourth node's too: needs root and a cpu controller); the clients then move
    /// to spread over the four nodes once the keys moved, so the growth shows.
    #[arg(long, value_name = "CPUS")]
    cpu_share: Option<f64>,
    /// How clients pick a node: `any` (the default) or `ketama` (the store places keys
    /// by ketama; each client sends each key to its primary and reads `config get
    /// cluster` again after each change).
    #[arg(long, default_value = "any")]
    clients: sesa::bench_kv::Clients,
}

/// The arguments of `Suite::Micro`.
#[derive(clap::Args)]
struct BenchMicroCmd {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Cores (default: all the process may use).
    #[arg(long)]
    cores: Option<usize>,
    /// Tiny sizes (a smoke run; the figures mean nothing).
    #[arg(long)]
    quick: bool,
    /// Also run the portable measurements on a native node: this kernel
    /// (crates/sesa-native/target/release/sesa-kernel) under QEMU with as many
    /// cores, and print its figures beside the hosted ones.
    #[arg(long, value_name = "KERNEL")]
    native: Option<std::path::PathBuf>,
    /// QEMU's accelerator for `--native` (default: kvm where /dev/kvm opens, else
    /// tcg).
    #[arg(long, value_enum)]
    accel: Option<sesa_frontend::Accel>,
}

/// The arguments of `Suite::Kv`.
#[derive(clap::Args)]
struct BenchKvCmd {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Tiny sizes (a smoke run; the figures mean nothing).
    #[arg(long)]
    quick: bool,
    /// Also run this server under the same load: `memcached` (from PATH), `hosted`
    /// (a hosted `sesa kv`, to compare a `--native` node with), or `hosted-vm` /
    /// `memcached-vm` (a hosted `sesa kv` or memcached in a Linux guest under the
    /// same QEMU as the `--native` node: see `--linux-guest`).
    #[arg(long, value_enum)]
    against: Option<Against>,
    /// For `--against hosted-vm` and `memcached-vm`: the directory
    /// scripts/linux-guest.sh filled (Debian's kernel, and an initrd with this sesa
    /// and memcached in it).
    #[arg(long, value_name = "DIR", default_value = "target/linux-guest")]
    linux_guest: std::path::PathBuf,
    /// For `--against hosted-vm` or `memcached-vm` with `--tap`: the Linux guest's
    /// own tap device, holding 10.0.3.2/24 (scripts/native-tap-bench.sh makes it).
    #[arg(long, value_name = "IFNAME", requires = "tap")]
    guest_tap: Option<String>,
    /// sesa's side as a native node: this kernel image
    /// (crates/sesa-native/target/release/sesa-kernel) booted by QEMU with
    /// `-smp <server cores>`, reached through a forwarded port (or `--tap`); its CPU
    /// figure is the QEMU process's.
    #[arg(long, value_name = "KERNEL")]
    native: Option<std::path::PathBuf>,
    /// QEMU's accelerator for `--native` (default: kvm where /dev/kvm opens, else
    /// tcg).
    #[arg(long, value_enum)]
    accel: Option<sesa_frontend::Accel>,
    /// The `--native` node on this tap device instead of QEMU's user network: it
    /// must hold 10.0.2.2/24 in this network namespace (see
    /// scripts/native-tap-bench.sh, which makes one and runs the benchmark in it).
    #[arg(long, value_name = "IFNAME", requires = "native")]
    tap: Option<String>,
    /// More words for the `--native` kernel's command line: `profile=<hz>` samples
    /// where its CPUs are and prints the report on the console (stderr); see
    /// scripts/native-profile.py.
    #[arg(long, value_name = "WORDS", requires = "native")]
    kernel_args: Option<String>,
    /// Client connections (one thread each).
    #[arg(long)]
    connections: Option<usize>,
    /// Pipeline depths, comma-separated (default 1,16).
    #[arg(long, value_delimiter = ',')]
    pipeline: Vec<usize>,
    /// Distinct keys, all preloaded.
    #[arg(long)]
    keys: Option<usize>,
    /// Key length in bytes (default 32).
    #[arg(long)]
    key_size: Option<usize>,
    /// Value length in bytes (default 64).
    #[arg(long)]
    value_size: Option<usize>,
    /// Gets, percent (default 90; the rest are sets).
    #[arg(long)]
    get_percent: Option<u32>,
    /// Seconds per measured run.
    #[arg(long)]
    seconds: Option<f64>,
    /// Interleaved runs per server and depth (figures are medians).
    #[arg(long)]
    runs: Option<usize>,
    /// Server cores (default 1).
    #[arg(long)]
    server_cores: Option<usize>,
    /// Passed to `sesa kv --idle-spins`.
    #[arg(long)]
    idle_spins: Option<u32>,
    /// sesa on this many node processes (`sesa kv --nodes`), the connections spread
    /// over them; CPU counts the frontend and every node (default 1).
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// Each node process in a CPU share of its own, this many CPUs (a cgroup each,
    /// made and removed by the benchmark: needs root and a cpu controller; the
    /// frontend and the clients are not limited).
    #[arg(long, value_name = "CPUS")]
    cpu_share: Option<f64>,
    /// How clients pick a node of a cluster: `any` (client c talks to node c mod n;
    /// the default) or `ketama` (the store places keys by ketama, and each client reads
    /// `config get cluster` and sends each key to its primary).
    #[arg(long, default_value = "any")]
    clients: sesa::bench_kv::Clients,
}

/// The arguments of `Suite::KvScale`.
#[derive(clap::Args)]
struct BenchKvScaleCmd {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Tiny sizes, up to 2 nodes (a smoke run; the figures mean nothing).
    #[arg(long)]
    quick: bool,
    /// CPUs per node process (a cgroup each: needs root and a cpu controller).
    #[arg(long, value_name = "CPUS", default_value_t = 0.15)]
    cpu_share: f64,
    /// Measure 1 to this many nodes (default 4; quick 2).
    #[arg(long)]
    max_nodes: Option<u32>,
    /// Client connections per node (one thread each).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Pipeline depth.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Distinct keys, all preloaded (default 200 k; quick 1 k).
    #[arg(long)]
    keys: Option<usize>,
    /// Seconds per measured run (default 4; quick 0.3).
    #[arg(long)]
    seconds: Option<f64>,
    /// Gets, percent (default 90; the rest are sets).
    #[arg(long, default_value_t = 90)]
    get_percent: u32,
    /// Interleaved rounds over the cluster sizes (figures are medians; default 3, quick 1).
    #[arg(long)]
    runs: Option<usize>,
    /// Passed to `sesa kv --idle-spins`.
    #[arg(long)]
    idle_spins: Option<u32>,
    /// Which clients to measure, interleaved: `any`, `ketama` (see `sesa bench kv
    /// --clients`), or both (comma-separated; default both).
    #[arg(long, value_delimiter = ',', default_value = "any,ketama")]
    clients: Vec<sesa::bench_kv::Clients>,
}

/// The arguments of `Suite::Msg`.
#[derive(clap::Args)]
struct BenchMsgCmd {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Tiny sizes (a smoke run; the figures mean nothing).
    #[arg(long)]
    quick: bool,
}

/// The arguments of `App::Counter`.
#[derive(clap::Args)]
struct CounterCmd {
    /// Increments per core.
    #[arg(long, default_value_t = 1_000_000)]
    incs: u64,
    /// Cores to run on, per node (default: all the process may use).
    #[arg(long)]
    cores: Option<usize>,
    /// Run on this many node processes (launched by this process, the frontend)
    /// instead of in this process; the total is then nodes x cores x K.
    #[arg(long)]
    nodes: Option<u32>,
    #[command(flatten)]
    native: NativeArgs,
}

/// The arguments of `App::Cat`.
#[derive(clap::Args)]
struct CatCmd {
    /// Node processes to run on.
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// A directory the nodes may read and write (repeatable); nothing else is
    /// reachable.
    #[arg(long = "grant", value_name = "DIR")]
    grants: Vec<std::path::PathBuf>,
    /// Cores per node.
    #[arg(long)]
    cores: Option<usize>,
    /// The files.
    files: Vec<String>,
    #[command(flatten)]
    native: NativeArgs,
}

use sesa_frontend::{NO_CLIENTS as NO_STORE, NativeArgs};

/// The peer of `sesa bench kv --against`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Against {
    /// memcached, from PATH.
    Memcached,
    /// A hosted `sesa kv` (to compare a `--native` node with).
    Hosted,
    /// A hosted `sesa kv` in a Linux guest under the same QEMU as the `--native` node.
    HostedVm,
    /// memcached in a Linux guest under the same QEMU as the `--native` node.
    MemcachedVm,
}

#[derive(Subcommand)]
// Parsed once per process: the size of the largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Suite {
    /// The data store under load growing 3 -> 4 nodes, then losing one to kill -9:
    /// time to rebalance, worst second, seconds below half, acknowledged writes lost.
    KvElastic(BenchKvElasticCmd),
    /// EBB call, miss, counter and cross-core spawn costs, against their baselines.
    Micro(BenchMicroCmd),
    /// The data store under a memcached load, optionally against memcached itself
    /// (same load, same core count, interleaved runs).
    Kv(BenchKvCmd),
    /// Remote invocation between two nodes, against a bare tokio TCP echo.
    Msg(BenchMsgCmd),
    /// The data store on 1, 2, ... N nodes, each node process with a CPU share of its
    /// own (a cgroup): does throughput grow with the nodes?
    KvScale(BenchKvScaleCmd),
}

/// mimalloc, not glibc's `malloc`: a store node under load spent 9% of its samples in
/// `_int_malloc` and more in `malloc_consolidate` (a messenger frame above a kilobyte
/// sweeps every small freed block), and a 4-node store served 77-93 k requests/s
/// with glibc against 98-110 k with mimalloc (`sesa bench kv-elastic`, interleaved).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Simulated faults make nodes log what real ones would (connections reset, peers
    // lost) by the thousand; a sweep reports through its checkers instead.
    let quiet = matches!(cli.command, Command::Sim { .. });
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if quiet { "off" } else { "warn" })
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sesa: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The frontend's configuration for the `sesa` binary's built-in applications.
fn frontend_config(
    nodes: u32,
    cores_per_node: Option<usize>,
    grants: Vec<std::path::PathBuf>,
    native: Option<sesa_frontend::NativeNodes>,
    idle_spins: Option<u32>,
) -> sesa_frontend::FrontendConfig {
    sesa_frontend::FrontendConfig {
        cores_per_node,
        grants,
        native,
        idle_spins,
        ..sesa_frontend::FrontendConfig::local(
            nodes,
            vec!["node".into()],
            std::sync::Arc::new(sesa_frontend::Console),
        )
    }
}

/// Runs `A` on node processes with this process as their frontend; `done` turns its
/// output into the exit status.
fn run_on_nodes<A: sesa_frontend::Application>(
    config: sesa_frontend::FrontendConfig,
    settings: A::Settings,
    done: impl FnOnce(A::Output) -> ExitCode,
) -> anyhow::Result<ExitCode> {
    if config.nodes == 0 {
        anyhow::bail!("--nodes must be at least 1");
    }
    match sesa_frontend::run::<A>(config, settings)? {
        Exit::Completed(output) => Ok(done(output?)),
        other => {
            eprintln!("sesa: stopped before the application finished");
            Ok(ExitCode::from(u8::try_from(other.code()).unwrap_or(1)))
        }
    }
}

fn all_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Runs the subcommand.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            app: App::Counter(cmd),
        } => run_counter(cmd),
        Command::Run { app: App::Cat(cmd) } => run_cat(cmd),
        Command::Sim(cmd) => sim(cmd),
        Command::Status(cmd) => status(cmd),
        Command::Kv(cmd) => kv(cmd),
        Command::Scale(cmd) => scale(cmd),
        Command::Node(cmd) => node(cmd),
        Command::Bench {
            suite: Suite::Micro(cmd),
        } => bench_micro(cmd),
        Command::Bench {
            suite: Suite::Msg(cmd),
        } => bench_msg(cmd),
        Command::Bench {
            suite: Suite::KvElastic(cmd),
        } => bench_kv_elastic(cmd),
        Command::Bench {
            suite: Suite::Kv(cmd),
        } => bench_kv(cmd),
        Command::Bench {
            suite: Suite::KvScale(cmd),
        } => bench_kv_scale(cmd),
    }
}

/// `sesa run counter`: on node processes, or in this process.
fn run_counter(cmd: CounterCmd) -> anyhow::Result<ExitCode> {
    let CounterCmd {
        incs,
        cores,
        nodes,
        native,
    } = cmd;
    match nodes {
        Some(nodes) => run_counter_on_nodes(nodes, incs, cores, native),
        None => run_counter_here(incs, cores, native),
    }
}

/// The counter on `nodes` node processes, this process their frontend.
fn run_counter_on_nodes(
    nodes: u32,
    incs: u64,
    cores: Option<usize>,
    native: NativeArgs,
) -> anyhow::Result<ExitCode> {
    run_on_nodes::<sesa_counter::frontend::CounterFrontend>(
        frontend_config(nodes, cores, Vec::new(), native.nodes(NO_STORE), None),
        sesa_counter::frontend::ElasticCount::new(incs),
        |total| {
            println!("total={total}");
            ExitCode::SUCCESS
        },
    )
}

/// The counter in this process, on its cores.
fn run_counter_here(
    incs: u64,
    cores: Option<usize>,
    native: NativeArgs,
) -> anyhow::Result<ExitCode> {
    if native.wanted() {
        anyhow::bail!("--native runs nodes: say how many with --nodes");
    }
    let runtime = Runtime::new(Config {
        cores,
        handle_signals: true,
        ..Config::default()
    })?;
    let cores = runtime.cores();
    let started = std::time::Instant::now();
    let exit = runtime.run(move || async move {
        // Printed once every core runs and signals are handled.
        eprintln!("counter: counting on {} cores", sesa_event::cores());
        sesa_apps::counter::count_on_all_cores(incs).await
    })?;
    match exit {
        Exit::Completed(total) => {
            let total = total.context("the counter failed")?;
            println!("total={total}");
            eprintln!(
                "counter: {cores} cores x {incs} increments in {:.1} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprintln!("sesa: stopped before the count finished");
            Ok(ExitCode::from(u8::try_from(other.code()).unwrap_or(1)))
        }
    }
}

/// `sesa run cat`: nodes print files read through the frontend.
fn run_cat(
    CatCmd {
        nodes,
        grants,
        cores,
        files,
        native,
    }: CatCmd,
) -> anyhow::Result<ExitCode> {
    run_on_nodes::<sesa_cat::CatFrontend>(
        frontend_config(nodes, cores, grants, native.nodes(NO_STORE), None),
        files,
        |printed| match printed.failed {
            0 => ExitCode::SUCCESS,
            failed => {
                eprintln!("sesa: {failed} file(s) could not be printed");
                ExitCode::FAILURE
            }
        },
    )
}

/// `sesa sim`: one seed in full, or a sweep.
fn sim(
    SimCmd {
        workload,
        seed,
        seeds,
        first,
        nodes,
        cores,
        fault_seconds,
        no_faults,
        faults,
        careless,
        deletes,
        json,
        jobs,
    }: SimCmd,
) -> anyhow::Result<ExitCode> {
    use sesa::sim::{Options, Workload};
    let workloads: Vec<Workload> = workload.map_or(Workload::ALL.to_vec(), |w| vec![w]);
    let base = Options {
        nodes,
        cores,
        faults: std::time::Duration::from_secs(fault_seconds),
        inject: !no_faults,
        profile: faults,
        careless,
        deletes,
        ..Options::new(workloads[0], seed.unwrap_or(first))
    };
    let seeds = match seed {
        Some(s) => s..s + 1,
        None => first..first.saturating_add(seeds),
    };
    let runs = (seeds.end - seeds.start) * workloads.len() as u64;
    let started = std::time::Instant::now();
    let one = seed.is_some();
    let jobs = jobs.unwrap_or_else(all_cores);
    let failed = sesa::sim::sweep(&workloads, seeds, &base, jobs, |o| {
        if json {
            println!("{}", serde_json::to_string(o).unwrap_or_default());
        } else if one {
            println!(
                "{} seed {}: {} in {} ms virtual, {} turns, trace {}",
                o.workload,
                o.seed,
                if o.passed() { "passed" } else { "FAILED" },
                o.virtual_ms,
                o.turns,
                o.trace_hash
            );
            println!("  faults: {:?}", o.faults);
            for e in &o.events {
                println!("  {e}");
            }
            println!("  counts: {:?}", o.counts);
            for f in &o.failures {
                println!("  failure: {f}");
            }
        } else if !o.passed() {
            println!(
                "FAILED {} seed {}: {} (replay: {})",
                o.workload,
                o.seed,
                o.failures.first().map_or("", String::as_str),
                o.replay
            );
        }
    });
    if !json {
        println!(
            "sim: {} run(s), {} failed, {:.1} s",
            runs,
            failed.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `sesa status`: a running application's nodes.
fn status(StatusCmd { pid, json }: StatusCmd) -> anyhow::Result<ExitCode> {
    let status = sesa_frontend::status(pid)?;
    if json {
        println!("{}", status.to_json());
    } else {
        print!("{}", status.table());
    }
    Ok(ExitCode::SUCCESS)
}

/// `sesa kv`: the store on one node in this process, or on a cluster of node processes.
fn kv(
    KvCmd {
        port,
        listen,
        cores,
        memory_mb,
        item_max,
        max_connections,
        nodes,
        replicas,
        layout,
        placement,
        advertise,
        idle_spins,
        frontend_listen,
        node_prefix,
        native,
    }: KvCmd,
) -> anyhow::Result<ExitCode> {
    if nodes == 0 || replicas == 0 {
        anyhow::bail!("--nodes and --replicas must be at least 1");
    }
    if placement != sesa_apps::memcache::cluster::Placement::Rendezvous
        && layout != sesa_apps::memcache::cluster::Layout::Partitioned
    {
        anyhow::bail!("--placement applies to the partitioned layout (--layout {layout:?})");
    }
    let native = match listen {
        std::net::IpAddr::V4(host) => native.nodes(std::net::SocketAddrV4::new(host, port)),
        std::net::IpAddr::V6(_) if native.wanted() => anyhow::bail!(
            "--listen {listen}: a native node's port is forwarded from an IPv4 address"
        ),
        std::net::IpAddr::V6(_) => None,
    };
    // A native store is a cluster even of one node: the frontend launches it.
    if nodes > 1 || native.is_some() {
        let settings = sesa_kv::KvSettings {
            port,
            listen,
            memory_bytes: memory_mb.saturating_mul(1 << 20),
            item_max,
            max_connections,
            replicas,
            layout,
            placement,
            advertise,
        };
        if idle_spins.is_some() && native.is_some() {
            // A native node's cores poll by the kernel's own policy.
            anyhow::bail!("--idle-spins applies to hosted nodes, not with --native");
        }
        if node_prefix.is_some() && native.is_some() {
            anyhow::bail!("--node-prefix applies to hosted nodes, not with --native");
        }
        let config = sesa_frontend::FrontendConfig {
            listen: std::net::SocketAddr::new(frontend_listen, 0),
            node_prefix: node_prefix
                .iter()
                .flat_map(|p| p.split_whitespace())
                .map(str::to_owned)
                .collect(),
            ..frontend_config(nodes, cores, Vec::new(), native, idle_spins)
        };
        return run_on_nodes::<sesa_kv::KvFrontend>(config, settings, |never| match never {});
    }
    let config = sesa_apps::memcache::server::KvConfig {
        limits: sesa_apps::memcache::protocol::Limits {
            item_max,
            ..Default::default()
        },
        memory_bytes: memory_mb.saturating_mul(1 << 20),
        max_connections,
        pid: std::process::id(),
    };
    let defaults = Config::default();
    let runtime = Runtime::new(Config {
        cores,
        handle_signals: true,
        idle_spins: idle_spins.unwrap_or(defaults.idle_spins),
        ..defaults
    })?;
    let exit = runtime.run(move || async move {
        let kv = sesa_apps::memcache::server::Kv::create(&config)?;
        let addr = std::net::SocketAddr::new(listen, port);
        let addr = sesa_apps::memcache::server::serve_every_core(kv, addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        println!("node 0 listening on {addr}");
        // The cores serve until a signal stops the runtime.
        std::future::pending::<()>().await;
        anyhow::Ok(())
    })?;
    match exit {
        Exit::Completed(result) => result.map(|()| ExitCode::SUCCESS),
        other => Ok(ExitCode::from(u8::try_from(other.code()).unwrap_or(1))),
    }
}

/// `sesa scale`: grows or shrinks a running application.
fn scale(ScaleCmd { nodes, pid }: ScaleCmd) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let outcome = sesa_frontend::scale(pid, nodes)?;
    println!(
        "scaled to {outcome} (command took {} ms)",
        started.elapsed().as_millis()
    );
    Ok(ExitCode::SUCCESS)
}

/// `sesa node`: one node of an application, with the built-in applications.
fn node(args: sesa_frontend::NodeArgs) -> anyhow::Result<ExitCode> {
    sesa_frontend::run_node(args, sesa::builtin(), "sesa")
}

/// `sesa bench micro`.
fn bench_micro(
    BenchMicroCmd {
        json,
        cores,
        quick,
        native,
        accel,
    }: BenchMicroCmd,
) -> anyhow::Result<ExitCode> {
    let cores = cores.unwrap_or_else(all_cores);
    let config = if quick {
        MicroConfig::quick(cores)
    } else {
        MicroConfig::full(cores)
    };
    let mut report = micro(&config)?;
    if let Some(kernel) = native {
        let accel = accel.unwrap_or_else(sesa_frontend::NativeNodes::default_accel);
        let figures = sesa::bench::native_micro(&kernel, accel, cores, quick)?;
        report = report.with_native(accel, figures);
    }
    print_report(json, &report, || report.table())
}

/// `sesa bench msg`.
fn bench_msg(BenchMsgCmd { json, quick }: BenchMsgCmd) -> anyhow::Result<ExitCode> {
    let config = if quick {
        sesa::bench_msg::MsgConfig::quick()
    } else {
        sesa::bench_msg::MsgConfig::full()
    };
    let report = sesa::bench_msg::msg(&config)?;
    print_report(json, &report, || report.table())
}

/// `sesa bench kv-elastic`.
fn bench_kv_elastic(
    BenchKvElasticCmd {
        json,
        quick,
        keys,
        cpu_share,
        clients,
    }: BenchKvElasticCmd,
) -> anyhow::Result<ExitCode> {
    use sesa::bench_elastic::ElasticConfig;
    let base = if quick {
        ElasticConfig::quick()
    } else {
        ElasticConfig::full()
    };
    let config = ElasticConfig {
        keys: keys.unwrap_or(base.keys).max(1),
        // Spread over 3 nodes, then 4, then 3 again: as many clients on each.
        connections: match cpu_share {
            Some(_) => 12,
            None => base.connections,
        },
        cpu_share,
        clients,
        ..base
    };
    let report = sesa::bench_elastic::run(&config)?;
    print_report(json, &report, || report.table())
}

/// `sesa bench kv`.
fn bench_kv(
    BenchKvCmd {
        json,
        quick,
        against,
        linux_guest,
        guest_tap,
        connections,
        pipeline,
        keys,
        key_size,
        value_size,
        get_percent,
        seconds,
        runs,
        server_cores,
        idle_spins,
        nodes,
        cpu_share,
        clients,
        native,
        accel,
        tap,
        kernel_args,
    }: BenchKvCmd,
) -> anyhow::Result<ExitCode> {
    use sesa::bench_kv::{GuestServer, KvBenchConfig, LinuxGuest, NativeServer, Peer};
    let guest = |server| {
        Peer::LinuxVm(LinuxGuest {
            server,
            dir: linux_guest.clone(),
            tap: guest_tap.clone(),
        })
    };
    if guest_tap.is_some() && !matches!(against, Some(Against::HostedVm | Against::MemcachedVm)) {
        anyhow::bail!(
            "--guest-tap is the Linux guest's: it goes with --against hosted-vm or memcached-vm"
        );
    }
    let base = if quick {
        KvBenchConfig::quick()
    } else {
        KvBenchConfig::full()
    };
    let config = KvBenchConfig {
        connections: connections.unwrap_or(base.connections),
        pipelines: if pipeline.is_empty() {
            base.pipelines
        } else {
            pipeline
        },
        keys: keys.unwrap_or(base.keys),
        key_size: key_size.unwrap_or(base.key_size),
        value_size: value_size.unwrap_or(base.value_size),
        get_percent: get_percent.unwrap_or(base.get_percent).min(100),
        seconds: seconds.unwrap_or(base.seconds).clamp(0.05, 600.0),
        runs: runs.unwrap_or(base.runs),
        server_cores: server_cores.unwrap_or(base.server_cores),
        against: against.map(|a| match a {
            Against::Memcached => Peer::Memcached,
            Against::Hosted => Peer::Hosted,
            Against::HostedVm => guest(GuestServer::Sesa),
            Against::MemcachedVm => guest(GuestServer::Memcached),
        }),
        native: native.map(|kernel| NativeServer {
            kernel,
            accel: accel.unwrap_or_else(sesa_frontend::NativeNodes::default_accel),
            tap,
            kernel_args,
        }),
        idle_spins,
        nodes: nodes.max(1),
        cpu_share,
        clients,
    };
    let report = sesa::bench_kv::kv(&config)?;
    print_report(json, &report, || report.table())
}

/// `sesa bench kv-scale`.
fn bench_kv_scale(
    BenchKvScaleCmd {
        json,
        quick,
        cpu_share,
        max_nodes,
        connections,
        pipeline,
        keys,
        seconds,
        get_percent,
        runs,
        idle_spins,
        clients,
    }: BenchKvScaleCmd,
) -> anyhow::Result<ExitCode> {
    use sesa::bench_kv::KvBenchConfig;
    let base = KvBenchConfig {
        keys: 200_000,
        seconds: 4.0,
        ..KvBenchConfig::full()
    };
    let base = if quick {
        KvBenchConfig {
            keys: 1_000,
            seconds: 0.3,
            runs: 1,
            ..base
        }
    } else {
        base
    };
    let per_node = KvBenchConfig {
        connections: connections.max(1),
        pipelines: vec![pipeline.max(1)],
        keys: keys.unwrap_or(base.keys).max(1),
        seconds: seconds.unwrap_or(base.seconds).clamp(0.05, 600.0),
        runs: runs.unwrap_or(base.runs).max(1),
        get_percent: get_percent.min(100),
        idle_spins,
        ..base
    };
    let max_nodes = max_nodes.unwrap_or(if quick { 2 } else { 4 });
    let report = sesa::bench_scale::kv_scale(&per_node, max_nodes, cpu_share, &clients)?;
    print_report(json, &report, || report.table())
}

/// Prints a benchmark's report as one JSON object or as its table.
fn print_report<T: serde::Serialize>(
    json: bool,
    report: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{}", table());
    }
    Ok(ExitCode::SUCCESS)
}
