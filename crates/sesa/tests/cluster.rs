//! Many node processes as one application, including faults: kill -9 of the frontend or
//! of a node, and Ctrl-C. Every test checks that no node process is left behind.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{alive, wait_for_exit, wait_until_gone};

fn sesa() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sesa"))
}

/// The tests here each run several node processes that poll their inboxes; run them one
/// at a time so they do not starve one another on small machines (failure detection
/// must see slowness from faults, not from the test harness).
///
/// The guard also stops, if the test fails, every process it started (see [`Serial`]).
fn one_at_a_time() -> Serial {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    Serial {
        _lock: LOCK.lock().unwrap_or_else(|p| p.into_inner()),
    }
}

/// The processes the running test started: its frontends and the nodes they reported.
static STARTED: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Notes a process the running test started.
fn started(pid: u32) {
    STARTED.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
}

/// Holds the one-test-at-a-time lock. When a test panics, it kills (SIGCONT, then
/// SIGKILL, for a frozen node) every sesa process the test started and that still runs,
/// so one failure cannot leave a cluster running and starve the tests after it. A test
/// that passes has already checked that nothing is left.
struct Serial {
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl Drop for Serial {
    fn drop(&mut self) {
        let pids = std::mem::take(&mut *STARTED.lock().unwrap_or_else(|p| p.into_inner()));
        if !std::thread::panicking() {
            return;
        }
        for pid in pids {
            // Only a live process that is still a sesa (a pid may have been reused).
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(4).any(|w| w == b"sesa"));
            if alive(pid) && ours {
                // SAFETY: signalling a process this test started (checked above).
                unsafe {
                    libc::kill(pid as i32, libc::SIGCONT);
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
    }
}

/// A frontend running a count too long to finish; returns it once every node joined,
/// with the node pids, and a channel of its remaining stderr lines.
fn long_count(nodes: u32) -> (Child, Vec<u32>, mpsc::Receiver<String>) {
    count_in(nodes, 1_000_000_000_000, None)
}

fn long_count_in(
    nodes: u32,
    runtime_dir: Option<&std::path::Path>,
) -> (Child, Vec<u32>, mpsc::Receiver<String>) {
    count_in(nodes, 1_000_000_000_000, runtime_dir)
}

/// A frontend counting `incs` per core on `nodes` one-core nodes; returned once every
/// node joined, with the node pids and the rest of its stderr.
fn count_in(
    nodes: u32,
    incs: u64,
    runtime_dir: Option<&std::path::Path>,
) -> (Child, Vec<u32>, mpsc::Receiver<String>) {
    let mut cmd = sesa();
    if let Some(dir) = runtime_dir {
        cmd.env("XDG_RUNTIME_DIR", dir);
    }
    let mut child = cmd
        .args([
            "run",
            "counter",
            "--incs",
            &incs.to_string(),
            "--cores",
            "1",
        ])
        .args(["--nodes", &nodes.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    started(child.id());
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut pids = Vec::new();
    let mut joined = 0;
    while joined < nodes {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the frontend went quiet before every node joined");
        if let Some(rest) = line.strip_prefix("sesa: node ") {
            if let Some(pid) = rest.split("(pid ").nth(1) {
                let pid = pid.trim_end_matches(')').parse().unwrap();
                started(pid);
                pids.push(pid);
            } else if rest.contains("joined") {
                joined += 1;
            }
        }
    }
    (child, pids, rx)
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a process this test started and whose pid it holds.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn counter_on_three_nodes_is_exact_and_leaves_nothing_running() {
    let _serial = one_at_a_time();
    let out = sesa()
        .args([
            "run", "counter", "--nodes", "3", "--incs", "100000", "--cores", "1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "total=300000\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pids: Vec<u32> = stderr
        .lines()
        .filter_map(|l| l.split("(pid ").nth(1))
        .map(|p| p.trim_end_matches(')').parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3, "{stderr}");
    wait_until_gone(&pids, Duration::from_secs(5));
}

#[test]
fn kill_9_of_the_frontend_leaves_no_node_behind() {
    let _serial = one_at_a_time();
    let (mut frontend, pids, _rx) = long_count(2);
    frontend.kill().unwrap(); // SIGKILL
    frontend.wait().unwrap();
    wait_until_gone(&pids, Duration::from_secs(5));
}

/// Waits for a counting frontend to finish, checks it succeeded with `total`, and
/// returns what it said on stderr.
fn finished_with(mut frontend: Child, rx: &mpsc::Receiver<String>, total: u64) -> Vec<String> {
    let status = wait_for_exit(&mut frontend, Duration::from_secs(120));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut frontend.stdout.take().unwrap(), &mut out).unwrap();
    let said: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "{said:?}");
    assert_eq!(out, format!("total={total}\n"), "{said:?}");
    said
}

/// The pids of nodes the frontend reports starting, from its stderr lines.
fn started_pids(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| l.split("(pid ").nth(1))
        .map(|p| p.trim_end_matches(')').parse().unwrap())
        .collect()
}

/// Counts 2 x 1 core x 3e7 on two nodes, hits node 1 with `sig` once they joined, and
/// checks the run still ends with the exact total. Returns what the frontend said and
/// the node pids.
fn fault_mid_count(sig: i32) -> (Vec<String>, Vec<u32>) {
    let (mut frontend, pids, rx) = count_in(2, 30_000_000, None);
    std::thread::sleep(Duration::from_millis(200));
    signal(pids[0], sig);
    let status = wait_for_exit(&mut frontend, Duration::from_secs(120));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut frontend.stdout.take().unwrap(), &mut out).unwrap();
    let said: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "{said:?}");
    assert_eq!(
        out, "total=60000000\n",
        "node 1's chunks were counted again"
    );
    (said, pids)
}

#[test]
fn kill_9_of_a_node_mid_count_loses_no_count() {
    let _serial = one_at_a_time();
    let (said, pids) = fault_mid_count(libc::SIGKILL);
    assert!(
        said.iter()
            .any(|l| l.contains("node 1") && (l.contains("lost") || l.contains("exited"))),
        "{said:?}"
    );
    // The frontend keeps the number of nodes: a replacement was launched, and is gone
    // with the others.
    assert!(
        said.iter().any(|l| l.starts_with("sesa: node 3 started")),
        "{said:?}"
    );
    wait_until_gone(&pids, Duration::from_secs(5));
    wait_until_gone(&started_pids(&said), Duration::from_secs(5));
}

#[test]
fn scaling_out_and_in_while_counting_keeps_the_total_exact() {
    let _serial = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("sesa-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (frontend, first, rx) = count_in(1, 60_000_000, Some(&dir));
    let scale = |n: &str| {
        let out = sesa()
            .env("XDG_RUNTIME_DIR", &dir)
            .args(["scale", "--nodes", n])
            .output()
            .unwrap();
        assert!(out.status.success(), "scale to {n}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let grown = scale("3");
    assert!(grown.starts_with("scaled to 3 node(s)"), "{grown}");
    std::thread::sleep(Duration::from_millis(300));
    let shrunk = scale("1");
    assert!(shrunk.starts_with("scaled to 1 node(s)"), "{shrunk}");
    let said = finished_with(frontend, &rx, 60_000_000);
    assert_eq!(
        said.iter().filter(|l| l.ends_with(" left")).count(),
        2,
        "{said:?}"
    );
    let mut pids = first;
    pids.extend(started_pids(&said));
    assert_eq!(pids.len(), 3, "{said:?}");
    wait_until_gone(&pids, Duration::from_secs(5));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_at_the_frontend_stops_every_node() {
    let _serial = one_at_a_time();
    let (mut frontend, pids, _rx) = long_count(2);
    signal(frontend.id(), libc::SIGINT);
    let status = wait_for_exit(&mut frontend, Duration::from_secs(15));
    assert_eq!(status.code(), Some(130));
    wait_until_gone(&pids, Duration::from_secs(5));
}

/// A scratch directory with a granted part, a secret part, and a symlink from the one
/// into the other.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sesa-offload-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("granted")).unwrap();
    std::fs::create_dir_all(dir.join("secret")).unwrap();
    std::fs::write(dir.join("granted/a.txt"), "alpha\n").unwrap();
    std::fs::write(dir.join("granted/b.txt"), "beta\n").unwrap();
    std::fs::write(dir.join("secret/s.txt"), "TOP SECRET\n").unwrap();
    std::os::unix::fs::symlink("../secret/s.txt", dir.join("granted/link.txt")).unwrap();
    dir
}

#[test]
fn nodes_read_granted_files_and_print_through_the_frontend() {
    let _serial = one_at_a_time();
    let dir = scratch("ok");
    let out = sesa()
        .current_dir(&dir)
        .args([
            "run", "cat", "--nodes", "1", "--cores", "1", "--grant", "granted",
        ])
        .args(["granted/a.txt", "granted/b.txt"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alpha\nbeta\n");
}

#[test]
fn offloaded_files_are_confined_to_the_grants() {
    let _serial = one_at_a_time();
    let dir = scratch("confined");
    let out = sesa()
        .current_dir(&dir)
        .args(["run", "cat", "--cores", "1", "--grant", "granted"])
        .args([
            "granted/link.txt",
            "secret/s.txt",
            "granted/../secret/s.txt",
        ])
        .output()
        .unwrap();
    let no_grant = sesa()
        .current_dir(&dir)
        .args(["run", "cat", "--cores", "1", "granted/a.txt"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing secret was printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("outside the granted directories").count(),
        3,
        "{stderr}"
    );
    assert!(!no_grant.status.success());
    assert!(String::from_utf8_lossy(&no_grant.stderr).contains("no directory was granted"));
}

#[test]
fn status_shows_every_node_of_a_running_application() {
    let _serial = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("sesa-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut frontend, pids, _rx) = long_count_in(2, Some(&dir));
    let out = sesa()
        .env("XDG_RUNTIME_DIR", &dir)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["app"], "counter");
    let nodes = status["nodes"].as_array().unwrap();
    let ids: Vec<u64> = nodes.iter().map(|n| n["node"].as_u64().unwrap()).collect();
    assert_eq!(ids, [0, 1, 2]);
    for n in nodes {
        assert_eq!(n["state"], "up", "{n}");
        assert!(n["cores"].as_u64().unwrap() >= 1);
        // Every node holds reps: its messenger's and membership's, at least.
        assert!(n["reps"].as_u64().unwrap() >= 1, "{n}");
        // A hosted node's cores read their run delay (a share, where the kernel keeps
        // it: null otherwise).
        let wait = &n["cpu_wait_pct"];
        assert!(
            wait.is_null() || wait.as_u64().is_some_and(|p| p <= 100),
            "{n}"
        );
    }
    let node_pids: Vec<u32> = nodes[1..]
        .iter()
        .map(|n| n["pid"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(node_pids, pids);
    // The published file is private to its user.
    let file = dir.join("sesa").join(format!("{}.json", frontend.id()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    signal(frontend.id(), libc::SIGINT);
    wait_for_exit(&mut frontend, Duration::from_secs(15));
    wait_until_gone(&pids, Duration::from_secs(5));
    let after = sesa()
        .env("XDG_RUNTIME_DIR", &dir)
        .arg("status")
        .output()
        .unwrap();
    assert!(!after.status.success());
    assert!(String::from_utf8_lossy(&after.stderr).contains("no sesa application is running"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_frozen_node_is_declared_down_and_its_work_redone() {
    let _serial = one_at_a_time();
    // SIGSTOP keeps the node's connections open: only SWIM's probes can tell.
    let (said, pids) = fault_mid_count(libc::SIGSTOP);
    assert!(
        said.iter().any(|l| l.contains("node 1 declared down")),
        "{said:?}"
    );
    // The frozen process was killed, not left behind.
    wait_until_gone(&pids, Duration::from_secs(10));
}

#[test]
fn a_node_joins_by_hand_takes_work_and_is_let_go_cleanly() {
    let _serial = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("sesa-join-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (frontend, pids, rx) = count_in(1, 60_000_000, Some(&dir));
    // What a user on another machine would need: the address and the secret.
    let file = dir.join("sesa").join(format!("{}.json", frontend.id()));
    let published: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let hand = sesa()
        .args([
            "node",
            "--join",
            published["addr"].as_str().unwrap(),
            "--cores",
            "1",
        ])
        .env("SESA_SECRET", published["secret"].as_str().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    started(hand.id());
    let said = finished_with(frontend, &rx, 60_000_000);
    assert!(said.iter().any(|l| l.contains("node 2 joined")), "{said:?}");
    let mut hand = hand;
    let hand_status = wait_for_exit(&mut hand, Duration::from_secs(10));
    let mut hand_said = String::new();
    std::io::Read::read_to_string(&mut hand.stderr.take().unwrap(), &mut hand_said).unwrap();
    assert!(
        hand_status.success(),
        "the hand-joined node was not let go cleanly ({hand_status}): {hand_said}\nfrontend: {said:?}"
    );
    wait_until_gone(&pids, Duration::from_secs(5));
    std::fs::remove_dir_all(&dir).unwrap();
}
