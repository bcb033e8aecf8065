//! The `sesa` command as a user runs it.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sesa() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sesa"))
}

#[test]
fn run_counter_prints_the_exact_total() {
    for cores in ["1", "2", "3"] {
        let out = sesa()
            .args(["run", "counter", "--incs", "100000", "--cores", cores])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let expected = format!("total={}\n", 100_000 * cores.parse::<u64>().unwrap());
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    }
}

#[test]
fn run_counter_uses_every_core_by_default() {
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let out = sesa()
        .args(["run", "counter", "--incs", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("total={}\n", cores * 1000)
    );
}

/// Starts a count that would take hours, waits until every core runs, sends `signal`,
/// and checks the run stops cleanly with exit status 128 + signal and no total.
fn interrupted_count_exits_cleanly(signal: i32) {
    let mut child = sesa()
        .args(["run", "counter", "--incs", "1000000000000", "--cores", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until every core runs (and signals are handled) before interrupting.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("counter: counting on 2 cores"), "{line}");
    // SAFETY: sending a signal to our own child, whose pid we hold.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(128 + signal), "{out:?}");
    assert!(out.stdout.is_empty(), "no total for an interrupted count");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("stopped before the count finished"), "{rest}");
}

#[test]
fn sigint_stops_every_core_cleanly() {
    interrupted_count_exits_cleanly(libc::SIGINT);
}

#[test]
fn sigterm_stops_every_core_cleanly() {
    interrupted_count_exits_cleanly(libc::SIGTERM);
}

#[test]
fn bench_micro_json_has_every_figure() {
    let report = bench_json(&["micro", "--cores", "2"]);
    assert_positive(
        &report,
        &[
            "ebb_call_ns",
            "direct_call_ns",
            "counter_ebb_mops",
            "counter_atomic_mops",
            "counter_mutex_mops",
            "miss_ns",
            "spawn_rtt_p50_ns",
            "spawn_rtt_p99_ns",
            "spawn_mops",
        ],
    );
    assert_eq!(report["cores"], 2);
}

#[test]
fn bad_arguments_are_a_usage_error() {
    let out = sesa()
        .args(["run", "counter", "--incs", "lots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value"));
}

#[test]
fn bench_msg_json_has_every_figure() {
    let report = bench_json(&["msg"]);
    assert_positive(
        &report,
        &[
            "call_rtt_p50_us",
            "call_rtt_p99_us",
            "call_pipelined_kops",
            "tokio_rtt_p50_us",
            "tokio_rtt_p99_us",
            "tokio_pipelined_kops",
        ],
    );
}

/// Runs `sesa bench <args> --json --quick`; its report.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = sesa()
        .arg("bench")
        .args(args)
        .args(["--json", "--quick"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asserts every named field of `report` is a finite number above zero.
fn assert_positive(report: &serde_json::Value, fields: &[&str]) {
    for field in fields {
        let v = report[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} missing in {report}"));
        assert!(v.is_finite() && v > 0.0, "{field} = {v}");
    }
}

#[test]
fn bench_kv_json_has_every_figure_per_depth() {
    let report = bench_json(&["kv", "--pipeline", "1,4"]);
    let rows = report["sesa"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, depth) in rows.iter().zip([1, 4]) {
        assert_eq!(row["pipeline"], depth);
        assert_positive(
            row,
            &["kops", "p50_us", "p99_us", "p999_us", "cpu_us_per_req"],
        );
    }
    // Without --against there is nothing to compare with.
    assert_eq!(report["against"], serde_json::json!([]));
    assert_eq!(report["ratios"], serde_json::json!([]));
}

/// The load spread over a store of several node processes.
#[test]
fn bench_kv_on_a_cluster_reports_every_figure() {
    let report = bench_json(&["kv", "--nodes", "2", "--pipeline", "4"]);
    assert!(
        report["load"].as_str().unwrap().contains("2 nodes"),
        "{report}"
    );
    let rows = report["sesa"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    assert_positive(&rows[0], &["kops", "p99_us", "cpu_us_per_req"]);
}

/// The side-by-side run against a real memcached (installed by `scripts/test.sh`).
#[test]
fn bench_kv_against_memcached_reports_both_servers_and_their_ratios() {
    let report = bench_json(&["kv", "--against", "memcached", "--pipeline", "1,8"]);
    assert_eq!(report["peer"], "memcached", "{report}");
    for server in ["sesa", "against"] {
        let rows = report[server].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{report}");
        for row in rows {
            assert_positive(row, &["kops", "p99_us", "cpu_us_per_req"]);
        }
    }
    let ratios = report["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 2, "{report}");
    for row in ratios {
        assert_positive(row, &["kops", "p99", "reqs_per_cpu_second"]);
    }
}

/// The capacity-true run (tiny): each node process in a CPU share of its own. Where no
/// share can be made (not root, no cpu controller) it must say so, not measure without.
#[test]
fn bench_kv_scale_reports_every_size_or_says_why_it_cannot() {
    let out = sesa()
        .args(["bench", "kv-scale", "--json", "--quick"])
        .output()
        .unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot give nodes CPU shares of their own"),
            "{out:?}"
        );
        eprintln!("NOT RUN: no CPU shares can be made here ({err})");
        return;
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["share"].as_str().unwrap().contains("0.15 CPU"),
        "{report}"
    );
    let rows = report["rows"].as_array().unwrap();
    // One node, then two with each kind of client.
    assert_eq!(rows.len(), 3, "{report}");
    for (row, (clients, nodes)) in rows
        .iter()
        .zip([("AnyNode", 1), ("AnyNode", 2), ("Ketama", 2)])
    {
        assert_eq!(
            (row["clients"].as_str(), row["nodes"].as_u64()),
            (Some(clients), Some(nodes)),
            "{report}"
        );
        assert_positive(&row["figures"], &["kops", "p99_us", "cpu_us_per_req"]);
        assert_positive(row, &["scaling"]);
    }
    // Two nodes say how many of the clients' commands they answered themselves: with
    // ketama clients, every one (each was sent to its key's primary).
    let here = rows[1]["figures"]["answered_here"].as_f64().unwrap();
    assert!(here > 0.0 && here <= 1.0, "{report}");
    assert_eq!(
        rows[2]["figures"]["answered_here"].as_f64(),
        Some(1.0),
        "{report}"
    );
    // Every group it made is gone.
    for root in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpu,cpuacct",
    ] {
        let left: Vec<String> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("sesa-bench-"))
            .collect();
        assert!(left.is_empty(), "left in {root}: {left:?}");
    }
}

/// The elasticity run end to end (small): a scale-out and a kill -9 under load, with
/// every acknowledged write read back.
#[test]
fn bench_kv_elastic_loses_nothing_and_reports_every_figure() {
    let report = bench_json(&["kv-elastic"]);
    assert_positive(
        &report,
        &[
            "baseline_ops",
            "scale_seconds",
            "scale_copies",
            "acked_writes",
        ],
    );
    for must_be_zero in ["lost_writes", "missing_keys", "failed_requests"] {
        assert_eq!(report[must_be_zero], 0, "{must_be_zero}: {report}");
    }
    let worst = report["scale_worst_second"].as_f64().unwrap();
    assert!((0.0..=2.0).contains(&worst), "{report}");
    // The same worst second against the four nodes' throughput after the move.
    let after = report["after_scale_ops"].as_f64().unwrap();
    let vs_after = report["scale_worst_vs_after"].as_f64().unwrap();
    if after > 0.0 {
        let baseline = report["baseline_ops"].as_f64().unwrap();
        let expected = worst * baseline / after;
        assert!(
            (vs_after - expected).abs() < 1e-6 * expected.max(1.0),
            "{report}"
        );
    } else {
        assert_eq!(vs_after, 0.0, "{report}");
    }
}

/// `-l` as memcached's: a single-node store and every node of a local cluster listen
/// where told, and say so; a native node's port, forwarded by QEMU from an IPv4
/// address, refuses an IPv6 one.
#[test]
fn kv_listens_on_the_address_given() {
    for nodes in ["1", "2"] {
        let mut child = sesa()
            .args(["kv", "-l", "127.0.0.2", "--port", "0", "--cores", "1"])
            .args(["--nodes", nodes])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut answered = Vec::new();
        for _ in 0..nodes.parse().unwrap() {
            let line = lines.next().unwrap().unwrap();
            let addr = line
                .split_once(" listening on ")
                .map(|(_, addr)| addr.to_owned())
                .filter(|addr| addr.starts_with("127.0.0.2:"));
            answered.push((line, addr.map(|addr| version_of(&addr))));
        }
        let _ = child.kill();
        let _ = child.wait();
        for (line, version) in answered {
            assert_eq!(version, Some(*b"VERSION "), "{nodes} node(s): {line:?}");
        }
    }
    let said = fails_saying(&["kv", "-l", "::1", "--native", "--kernel", "/nonexistent"]);
    assert!(said.contains("forwarded from an IPv4 address"), "{said}");
}

/// The first 8 bytes of a store's answer to `version` at `addr`.
fn version_of(addr: &str) -> [u8; 8] {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    use std::io::Write;
    conn.write_all(b"version\r\n").unwrap();
    let mut got = [0; 8];
    conn.read_exact(&mut got).unwrap();
    got
}

/// `sesa kv args`, started, and the first line it printed.
fn kv_started(args: &[&str]) -> (std::process::Child, String) {
    let mut child = sesa()
        .arg("kv")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// Runs `sesa args`, which must fail: what it said on stderr.
fn fails_saying(args: &[&str]) -> String {
    let out = sesa().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The Linux-guest peer of `sesa bench kv` says what is missing before booting anything.
#[test]
fn bench_kv_against_a_linux_guest_says_what_is_missing() {
    let native = ["bench", "kv", "--quick", "--native", "/nonexistent/kernel"];
    let said = fails_saying(&[&native[..], &["--against", "hosted-vm"]].concat());
    assert!(
        said.contains("target/linux-guest/vmlinuz: missing"),
        "{said}"
    );
    let guest = ["--linux-guest", "/nonexistent/guest"];
    let said = fails_saying(&[&native[..], &["--against", "memcached-vm"], &guest].concat());
    assert!(
        said.contains("/nonexistent/guest/vmlinuz: missing") && said.contains("linux-guest.sh"),
        "{said}"
    );
    let said = fails_saying(
        &[
            &native[..],
            &["--tap", "sesatap0", "--guest-tap", "sesatap1"],
        ]
        .concat(),
    );
    assert!(said.contains("goes with --against hosted-vm"), "{said}");
}

#[test]
fn kv_serves_memcached_clients_and_refuses_no_nodes_loudly() {
    let (mut child, line) = kv_started(&["--port", "0", "--cores", "2"]);
    let addr = line
        .strip_prefix("node 0 listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim()
        .to_owned();
    // libmemcached's own protocol suite finds nothing to object to.
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    common::memccapable(port);
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    use std::io::Write;
    conn.write_all(b"set a 1 0 2\r\nhi\r\nget a\r\n").unwrap();
    let want = b"STORED\r\nVALUE a 1 2\r\nhi\r\nEND\r\n";
    let mut got = vec![0; want.len()];
    conn.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    // SIGTERM stops it cleanly.
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert!(status.code().is_some(), "{status:?}");

    // A second store on the first one's port is refused, as memcached refuses a taken
    // port. (Both share their port among their cores with SO_REUSEPORT, which would let
    // the second bind too and split the clients between two unrelated stores.)
    let first = common::sesa_kv(&["--cores", "2"], 0);
    let mut second = sesa()
        .args(["kv", "--port", &first.port.to_string(), "--cores", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(first);
    let status = refused.expect("a second store started on the first one's port");
    let mut said = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(
        !status.success() && said.contains("in use"),
        "{status}: {said}"
    );

    // (Many nodes: tests/kv_cluster.rs.) No nodes is refused with a reason.
    let said = fails_saying(&["kv", "--nodes", "0", "--port", "0"]);
    assert!(said.contains("must be at least 1"), "{said}");
}
