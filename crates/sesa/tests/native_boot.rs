//! The native kernel (`crates/sesa-native`) boots under QEMU: `-M microvm` through the
//! PVH entry, under TCG always and under KVM where `/dev/kvm` works. It prints on the
//! serial console, reads the memory map and command line, sets up its heap and frame
//! allocator, runs an EBB of the portable object model and the event model's loop
//! (`sesa-event` unchanged), brings up the other CPUs (each missing on its own core),
//! reports a CPU exception, and a panic with its
//! location, and ends with an exit status through `isa-debug-exit` ((code << 1) | 1).
//! With a virtio-net device it serves TCP (virtio-drivers and smoltcp) through QEMU's
//! user network: the test talks to it from the host. Every QEMU runs under a deadline
//! and is killed by its PID if it overstays.

mod common;

use common::native_kernel as kernel;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts QEMU on the kernel with `-append command` under `accel`, with `extra`
/// arguments (devices).
fn start(accel: &str, command: &str, extra: &[&str]) -> std::process::Child {
    Command::new("qemu-system-x86_64")
        .args(["-accel", accel, "-M", "microvm", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-serial", "stdio", "-no-reboot", "-m", "256"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(extra)
        .arg("-kernel")
        .arg(kernel())
        .args(["-append", command])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("qemu-system-x86_64 cannot run ({e}): install qemu-system-x86 (scripts/test.sh does)")
        })
}

/// A kernel booted under TCG with a virtio-net device behind QEMU's user network, one
/// host port forwarded to `guest_port`, and its serial console read line by line.
struct Networked {
    qemu: std::process::Child,
    /// The forwarded host port on 127.0.0.1.
    port: u16,
    /// When QEMU was started.
    launched: Instant,
    lines: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
    /// The console so far.
    out: String,
}

impl Networked {
    fn start(command: &str, guest_port: u16, extra: &[&str]) -> Networked {
        kernel(); // Built before the clock starts.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let forward = format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{guest_port}");
        let mut args: Vec<&str> = extra.to_vec();
        args.extend([
            "-netdev",
            &forward,
            "-device",
            "virtio-net-device,netdev=n0",
        ]);
        let launched = Instant::now();
        let mut qemu = start("tcg", command, &args);
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        let stdout = qemu.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = lines_tx.send(line);
            }
        });
        Networked {
            qemu,
            port,
            launched,
            lines,
            reader,
            out: String::new(),
        }
    }

    /// Reads the console until a line contains `what` (QEMU is killed and the test fails
    /// after `within`).
    fn wait_for(&mut self, what: &str, within: Duration) {
        self.wait_until(|out| out.contains(what), &format!("{what:?}"), within);
    }

    /// Reads the console until `done` holds of all of it (QEMU is killed and the test
    /// fails, saying it waited for `what`, after `within`).
    fn wait_until(&mut self, done: impl Fn(&str) -> bool, what: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !done(&self.out) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                let _ = self.qemu.kill();
                panic!("no {what} on the console within {within:?}: {}", self.out);
            };
            self.out.push_str(&line);
            self.out.push('\n');
        }
    }

    /// Waits for QEMU to exit (see `finish`); its exit status and the whole console.
    fn finish(self) -> (i32, String) {
        let Networked {
            qemu,
            lines,
            reader,
            mut out,
            ..
        } = self;
        let (code, rest) = finish(qemu);
        reader.join().unwrap();
        out.extend(lines.try_iter().map(|l| l + "\n"));
        out.push_str(&rest);
        (code, out)
    }
}

/// The number printed just before the first `marker` in `out` ("... 252 MiB usable").
fn number_before(out: &str, marker: &str) -> Option<u64> {
    let (before, _) = out.split_once(marker)?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Boots the kernel with `-append command` under `accel`; its exit status and serial
/// output.
fn boot(accel: &str, command: &str) -> (i32, String) {
    finish(start(accel, command, &[]))
}

/// Waits (30 s at most, then kills it) for QEMU to exit; its exit status and output.
fn finish(mut qemu: std::process::Child) -> (i32, String) {
    let status = common::wait_for_exit(&mut qemu, Duration::from_secs(30));
    let mut out = String::new();
    if let Some(mut stdout) = qemu.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut qemu.stderr.take().unwrap(), &mut err).unwrap();
    let code = status
        .code()
        .unwrap_or_else(|| panic!("QEMU killed by a signal: {status}; {err}"));
    (code, out + &err)
}

fn boots_and_panics_as_it_should(accel: &str) {
    let (code, out) = boot(accel, "");
    assert_eq!(code, 1, "{accel}: {out}");
    assert!(out.contains("sesa-native 0.1.0: booted"), "{out}");
    // `-m 256`: the usable RAM the loader reports, less what firmware keeps.
    let usable =
        number_before(&out, " MiB usable").unwrap_or_else(|| panic!("no memory map in {out}"));
    assert!((250..=256).contains(&usable), "{out}");
    // A heap and a frame allocator from the map; the object model unchanged on the core.
    assert!(out.contains("sesa-native: heap of 63 MiB"), "{out}");
    assert!(out.contains("free frames of 4 KiB"), "{out}");
    assert!(
        out.contains("sesa-native: EBB counter on core 0: 1000"),
        "{out}"
    );
    assert!(out.contains("sesa-native: done"), "{out}");

    let (code, out) = boot(accel, "panic");
    assert_eq!(code, 5, "{accel}: {out}");
    assert!(
        out.contains("sesa-native: panicked at src/lib.rs:")
            && out.contains("the command line asked for a panic"),
        "{out}"
    );
    let (code, out) = boot(accel, "no-such-command");
    assert_eq!(code, 3, "{accel}: {out}");

    // A CPU exception (a page fault on unmapped memory) is reported, not a silent reset.
    let (code, out) = boot(accel, "fault");
    assert_eq!(code, 5, "{accel}: {out}");
    assert!(
        out.contains("sesa-native: CPU exception 14 (page fault) at 0x")
            && out.contains("address 0x1000000000"),
        "{out}"
    );

    // The event model on the native loop: the platform conformance suite
    // (sesa_event::conformance), every check named on the console.
    let (code, out) = boot(accel, "events");
    assert_eq!(code, 1, "{accel}: {out}");
    assert!(out.contains("sesa-native: events: ok ("), "{out}");
    assert!(
        out.contains(
            "sesa-native: events: destroy returns once every core has dropped its rep: ok"
        ) && !out.contains("FAILED"),
        "{out}"
    );
}

/// A TCP echo over virtio-net, served by an application on the native event loop
/// through `sesa_event::tcp_listen` (smoltcp under it): the host connects through QEMU's
/// user network
/// (`hostfwd`) until the kernel listens, sends 64 KiB, and must get every byte back; the
/// kernel then exits with success. Prints the time from QEMU's launch to the first
/// answer.
#[test]
fn the_native_kernel_serves_tcp_over_virtio_net_under_tcg() {
    use std::io::{Read, Write};
    let mut node = Networked::start("echo", 7, &[]);
    // Connect once the kernel says it listens (QEMU's user network would otherwise hold
    // an early connection for its SYN retries).
    node.wait_for("echo on port 7", Duration::from_secs(20));
    let (port, launched) = (node.port, node.launched);
    let deadline = Instant::now() + Duration::from_secs(20);
    let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let answered = loop {
        assert!(
            Instant::now() < deadline,
            "no echo within 20 s: {:?}",
            node.qemu.kill()
        );
        // Until the kernel listens, QEMU accepts and then closes the connection.
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut first = [0u8; 1];
        if stream.write_all(&payload[..1]).is_err() || stream.read_exact(&mut first).is_err() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let answered = launched.elapsed();
        assert_eq!(first[0], payload[0]);
        // Idle pauses: the kernel sleeps with the device's interrupt unmasked, and the
        // next frame wakes it through the I/O APIC (counted below).
        for i in 1..4 {
            std::thread::sleep(Duration::from_millis(100));
            stream.write_all(&payload[i..=i]).unwrap();
            let mut one = [0u8; 1];
            stream.read_exact(&mut one).unwrap();
            assert_eq!(one[0], payload[i]);
        }
        stream.write_all(&payload[4..]).unwrap();
        let mut back = vec![0u8; payload.len() - 4];
        stream.read_exact(&mut back).unwrap();
        assert!(back == payload[4..], "the echo differs");
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "bytes after the echo: {}", rest.len());
        break answered;
    };
    let (code, out) = node.finish();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("sesa-native: echo: served one client (10.0.2.2:")
            && out.contains(&format!("), {} bytes", payload.len())),
        "{out}"
    );
    assert!(out.contains("MHz (against the PIT)"), "{out}");
    let interrupts = number_before(&out, " device interrupts")
        .unwrap_or_else(|| panic!("no interrupt count: {out}"));
    assert!(
        interrupts >= 1,
        "the device never woke the idle kernel: {out}"
    );
    eprintln!(
        "native TCP echo (TCG): launch to first answer {} ms",
        answered.as_millis()
    );
}

#[test]
fn the_native_kernel_boots_reports_panics_and_exits_under_tcg() {
    boots_and_panics_as_it_should("tcg");
}

/// SMP: the application processors come up through INIT-SIPI-SIPI and a real-mode
/// trampoline, each with its own per-CPU block (GS base), and each makes its rep of a
/// per-core EBB by its own miss; then the event model runs a loop on every core.
#[test]
fn the_native_kernel_brings_up_four_cpus_each_missing_on_its_own_core_under_tcg() {
    let (code, out) = finish(start("tcg", "smp 4", &["-smp", "4"]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("sesa-native: smp: 4 CPUs up in ") && out.contains("(4 reps, total 4)"),
        "{out}"
    );
    // The event model on four cores (the conformance suite, with RDRAND for its entropy
    // check): a loop per core, events shipped across cores in order, spawn_on to each
    // core, a per-core EBB missing on every core, destroy after every core quiesced.
    let (code, out) = finish(start("tcg", "events 4", &["-smp", "4", "-cpu", "max"]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("sesa-native: events: ok (4 core(s); 11 conformance checks passed)")
            && out.contains(
                "sesa-native: events: a per-core EBB gets a rep on each core by that core's miss: ok"
            ),
        "{out}"
    );
    // Asking for more CPUs than the machine has is reported, not hung on.
    let (code, out) = finish(start("tcg", "smp 3", &["-smp", "2"]));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("sesa-native: smp: 2 of 3 CPUs up"), "{out}");
}

/// Under hardware KVM, where there is one.
#[test]
fn the_native_kernel_boots_under_kvm_where_it_works() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!("NOT RUN: /dev/kvm cannot be opened here; the TCG test covers the kernel");
        return;
    }
    // This project's machines have kvm_pvm, a software hypervisor that emulates ring-0
    // code and cannot execute the SSE instructions Rust code uses (see native-notes.md):
    // the kernel runs its Rust code in ring 3 (`boot.rs`), so it boots there too.
    boots_and_panics_as_it_should("kvm");
    // The event model on two CPUs, the application processors brought up and sent into
    // ring 3 as the boot CPU is, idling through the idle gate.
    let (code, out) = finish(start("kvm", "events 2", &["-smp", "2"]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("sesa-native: events: ok (2 core(s);"), "{out}");
}

/// The executive's messenger on a native node (unchanged, on the native event loop and
/// its smoltcp network): a hosted node with the wrong secret is refused, one with the
/// right secret authenticates, calls the native node's counter EBB 100 times in order,
/// then asks it to stop (QEMU exits with success). Prints the calls' round trip.
#[test]
fn a_hosted_node_calls_an_ebb_on_a_native_node_through_the_messenger() {
    use sesa_ebb::{CoreId, EbbId};
    use sesa_exec::{Identity, Messenger, MessengerConfig, NodeId, Secret};
    let secret = [0x5a_u8; 32];
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    // `-cpu max` for RDRAND: the handshake's challenges need real entropy.
    let mut node = Networked::start(&format!("node 2 {hex}"), 7000, &["-cpu", "max"]);
    node.wait_for("messenger listening", Duration::from_secs(20));
    let (port, launched) = (node.port, node.launched);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let config = sesa_hosted::Config {
        pin_threads: false,
        ..sesa_hosted::Config::with_cores(1)
    };
    let exit = sesa_hosted::Runtime::new(config)
        .unwrap()
        .run(move || async move {
            let me = Identity {
                node: NodeId::new(1),
                generation: 1,
            };
            // The wrong secret: refused by the native node's handshake.
            let stranger =
                Messenger::create(MessengerConfig::new(me, Secret::from_bytes([1; 32]))).unwrap();
            let refused = stranger.connect(addr).await;
            assert!(refused.is_err(), "a wrong secret was accepted");
            let messenger =
                Messenger::create(MessengerConfig::new(me, Secret::from_bytes(secret))).unwrap();
            let peer = messenger.connect(addr).await.unwrap();
            assert_eq!(peer.node, NodeId::new(2));
            let counter = EbbId::static_id(3);
            let mut counts = Vec::new();
            let mut took = Vec::new();
            let mut first = None;
            for _ in 0..100 {
                let started = Instant::now();
                let reply = messenger
                    .call(NodeId::new(2), CoreId::new(0), counter, 1, Vec::new())
                    .await
                    .unwrap();
                took.push(started.elapsed());
                first.get_or_insert_with(|| launched.elapsed());
                counts.push(u64::from_le_bytes(reply.try_into().unwrap()));
            }
            messenger
                .call(NodeId::new(2), CoreId::new(0), counter, 2, Vec::new())
                .await
                .unwrap();
            took.sort();
            (counts, took[took.len() / 2], first.unwrap_or_default())
        })
        .unwrap();
    let sesa_hosted::Exit::Completed((counts, median, first)) = exit else {
        panic!("the hosted node stopped early: {exit:?}");
    };
    assert_eq!(counts, (1..=100).collect::<Vec<u64>>());
    let (code, out) = node.finish();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("node 1 asked it to stop"), "{out}");
    eprintln!(
        "messenger call hosted -> native (TCG, QEMU user network): median round trip {} us; \
         QEMU launch to the first EBB call answered {} ms (handshakes included)",
        median.as_micros(),
        first.as_millis()
    );
}

/// The portable micro-benchmarks (`sesa_node::micro`, what `sesa bench micro --native`
/// runs) on two native cores: every figure is reported and plausible.
#[test]
fn the_native_kernel_runs_the_portable_micro_benchmarks_under_tcg() {
    let (code, out) = finish(start("tcg", "bench 2 quick", &["-smp", "2"]));
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("sesa-native: micro "))
        .unwrap_or_else(|| panic!("no figures: {out}"));
    for name in [
        "ebb_call_ns",
        "ebb_inline_ns",
        "counter_ebb_mops",
        "counter_atomic_mops",
        "miss_ns",
        "spawn_rtt_p50_ns",
        "spawn_rtt_p99_ns",
        "spawn_mops",
    ] {
        assert_measured(line, name);
    }
    assert!(line.starts_with("cores=2 "), "{line}");
    // The heap's per-CPU caches against talc alone, both measured.
    let heap = out
        .lines()
        .find_map(|l| l.split_once("sesa-native: heap (").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no heap figures: {out}"));
    for name in ["cached_ns", "talc_ns"] {
        assert_measured(heap, name);
    }
}

/// Asserts `line` (`name=value` words) holds a finite, positive `name`.
fn assert_measured(line: &str, name: &str) {
    let value: f64 = line
        .split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    assert!(value > 0.0 && value.is_finite(), "{name}={value}: {line}");
}

/// `sesa bench kv --native --tap`: the store's native side reached through a tap device
/// instead of QEMU's user network. Outside a namespace that has the device it is refused
/// with the reason; inside the one `scripts/native-tap-bench.sh` makes (the guest at
/// 10.0.2.15 behind 10.0.2.2/24), the native and the hosted node both answer the load
/// and every figure is reported. Making a network namespace with a tap device needs
/// root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2: where that fails, the second
/// half says so and does not run.
#[test]
fn the_store_bench_reaches_a_native_node_through_a_tap_device() {
    let sesa = env!("CARGO_BIN_EXE_sesa");
    let refused = Command::new(sesa)
        .args(["bench", "kv", "--quick", "--accel", "tcg", "--native"])
        .arg(kernel())
        .args(["--tap", "sesa-no-such-tap"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("no network device \"sesa-no-such-tap\""),
        "{refused:?}"
    );

    if !tap_namespaces_work() {
        return;
    }
    let report = tap_bench(&[]);
    assert_eq!(report["peer"], "sesa hosted", "{report}");
}

/// `--against hosted-vm` and `memcached-vm`: the native node against a hosted node and
/// against memcached, each in a Linux guest under the same QEMU (machine, accelerator,
/// cores, memory, virtio-net device), on a tap device of its own. `scripts/linux-guest.sh`
/// builds the guest (Debian's kernel and busybox, fetched with `apt-get download`, with
/// this build's sesa and the host's memcached in it); both report every figure.
#[test]
fn the_store_bench_compares_a_native_node_with_servers_in_a_linux_guest() {
    if !tap_namespaces_work() {
        return;
    }
    let guest = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("linux-guest");
    let built = Command::new(script("linux-guest.sh"))
        .arg(&guest)
        .env("SESA", env!("CARGO_BIN_EXE_sesa"))
        .output()
        .unwrap();
    assert!(built.status.success(), "scripts/linux-guest.sh: {built:?}");
    for (peer, name) in [
        ("hosted-vm", "sesa hosted in Linux (QEMU tcg)"),
        ("memcached-vm", "memcached in Linux (QEMU tcg)"),
    ] {
        let report = tap_bench(&["--against", peer, "--linux-guest", guest.to_str().unwrap()]);
        assert_eq!(report["peer"], name, "{report}");
    }
}

/// A script of the repository's.
fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name)
}

/// Whether this process may make a network namespace with a tap device (root, or
/// CAP_NET_ADMIN and CAP_SYS_ADMIN, and iproute2); where not, it says so: the caller's
/// test does not run.
fn tap_namespaces_work() -> bool {
    let probe = Command::new("unshare")
        .args(["-n", "ip", "tuntap", "add", "dev", "probe0", "mode", "tap"])
        .output();
    let works = probe.as_ref().is_ok_and(|p| p.status.success());
    if !works {
        eprintln!("NOT RUN (a tap device): no network namespace with a tap device here: {probe:?}");
    }
    works
}

/// `scripts/native-tap-bench.sh --accel tcg --quick --json --pipeline 4` with `args`:
/// its report, once the native node and the peer both answered the load with every
/// figure. The script execs into the benchmark: stopped by its PID if it overstays.
fn tap_bench(args: &[&str]) -> serde_json::Value {
    let console = std::env::temp_dir().join(format!(
        "sesa-tap-{}-{}.log",
        std::process::id(),
        args.join("-").replace('/', "_")
    ));
    let mut bench = Command::new(script("native-tap-bench.sh"))
        .env("SESA", env!("CARGO_BIN_EXE_sesa"))
        .env("SESA_KERNEL", kernel())
        .args(["--accel", "tcg", "--quick", "--json", "--pipeline", "4"])
        .args(args)
        .stdout(Stdio::piped())
        // The nodes' consoles go to a file: a pipe nobody reads until the end could
        // fill and stall the run.
        .stderr(std::fs::File::create(&console).unwrap())
        .spawn()
        .unwrap();
    let status = common::wait_for_exit(&mut bench, Duration::from_secs(300));
    let out = bench.wait_with_output().unwrap();
    let said = std::fs::read_to_string(&console).unwrap_or_default();
    let _ = std::fs::remove_file(&console);
    assert!(status.success(), "{out:?}: {said}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(
        report["server"].as_str().unwrap().contains("native"),
        "{report}"
    );
    for side in ["sesa", "against"] {
        let row = &report[side][0];
        assert_eq!(row["pipeline"], 4, "{report}");
        for field in ["kops", "p99_us", "cpu_us_per_req"] {
            let v = row[field].as_f64().unwrap_or(0.0);
            assert!(v.is_finite() && v > 0.0, "{side} {field} = {v}: {report}");
        }
    }
    report
}

/// The kernel's sampling profiler (`profile=<hz>` on its command line): a store node
/// reports a full set of samples on its console, the addresses seen most first, and
/// `scripts/native-profile.py` turns them into the kernel's functions.
#[test]
fn the_native_kernel_profiles_itself_and_the_script_names_its_functions() {
    // A rate that is not a number is refused, saying so.
    let (code, out) = boot("tcg", "events 1 profile=ten");
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("\"profile=ten\": the profiler's rate is a number"),
        "{out}"
    );

    let mut node = Networked::start("kv 1 16 profile=100000", 11211, &[]);
    node.wait_for(
        "sesa-native: profiling at 100000 Hz",
        Duration::from_secs(30),
    );
    node.wait_for(
        "sesa-native: profile: 65536 samples",
        Duration::from_secs(60),
    );
    // The header says how many address lines follow.
    let expected: usize = node
        .out
        .lines()
        .find_map(|l| {
            l.split_once("(the first ")?
                .1
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no count in the header: {}", node.out));
    assert!(expected > 0, "{}", node.out);
    node.wait_until(
        |out| out.matches("sesa-native: profile 0x").count() >= expected,
        &format!("whole report ({expected} addresses)"),
        Duration::from_secs(30),
    );
    // Stopped by its PID (it serves until then).
    let _ = node.qemu.kill();
    let _ = node.qemu.wait();
    let console = node.out.clone();
    let log = std::env::temp_dir().join(format!("sesa-profile-{}.log", std::process::id()));
    std::fs::write(&log, &console).unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/native-profile.py");
    let out = Command::new(script)
        .arg(kernel())
        .arg(&log)
        .output()
        .expect("running scripts/native-profile.py (python3, binutils' addr2line)");
    let _ = std::fs::remove_file(&log);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(report.starts_with("65536 samples"), "{report}");
    // An idle node's CPU is in its loop or asleep in the idle gate: both are named.
    assert!(
        report.contains("run_core") || report.contains("idle_gate"),
        "{report}"
    );
}
