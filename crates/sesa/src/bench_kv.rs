//! `sesa bench kv`: a memcached load generator, and the data store against memcached
//! under it in the same run.
//!
//! The load: `connections` client threads, each with its own TCP connection, send
//! `pipeline` requests in one write and read their replies before sending the next
//! batch; keys are `key_size` bytes drawn uniformly from `keys` keys (all preloaded, so
//! gets hit), values `value_size` bytes, `get_percent`% gets and the rest sets. Every
//! run is bounded by `seconds`.
//!
//! The figures per server and pipeline depth (medians over `runs` interleaved runs:
//! sesa, memcached, sesa, memcached...):
//! - `kops`: thousands of requests answered per second;
//! - `p50_us` / `p99_us` / `p999_us`: request latency (send of its batch to its reply);
//! - `cpu_us_per_req`: the server process's CPU time (user + system, from
//!   `/proc/<pid>/stat`) over the measured window divided by the requests answered.
//!   This is the figure that resists a noisy shared machine: the load generator's own
//!   CPU use and the neighbours' do not enter it.
//!
//! The servers run as child processes on 127.0.0.1 with the same core count
//! (`sesa kv --cores C`, `memcached -t C`) and are stopped by PID when the run ends.
//!
//! sesa's side can also be a native node ([`NativeServer`]): the kernel of
//! `crates/sesa-native` booted by QEMU with `-smp C`, serving the same store on every
//! core, reached through QEMU's user network (a forwarded host port) or a tap device
//! ([`NativeServer::tap`]). Its CPU figure is the QEMU process's: the whole emulated
//! machine, the emulation included. Against a hosted node (`--against hosted`) that
//! compares the two platforms under one load. Against a hosted node or memcached in a
//! Linux guest (`--against hosted-vm` or `memcached-vm`, [`LinuxGuest`]) it compares
//! them on equal terms: the same QEMU machine, accelerator, cores, memory, virtio-net
//! device and network for both, only the guest's software differs. That is EbbRT's own
//! comparison (its memcached against memcached in a Linux VM on the same hypervisor).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::Serialize;

/// The load and the runs.
#[derive(Clone, Debug)]
pub struct KvBenchConfig {
    /// Client connections (one thread each).
    pub connections: usize,
    /// Pipeline depths to measure.
    pub pipelines: Vec<usize>,
    /// Distinct keys (all preloaded).
    pub keys: usize,
    /// Key length, bytes.
    pub key_size: usize,
    /// Value length, bytes.
    pub value_size: usize,
    /// Share of gets, percent; the rest are sets.
    pub get_percent: u32,
    /// Length of one measured run.
    pub seconds: f64,
    /// Interleaved runs per server and depth; figures are their medians.
    pub runs: usize,
    /// Server cores (`sesa kv --cores`, `memcached -t`).
    pub server_cores: usize,
    /// Also run this server under the same load.
    pub against: Option<Peer>,
    /// sesa's side as a native node under QEMU (`None`: a hosted `sesa kv`).
    pub native: Option<NativeServer>,
    /// `sesa kv --idle-spins` (default: the runtime's).
    pub idle_spins: Option<u32>,
    /// sesa's nodes: 1 is `sesa kv` in one process; more is `sesa kv --nodes N`, each
    /// node a process with `server_cores` cores, the connections spread over the
    /// nodes, and the CPU counted over the frontend and every node.
    pub nodes: u32,
    /// Each node process in a CPU share of its own, this many CPUs (a cgroup each; the
    /// frontend and the clients are not limited; one node is the one `sesa kv`
    /// process).
    pub cpu_share: Option<f64>,
    /// How clients pick a node (ketama: the store on several nodes places keys by
    /// ketama, and each client sends each request to its key's primary).
    pub clients: Clients,
}

impl KvBenchConfig {
    /// The published load: 32-byte keys, 64-byte values, 90% gets, pipeline 1 and 16.
    pub fn full() -> Self {
        KvBenchConfig {
            connections: 4,
            pipelines: vec![1, 16],
            keys: 100_000,
            key_size: 32,
            value_size: 64,
            get_percent: 90,
            seconds: 3.0,
            runs: 3,
            server_cores: 1,
            against: None,
            native: None,
            idle_spins: None,
            nodes: 1,
            cpu_share: None,
            clients: Clients::AnyNode,
        }
    }

    /// A smoke run (the figures mean nothing).
    pub fn quick() -> Self {
        KvBenchConfig {
            keys: 1_000,
            seconds: 0.3,
            runs: 1,
            ..Self::full()
        }
    }
}

/// The server run beside sesa's under the same load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// memcached, from PATH, with `-t` the server cores.
    Memcached,
    /// A hosted `sesa kv` (to compare a native node with).
    Hosted,
    /// A server in a Linux guest under the same QEMU as the native node.
    LinuxVm(LinuxGuest),
}

/// A Linux guest running a hosted `sesa kv` or memcached (`scripts/linux-guest.sh`
/// builds it): booted like the native node (`-M microvm`, the same accelerator, cores,
/// memory and virtio-net device), its network QEMU's user network or a tap device of
/// its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxGuest {
    /// What the guest serves with.
    pub server: GuestServer,
    /// The directory with `vmlinuz` and `initrd.img` (default `target/linux-guest`).
    pub dir: PathBuf,
    /// The guest's tap device when the native node is on one ([`NativeServer::tap`]):
    /// it must hold 10.0.3.2/24, the guest is 10.0.3.15.
    pub tap: Option<String>,
}

/// A native node as sesa's side of the benchmark.
#[derive(Clone, Debug)]
pub struct NativeServer {
    /// The kernel image (`crates/sesa-native/target/release/sesa-kernel`).
    pub kernel: PathBuf,
    /// QEMU's accelerator.
    pub accel: sesa_frontend::Accel,
    /// The guest's network: QEMU's user network with a forwarded port (`None`), or
    /// this tap device, which must exist, be up and hold 10.0.2.2/24 (the address
    /// the kernel expects its gateway at) in the network namespace the benchmark runs
    /// in; clients then reach the guest at 10.0.2.15 through the host kernel's TCP
    /// stack, as a real NIC would carry them (`scripts/native-tap-bench.sh` makes
    /// such a namespace).
    pub tap: Option<String>,
    /// More words for the kernel's command line (`profile=<hz>`, say).
    pub kernel_args: Option<String>,
}

/// Where the kernel's interface is on a tap device (see [`NativeServer::tap`]).
const NATIVE_GUEST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 2, 15);

/// The server in a [`LinuxGuest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestServer {
    /// A hosted `sesa kv` (`--against hosted-vm`).
    Sesa,
    /// memcached, the host's copy (`--against memcached-vm`).
    Memcached,
}

impl LinuxGuest {
    /// The guest's kernel and initrd, once both are there and the guest's network
    /// matches the native node's (checked before anything boots).
    fn files(&self, native: &NativeServer) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (kernel, initrd) = (self.dir.join("vmlinuz"), self.dir.join("initrd.img"));
        for file in [&kernel, &initrd] {
            if !file.is_file() {
                bail!(
                    "{}: missing (scripts/linux-guest.sh {} builds the Linux guest)",
                    file.display(),
                    self.dir.display()
                );
            }
        }
        if native.tap.is_some() != self.tap.is_some() {
            bail!("the native node and the Linux guest go on tap devices both, or neither");
        }
        Ok((kernel, initrd))
    }
}

/// Where a Linux guest's interface is on its tap device (see [`LinuxGuest::tap`]), and
/// the host's end (10.0.3.2).
const LINUX_GUEST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 3, 15);

/// One server at one pipeline depth.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KvFigures {
    /// Pipeline depth.
    pub pipeline: usize,
    /// Thousands of requests answered per second.
    pub kops: f64,
    /// Median request latency, µs.
    pub p50_us: f64,
    /// 99th percentile request latency, µs.
    pub p99_us: f64,
    /// 99.9th percentile request latency, µs.
    pub p999_us: f64,
    /// Server CPU (user + system) per request answered, µs.
    pub cpu_us_per_req: f64,
    /// Of a cluster's clients' commands, the share answered on the node they arrived
    /// at (the nodes' `stats`: `sesa_answered_here` over it and `sesa_sent_on`); absent
    /// for one node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_here: Option<f64>,
}

/// sesa's figures over the peer's at one depth (above 1 is better for sesa in every
/// field: throughput and requests per CPU-second are sesa/peer, latency is peer/sesa).
#[derive(Clone, Debug, Serialize)]
pub struct KvRatios {
    /// Pipeline depth.
    pub pipeline: usize,
    /// Throughput, sesa / peer.
    pub kops: f64,
    /// p99 latency, peer / sesa.
    pub p99: f64,
    /// Requests per server CPU-second, sesa / peer.
    pub reqs_per_cpu_second: f64,
}

/// What `sesa bench kv --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct KvReport {
    /// The load, for the record.
    pub load: String,
    /// sesa's server: `sesa` (hosted) or `sesa native (QEMU <accel>)`.
    pub server: String,
    /// sesa's figures, one per depth.
    pub sesa: Vec<KvFigures>,
    /// The peer's name (`memcached`, `sesa hosted`; empty without `--against`).
    pub peer: String,
    /// The peer's figures (empty without `--against`).
    pub against: Vec<KvFigures>,
    /// Ratios (empty without `--against`).
    pub ratios: Vec<KvRatios>,
    /// How the nodes' CPU shares were made (empty without `cpu_share`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub shares: String,
}

impl KvReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!("load: {}\n", self.load);
        if !self.shares.is_empty() {
            out += &format!("shares: {}\n", self.shares);
        }
        let width = self.server.len().max(self.peer.len()).max(23);
        out += &format!(
            "{:<width$} depth      kops    p50 µs    p99 µs  p99.9 µs  cpu µs/req\n",
            "server"
        );
        for (name, rows) in [(&self.server, &self.sesa), (&self.peer, &self.against)] {
            for f in rows {
                out += &format!(
                    "{name:<width$} {:>5} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.2}\n",
                    f.pipeline, f.kops, f.p50_us, f.p99_us, f.p999_us, f.cpu_us_per_req
                );
            }
        }
        for r in &self.ratios {
            out += &format!(
                "depth {:>2}: throughput {:.2}x, p99 {:.2}x, requests per CPU-second {:.2}x \
                 ({} over {})\n",
                r.pipeline, r.kops, r.p99, r.reqs_per_cpu_second, self.server, self.peer
            );
        }
        out
    }
}

/// A server child process, killed (by its PID) and reaped when dropped. (The nodes of
/// a `sesa kv --nodes` frontend stop with it: no node outlives its frontend.)
struct Server {
    child: Child,
    /// Where clients connect: one address, or one per node of a cluster.
    addrs: Vec<SocketAddr>,
    /// The nodes' CPU shares (`--cpu-share`), removed after the nodes are stopped.
    shares: Option<crate::cgroup::NodeShares>,
}

impl Server {
    /// Starts `command` (its stdout as the caller set it) and waits until it answers
    /// `version` on `addr` (a forwarded port of QEMU's accepts before the guest
    /// listens: a connection is not enough).
    fn start(mut command: Command, addr: SocketAddr, wait: Duration) -> anyhow::Result<Server> {
        let child = command
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let mut server = Server {
            child,
            addrs: vec![addr],
            shares: None,
        };
        let deadline = Instant::now() + wait;
        while !answers_version(addr) {
            if let Some(status) = server.child.try_wait()? {
                bail!("{command:?} exited early: {status}");
            }
            if Instant::now() > deadline {
                bail!("{command:?} did not answer on {addr} within {wait:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// A `sesa kv --nodes` frontend, once each node announced its client port (on
    /// stdout, which a thread then keeps draining).
    fn start_cluster(mut command: Command, nodes: u32) -> anyhow::Result<Server> {
        use std::io::BufRead as _;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut server = Server {
            child,
            addrs: Vec::new(),
            shares: None,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                // "node <id> listening on 127.0.0.1:<port>"
                let addr = line.rsplit(' ').next().and_then(|a| a.parse().ok());
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
        while server.addrs.len() < nodes as usize {
            let addr = rx
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| anyhow!("{command:?}: not every node listened within 30 s"))?;
            server.addrs.push(addr);
        }
        Ok(server)
    }

    /// CPU time so far (user + system) of the process and of its children (a
    /// cluster's nodes), in seconds.
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.child.id();
        let mut total = cpu_seconds_of(pid)?;
        for child in children_of(pid) {
            // A node that exited meanwhile has no figures left to read.
            total += cpu_seconds_of(child).unwrap_or(0.0);
        }
        Ok(total)
    }
}

/// The child processes of `pid` (from every thread's `children` list).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// A process's CPU time so far (user + system), in seconds.
fn cpu_seconds_of(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("unreadable /proc stat"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')'
    // (which ends field 2), counted in clock ticks. Linux exports USER_HZ = 100 to
    // user space on every architecture sesa runs on (x86-64, aarch64).
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // After the nodes: their groups can be removed once they are gone.
        drop(self.shares.take());
    }
}

/// Whether a memcached server answers `version` on `addr` within a second.
fn answers_version(addr: SocketAddr) -> bool {
    ask(addr, b"version\r\n", b"\r\n", 256, Duration::from_secs(1))
        .is_some_and(|reply| reply.starts_with(b"VERSION "))
}

/// Sends `request` to the server at `addr` and reads its reply up to `end` (at most
/// `limit` bytes, each read within `wait`); `None` if it cannot be reached or does not
/// finish the reply.
fn ask(
    addr: SocketAddr,
    request: &[u8],
    end: &[u8],
    limit: usize,
    wait: Duration,
) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    stream.write_all(request).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.ends_with(end) && reply.len() < limit {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    Some(reply)
}

/// A free loopback port (bound and released; the server binds it next).
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn start_sesa(config: &KvBenchConfig) -> anyhow::Result<Server> {
    let mut server = start_sesa_process(config)?;
    if let Some(share) = config.cpu_share {
        // A cluster's nodes are the frontend's children; one node is the process.
        let pid = server.child.id();
        let shares = match config.nodes {
            1 => crate::cgroup::NodeShares::start(move || vec![pid], share)?,
            _ => crate::cgroup::NodeShares::start(move || children_of(pid), share)?,
        };
        shares.wait_for(config.nodes as usize, Duration::from_secs(10))?;
        server.shares = Some(shares);
    }
    Ok(server)
}

fn start_sesa_process(config: &KvBenchConfig) -> anyhow::Result<Server> {
    if config.nodes > 1 {
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["kv", "--port", "0", "--nodes", &config.nodes.to_string()]);
        command.args(["--cores", &config.server_cores.to_string(), "-m", "1024"]);
        if let Some(spins) = config.idle_spins {
            command.args(["--idle-spins", &spins.to_string()]);
        }
        if config.clients == Clients::Ketama {
            command.args(["--placement", "ketama"]);
        }
        return Server::start_cluster(command, config.nodes);
    }
    let addr = free_port()?;
    let mut command = Command::new(std::env::current_exe()?);
    command.args([
        "kv",
        "--port",
        &addr.port().to_string(),
        "--cores",
        &config.server_cores.to_string(),
        "-m",
        "1024",
    ]);
    if let Some(spins) = config.idle_spins {
        command.args(["--idle-spins", &spins.to_string()]);
    }
    command.stdout(Stdio::null());
    Server::start(command, addr, Duration::from_secs(10))
}

/// QEMU's `-netdev` for a guest listening on port 11211 at `guest` (its address on a
/// tap device), and where clients reach it: QEMU's user network with a free host port
/// forwarded (`tap` `None`), or the tap device, which must exist here.
fn guest_network(
    tap: Option<&str>,
    guest: std::net::Ipv4Addr,
) -> anyhow::Result<(String, SocketAddr)> {
    let Some(tap) = tap else {
        let addr = free_port()?;
        let netdev = format!("user,id=n0,hostfwd=tcp:127.0.0.1:{}-:11211", addr.port());
        return Ok((netdev, addr));
    };
    if tap.contains(',') {
        // It goes into QEMU's option string, where a comma starts an option.
        bail!("{tap:?}: a tap device's name for QEMU may not contain a comma");
    }
    // QEMU would create a missing tap itself, with no address: the run would then wait
    // for a guest nobody can reach. Say what is missing instead. (/proc/self/net is
    // this process's namespace; /sys/class/net is the one sysfs was mounted in.)
    let devices = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    let here = devices
        .lines()
        .any(|l| l.trim_start().split(':').next() == Some(tap));
    if !here {
        bail!(
            "no network device {tap:?} here: run the benchmark inside the network \
             namespace scripts/native-tap-bench.sh makes"
        );
    }
    let netdev = format!("tap,id=n0,ifname={tap},script=no,downscript=no");
    Ok((netdev, SocketAddr::from((guest, 11211))))
}

/// QEMU for a guest beside the native node, booted alike: the native node's machine,
/// accelerator and memory, `server_cores` CPUs, a virtio-net device on `netdev`, and
/// `kernel`. Its console goes to this process's stderr (stdout may carry the JSON
/// report).
fn guest_qemu(
    config: &KvBenchConfig,
    native: &NativeServer,
    netdev: &str,
    kernel: &std::path::Path,
) -> anyhow::Result<Command> {
    use std::os::fd::AsFd as _;
    let mut command = sesa_frontend::qemu_command(
        native.accel,
        sesa_frontend::NATIVE_RAM_MB,
        config.server_cores,
    );
    command
        .arg("-netdev")
        .arg(netdev)
        .args(["-device", "virtio-net-device,netdev=n0"])
        .arg("-kernel")
        .arg(kernel)
        .stdout(std::io::stderr().as_fd().try_clone_to_owned()?);
    Ok(command)
}

/// Item memory of a native node (MiB): the load's keys take a few; the kernel's heap
/// is a quarter of the guest's memory (`cluster::NATIVE_RAM_MB`) and must hold twice this.
const NATIVE_ITEMS_MB: usize = 64;

/// A native node under QEMU: `kv <cores> <MiB>` on the kernel's command line, port
/// 11211 forwarded from a free host port. Its console goes to this process's stderr
/// (stdout may carry the JSON report).
fn start_native(config: &KvBenchConfig, native: &NativeServer) -> anyhow::Result<Server> {
    let (netdev, addr) = guest_network(native.tap.as_deref(), NATIVE_GUEST)?;
    let mut command = guest_qemu(config, native, &netdev, &native.kernel)?;
    command.arg("-append").arg(format!(
        "kv {} {NATIVE_ITEMS_MB} {}",
        config.server_cores,
        native.kernel_args.as_deref().unwrap_or("")
    ));
    Server::start(command, addr, Duration::from_secs(30)).context(
        "starting the native node (qemu-system-x86_64 from PATH; build the kernel with \
         `cargo build --release --manifest-path crates/sesa-native/Cargo.toml`)",
    )
}

/// A hosted `sesa kv` or memcached in a Linux guest (see [`LinuxGuest`]), booted by the
/// same QEMU command as the native node with Debian's kernel and the guest's initrd.
/// Its console goes to this process's stderr.
fn start_linux_guest(
    config: &KvBenchConfig,
    native: &NativeServer,
    guest: &LinuxGuest,
) -> anyhow::Result<Server> {
    let (kernel, initrd) = guest.files(native)?;
    let (netdev, addr) = guest_network(guest.tap.as_deref(), LINUX_GUEST)?;
    // On QEMU's user network the guest is 10.0.2.15 behind 10.0.2.2, as the native node.
    let (ip, gateway) = match guest.tap {
        Some(_) => (LINUX_GUEST, std::net::Ipv4Addr::new(10, 0, 3, 2)),
        None => (NATIVE_GUEST, std::net::Ipv4Addr::new(10, 0, 2, 2)),
    };
    let mut command = guest_qemu(config, native, &netdev, &kernel)?;
    command
        .arg("-initrd")
        .arg(&initrd)
        // `mitigations=off`: Linux at its fastest (no retpolines, no barriers on user
        // copies), as the native kernel has none of them either.
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 mitigations=off {}sesaip={ip}/24 sesagw={gateway} \
             sesacores={} sesamb={NATIVE_ITEMS_MB} sesaserver={}",
            host_tsc_khz(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
                .map(|khz| format!("tsc_early_khz={khz} "))
                .unwrap_or_default(),
            config.server_cores,
            match guest.server {
                GuestServer::Sesa => "sesa",
                GuestServer::Memcached => "memcached",
            }
        ));
    // Booting Debian's kernel under TCG takes seconds. Under this machine's kvm_pvm it
    // does not finish: ring 0 is emulated instruction by instruction there.
    Server::start(command, addr, Duration::from_secs(120)).context(
        "starting the Linux guest (under a software KVM such as kvm_pvm a stock kernel \
         does not boot in time: use --accel tcg)",
    )
}

/// The host's timestamp counter rate in kHz, from an x86 Linux host's `/proc/cpuinfo`:
/// its `bogomips` are the TSC's MHz times two (the delay loop is the TSC's, its loops
/// per jiffy the TSC's kHz x 1000 / HZ). `None` where the line is missing.
///
/// Why: under TCG the guest's TSC is the host's, and Linux calibrates it against the
/// PIT at boot; on a loaded host TCG's slow port reads fail that calibration (seen 3
/// times in 34 boots here: "tsc: Unable to calibrate against PIT"), and microvm has no
/// HPET or ACPI PM timer to fall back on: the guest then hangs before init. Given the
/// rate (`tsc_early_khz=`), it skips the calibration.
fn host_tsc_khz(cpuinfo: &str) -> Option<u64> {
    let bogomips: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("bogomips"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    let khz = (bogomips * 500.0).round();
    (khz >= 1.0 && khz.is_finite()).then_some(khz as u64)
}

fn start_memcached(config: &KvBenchConfig) -> anyhow::Result<Server> {
    let addr = free_port()?;
    let mut command = Command::new("memcached");
    command.args([
        "-l",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
        "-U",
        "0",
        "-t",
        &config.server_cores.to_string(),
        "-m",
        "1024",
        // Needed when run as root (memcached refuses root without it); ignored otherwise.
        "-u",
        "nobody",
    ]);
    command.stdout(Stdio::null());
    Server::start(command, addr, Duration::from_secs(10))
        .context("memcached is needed for --against memcached (Debian: apt-get install memcached)")
}

/// The key with index `i`: `key_size` bytes (more if `i` needs more digits), distinct
/// for distinct `i`.
pub(crate) fn key(i: usize, key_size: usize) -> Vec<u8> {
    format!("k{i:0>width$}", width = key_size.saturating_sub(1)).into_bytes()
}

/// xorshift64*: a fast, seeded, good-enough key chooser for load generation.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Reads one reply line (through `\r\n`) from `buf` at `*at`, reading more as needed.
pub(crate) fn line(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    at: &mut usize,
) -> anyhow::Result<std::ops::Range<usize>> {
    loop {
        if let Some(end) = buf[*at..].windows(2).position(|w| w == b"\r\n") {
            let range = *at..*at + end;
            *at += end + 2;
            return Ok(range);
        }
        if *at > 0 {
            buf.drain(..*at);
            *at = 0;
        }
        let old = buf.len();
        buf.resize(old + 64 * 1024, 0);
        let n = stream.read(&mut buf[old..])?;
        buf.truncate(old + n);
        if n == 0 {
            bail!("the server closed the connection");
        }
    }
}

/// Appends `set <key> 0 0 <len>` and the value to `request`.
pub(crate) fn push_set(request: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    request.extend_from_slice(b"set ");
    request.extend_from_slice(key);
    request.extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
    request.extend_from_slice(value);
    request.extend_from_slice(b"\r\n");
}

/// What one client connection measured.
struct ClientResult {
    latencies_ns: Vec<u32>,
    answered: u64,
}

/// How the clients pick the node a request goes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Clients {
    /// Each client talks to one node (client `c` to node `c mod n`) and sends it every
    /// request: the node sends on what it does not own.
    #[default]
    AnyNode,
    /// Each client reads `config get cluster` (the store placing keys by ketama), keeps
    /// a connection to every node listed and sends each request to its key's primary,
    /// as libmemcached in ketama mode would.
    Ketama,
}

impl std::str::FromStr for Clients {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "any" => Ok(Clients::AnyNode),
            "ketama" => Ok(Clients::Ketama),
            other => Err(format!("no clients {other:?}: any or ketama")),
        }
    }
}

impl std::fmt::Display for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Clients::AnyNode => "any node",
            Clients::Ketama => "ketama",
        })
    }
}

/// Where one client sends its requests: one node, or each key's primary.
#[derive(Clone)]
enum Route {
    One(SocketAddr),
    Ketama(Arc<Servers>),
}

/// The store's nodes as `config get cluster` lists them, and their ketama ring.
pub(crate) struct Servers {
    /// The nodes' client addresses, in the list's order.
    pub(crate) addrs: Vec<SocketAddr>,
    /// The ring over them: places in `addrs`.
    pub(crate) ring: sesa_apps::memcache::cluster::ketama::Ring,
}

/// The store's nodes as `config get cluster` through `addr` lists them.
pub(crate) fn servers(addr: SocketAddr) -> anyhow::Result<Servers> {
    let reply = ask(
        addr,
        b"config get cluster\r\n",
        b"END\r\n",
        1 << 16,
        Duration::from_secs(2),
    )
    .with_context(|| format!("no answer to `config get cluster` from {addr}"))?;
    let text = String::from_utf8_lossy(&reply);
    // CONFIG cluster 0 <bytes>\r\n<version>\n<host|ip|port ...>\n\r\nEND\r\n
    let list = text
        .strip_prefix("CONFIG cluster 0 ")
        .and_then(|t| t.lines().nth(2))
        .with_context(|| format!("`config get cluster` answered {text:?}"))?;
    let mut servers = Vec::new();
    for server in list.split(' ') {
        let fields: Vec<&str> = server.split('|').collect();
        let [_, ip, port] = fields[..] else {
            bail!("`config get cluster` listed {server:?}");
        };
        servers.push(SocketAddr::new(ip.parse()?, port.parse()?));
    }
    Ok(Servers {
        ring: sesa_apps::memcache::cluster::ketama::Ring::of_addrs(&servers),
        addrs: servers,
    })
}

/// One connection's replies to its part of a batch (`batch`: whether each request is
/// a get, in request order), each one's latency from `sent` into `result`.
fn read_replies(
    conn: &mut Conn<bool>,
    sent: Instant,
    result: &mut ClientResult,
) -> anyhow::Result<()> {
    let Conn {
        stream,
        buf,
        at,
        batch,
        ..
    } = conn;
    for &get in batch.iter() {
        if get {
            // VALUE <key> <flags> <bytes>, the data, END; or END alone on a miss.
            let first = line(stream, buf, at)?;
            if buf[first.clone()].starts_with(b"VALUE ") {
                line(stream, buf, at)?;
                let end = line(stream, buf, at)?;
                if &buf[end.clone()] != b"END" {
                    bail!("unexpected reply {:?}", String::from_utf8_lossy(&buf[end]));
                }
            } else if &buf[first.clone()] != b"END" {
                bail!(
                    "unexpected reply {:?}",
                    String::from_utf8_lossy(&buf[first])
                );
            }
        } else {
            let reply = line(stream, buf, at)?;
            if &buf[reply.clone()] != b"STORED" {
                bail!(
                    "unexpected reply {:?}",
                    String::from_utf8_lossy(&buf[reply])
                );
            }
        }
        let ns = sent.elapsed().as_nanos();
        result
            .latencies_ns
            .push(u32::try_from(ns).unwrap_or(u32::MAX));
        result.answered += 1;
    }
    Ok(())
}

/// A load client's connection to one node: its part of the batch being sent (`batch`:
/// what each request's reply is to be read as, in request order), and what it has
/// read (`buf` from `at`, for [`line`]).
pub(crate) struct Conn<T> {
    pub(crate) stream: TcpStream,
    pub(crate) request: Vec<u8>,
    pub(crate) batch: Vec<T>,
    pub(crate) buf: Vec<u8>,
    pub(crate) at: usize,
}

impl<T> Conn<T> {
    /// A connection to `addr`, without Nagle's delay, reads waiting at most 10 s.
    pub(crate) fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            stream,
            request: Vec::new(),
            batch: Vec::new(),
            buf: Vec::new(),
            at: 0,
        })
    }

    /// Empties the batch for the next one.
    pub(crate) fn clear(&mut self) {
        self.request.clear();
        self.batch.clear();
    }
}

/// One client's load loop until `stop`: batches of `pipeline` requests, each sent
/// where `route` says, every reply read before the next batch.
fn client(
    route: Route,
    config: &KvBenchConfig,
    pipeline: usize,
    seed: u64,
    stop: &AtomicBool,
) -> anyhow::Result<ClientResult> {
    let addrs = match &route {
        Route::One(addr) => vec![*addr],
        Route::Ketama(nodes) => nodes.addrs.clone(),
    };
    let mut conns = Vec::new();
    for addr in addrs {
        conns.push(Conn::open(addr).with_context(|| format!("connecting to {addr}"))?);
    }
    let value = vec![b'v'; config.value_size];
    let mut rng = Rng(seed | 1);
    let mut result = ClientResult {
        latencies_ns: Vec::new(),
        answered: 0,
    };
    while !stop.load(Relaxed) {
        for c in &mut conns {
            c.clear();
        }
        for _ in 0..pipeline {
            let r = rng.next();
            let k = key((r >> 8) as usize % config.keys, config.key_size);
            let c = match &route {
                Route::One(_) => &mut conns[0],
                Route::Ketama(nodes) => &mut conns[nodes.ring.primary(&k).unwrap_or(0)],
            };
            if (r % 100) < u64::from(config.get_percent) {
                c.request.extend_from_slice(b"get ");
                c.request.extend_from_slice(&k);
                c.request.extend_from_slice(b"\r\n");
                c.batch.push(true);
            } else {
                push_set(&mut c.request, &k, &value);
                c.batch.push(false);
            }
        }
        let sent = Instant::now();
        for c in conns.iter_mut().filter(|c| !c.request.is_empty()) {
            c.stream.write_all(&c.request)?;
        }
        for c in &mut conns {
            read_replies(c, sent, &mut result)?;
        }
    }
    Ok(result)
}

/// Sets every key once, pipelined, so the measured gets hit.
fn preload(addr: SocketAddr, config: &KvBenchConfig) -> anyhow::Result<()> {
    set_keys(addr, 0..config.keys, config.key_size, config.value_size)
}

/// Sets the keys with indices in `range` (`key_size` bytes, values of `value_size`
/// bytes) through one connection to `addr`, 256 per pipelined batch.
pub(crate) fn set_keys(
    addr: SocketAddr,
    range: std::ops::Range<usize>,
    key_size: usize,
    value_size: usize,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let value = vec![b'v'; value_size];
    let (mut buf, mut at) = (Vec::new(), 0);
    for chunk in range.collect::<Vec<_>>().chunks(256) {
        let mut request = Vec::new();
        for &i in chunk {
            push_set(&mut request, &key(i, key_size), &value);
        }
        stream.write_all(&request)?;
        for _ in chunk {
            let reply = line(&mut stream, &mut buf, &mut at)?;
            if &buf[reply.clone()] != b"STORED" {
                bail!("preload: {:?}", String::from_utf8_lossy(&buf[reply]));
            }
        }
    }
    Ok(())
}

/// One measured run against `server`.
fn run(server: &Server, config: &KvBenchConfig, pipeline: usize) -> anyhow::Result<KvFigures> {
    let stop = Arc::new(AtomicBool::new(false));
    // One node is one memcached: every client talks to it.
    let ketama = match config.clients {
        Clients::Ketama if server.addrs.len() > 1 => {
            Some(Route::Ketama(Arc::new(servers(server.addrs[0])?)))
        }
        _ => None,
    };
    // A ketama client holds a connection to each of the `n` nodes: `connections / n`
    // of them, each sending `n x pipeline` requests a batch, give every node as many
    // connections, as deep a pipeline on each and as many requests in flight as
    // `connections` clients of one node each: only where requests go differs.
    let n = server.addrs.len();
    let (clients, batch) = match ketama {
        Some(_) => (config.connections.div_ceil(n), pipeline * n),
        None => (config.connections, pipeline),
    };
    let routed_before = routed(&server.addrs);
    let cpu_before = server.cpu_seconds()?;
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let route = match &ketama {
                Some(route) => route.clone(),
                None => Route::One(server.addrs[c % n]),
            };
            let (stop, config) = (stop.clone(), config.clone());
            std::thread::spawn(move || client(route, &config, batch, 0x9e37 + c as u64, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(config.seconds));
    stop.store(true, Relaxed);
    let mut latencies = Vec::new();
    let mut answered = 0;
    for thread in threads {
        let result = thread
            .join()
            .map_err(|_| anyhow!("a client thread panicked"))??;
        latencies.extend(result.latencies_ns);
        answered += result.answered;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds()? - cpu_before;
    let answered_here = match (routed_before, routed(&server.addrs)) {
        (Some((here0, sent0)), Some((here1, sent1))) => {
            let (here, sent) = (here1.saturating_sub(here0), sent1.saturating_sub(sent0));
            (here + sent > 0).then(|| here as f64 / (here + sent) as f64)
        }
        _ => None,
    };
    if answered == 0 {
        bail!("no request was answered in {elapsed:.1} s");
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize] as f64 / 1e3;
    Ok(KvFigures {
        pipeline,
        kops: answered as f64 / elapsed / 1e3,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        cpu_us_per_req: cpu * 1e6 / answered as f64,
        answered_here,
    })
}

/// The clients' commands the cluster nodes at `addrs` answered themselves and sent on,
/// summed (their `stats`); `None` if one does not say (a single node, memcached).
fn routed(addrs: &[SocketAddr]) -> Option<(u64, u64)> {
    if addrs.len() < 2 {
        return None;
    }
    let mut sum = (0, 0);
    for &addr in addrs {
        let reply = ask(
            addr,
            b"stats\r\n",
            b"END\r\n",
            1 << 16,
            Duration::from_secs(2),
        )?;
        let text = String::from_utf8_lossy(&reply);
        let stat = |name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("STAT {name} ")[..]))
                .and_then(|v| v.trim().parse().ok())
        };
        sum.0 += stat("sesa_answered_here")?;
        sum.1 += stat("sesa_sent_on")?;
    }
    Some(sum)
}

/// Field-wise medians of several runs.
pub(crate) fn median(runs: &[KvFigures]) -> KvFigures {
    let med = |f: fn(&KvFigures) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    KvFigures {
        pipeline: runs[0].pipeline,
        kops: med(|f| f.kops),
        p50_us: med(|f| f.p50_us),
        p99_us: med(|f| f.p99_us),
        p999_us: med(|f| f.p999_us),
        cpu_us_per_req: med(|f| f.cpu_us_per_req),
        answered_here: {
            let mut v: Vec<f64> = runs.iter().filter_map(|f| f.answered_here).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        },
    }
}

/// Runs the benchmark.
///
/// # Errors
/// If a server does not start (memcached or QEMU missing, a kernel that does not boot), or a
/// request fails or gets an unexpected reply.
pub fn kv(config: &KvBenchConfig) -> anyhow::Result<KvReport> {
    if config.connections == 0 || config.keys == 0 || config.runs == 0 {
        bail!("connections, keys and runs must be at least 1");
    }
    if !(1..=250).contains(&config.key_size) {
        bail!("key size must be 1 to 250 bytes (memcached's limit)");
    }
    if config.cpu_share.is_some() && (config.native.is_some() || config.against.is_some()) {
        bail!(
            "--cpu-share limits hosted sesa nodes, compared with themselves (no --native, no --against)"
        );
    }
    if config.native.is_some() && config.nodes > 1 {
        bail!("a native node is one node: --native takes no --nodes");
    }
    if matches!(config.against, Some(Peer::Hosted | Peer::LinuxVm(_))) && config.native.is_none() {
        bail!(
            "--against hosted, hosted-vm and memcached-vm compare a native node (--native KERNEL)"
        );
    }
    if let (Some(Peer::LinuxVm(guest)), Some(native)) = (&config.against, &config.native) {
        guest.files(native)?;
    }
    let (sesa, server) = match &config.native {
        Some(native) => (
            start_native(config, native)?,
            format!("sesa native (QEMU {})", native.accel),
        ),
        None => (start_sesa(config)?, "sesa".to_owned()),
    };
    preload(sesa.addrs[0], config)?;
    let (peer, peer_name) = match &config.against {
        None => (None, String::new()),
        Some(Peer::Memcached) => (Some(start_memcached(config)?), "memcached".to_owned()),
        Some(Peer::Hosted) => {
            let hosted = KvBenchConfig {
                native: None,
                ..config.clone()
            };
            (Some(start_sesa(&hosted)?), "sesa hosted".to_owned())
        }
        Some(Peer::LinuxVm(guest)) => {
            let native = config.native.as_ref().context("checked above")?;
            let name = match guest.server {
                GuestServer::Sesa => "sesa hosted",
                GuestServer::Memcached => "memcached",
            };
            (
                Some(start_linux_guest(config, native, guest)?),
                format!("{name} in Linux (QEMU {})", native.accel),
            )
        }
    };
    if let Some(peer) = &peer {
        preload(peer.addrs[0], config)?;
    }
    let mut report = KvReport {
        load: format!(
            "{} connections, {}-byte keys ({} of them), {}-byte values, {}% get, {} s x {} \
             runs, {} server core(s){}",
            config.connections,
            config.key_size,
            config.keys,
            config.value_size,
            config.get_percent,
            config.seconds,
            config.runs,
            config.server_cores,
            if config.nodes > 1 {
                format!(
                    "; sesa on {} nodes of {} core(s), {}",
                    config.nodes,
                    config.server_cores,
                    match config.clients {
                        Clients::AnyNode => "connections spread over them",
                        Clients::Ketama =>
                            "each client connected to every node and \
                                            sending each key to its ketama primary",
                    }
                )
            } else {
                String::new()
            }
        ),
        server,
        sesa: Vec::new(),
        peer: peer_name,
        against: Vec::new(),
        ratios: Vec::new(),
        shares: match (&sesa.shares, config.cpu_share) {
            (Some(shares), Some(share)) => format!("{share} CPU per node, {}", shares.kind()),
            _ => String::new(),
        },
    };
    for &pipeline in &config.pipelines {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..config.runs {
            ours.push(run(&sesa, config, pipeline)?);
            if let Some(server) = &peer {
                theirs.push(run(server, config, pipeline)?);
            }
        }
        let ours = median(&ours);
        if !theirs.is_empty() {
            let theirs = median(&theirs);
            report.ratios.push(KvRatios {
                pipeline,
                kops: ours.kops / theirs.kops,
                p99: theirs.p99_us / ours.p99_us,
                reqs_per_cpu_second: theirs.cpu_us_per_req / ours.cpu_us_per_req,
            });
            report.against.push(theirs);
        }
        report.sesa.push(ours);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::host_tsc_khz;

    #[test]
    fn the_host_tsc_rate_is_read_off_bogomips() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2596.138\n\
                       bogomips\t: 5192.27\n\nprocessor\t: 1\nbogomips\t: 5192.27\n";
        assert_eq!(host_tsc_khz(cpuinfo), Some(2_596_135));
        assert_eq!(host_tsc_khz("processor\t: 0\n"), None);
        assert_eq!(host_tsc_khz("bogomips\t: many\n"), None);
        assert_eq!(host_tsc_khz("bogomips\t: 0\n"), None);
    }
}
