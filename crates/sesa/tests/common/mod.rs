//! Helpers shared by the multi-process tests.

// Each test file compiles this module on its own and uses only some of it.
#![allow(dead_code)]

pub mod libmemcached;

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Runs libmemcached's protocol conformance suite (`memccapable -a`: the text protocol
/// only) against the server on `127.0.0.1:port` and fails the test with its output
/// unless every test passed.
///
/// # Panics
/// When `memccapable` is not installed: `scripts/test.sh` installs it
/// (libmemcached-tools); a test that cannot check must not pass.
pub fn memccapable(port: u16) {
    let out = std::process::Command::new("memccapable")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-a"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "memccapable cannot run ({e}): install libmemcached-tools (scripts/test.sh does)"
            )
        });
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("All tests passed"),
        "memccapable against port {port}: {}\n{said}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // It leaves 14 items behind (on memcached 1.6.18 as well): empty the store again,
    // so the test goes on from an empty store.
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"flush_all\r\n").unwrap();
    let mut ok = [0; 4];
    conn.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"OK\r\n");
}

/// Stops a server the test started: SIGINT (a sesa frontend then stops its nodes), up
/// to 10 s to exit, then SIGKILL; and reaps it.
pub fn interrupt_and_reap(child: &mut std::process::Child) {
    // SAFETY: signalling our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A server process the test started: stopped ([`interrupt_and_reap`]) when dropped.
pub struct Server {
    /// The process.
    pub child: std::process::Child,
    /// Its client port on 127.0.0.1.
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        interrupt_and_reap(&mut self.child);
    }
}

/// `sesa kv --port 0` with `args`, once node `node` said it listens (0 for a single
/// node; on a cluster, the frontend prints one line per node).
pub fn sesa_kv(args: &[&str], node: u32) -> Server {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sesa"))
        .args(["kv", "--port", "0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let want = format!("node {node} listening on 127.0.0.1:");
    let port = loop {
        let line = lines
            .next()
            .expect("sesa kv ended before its node listened")
            .unwrap();
        if let Some(port) = line.strip_prefix(&want) {
            break port.parse().unwrap();
        }
    };
    // Keep reading its stdout so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, port }
}

/// The native kernel (`crates/sesa-native`, a workspace of its own built with
/// `panic = "abort"`), built once per test process: its path. Starting QEMU then
/// measures QEMU, not cargo.
pub fn native_kernel() -> &'static std::path::PathBuf {
    static KERNEL: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    KERNEL.get_or_init(|| {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sesa-native");
        sesa_frontend::build_native_image(&dir.join("Cargo.toml"), None, "sesa-kernel")
            .expect("building the native kernel")
    })
}

/// A native node serving the data store (`kv <cores> <memory_mb>` on the kernel's
/// command line) under QEMU's TCG with `-smp cores` and `-m ram_mb`, its port 11211
/// forwarded to [`Server::port`]; its serial console collected in `console`.
pub struct NativeKv {
    /// QEMU, stopped by its PID when dropped.
    pub server: Server,
    /// The console so far.
    pub console: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Boots a native data-store node and waits (30 s at most) until it answers `version`.
pub fn native_kv(cores: u32, memory_mb: u32, ram_mb: u32) -> NativeKv {
    use std::io::{BufRead, Read, Write};
    let kernel = native_kernel();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-M", "microvm", "-cpu", "max"])
        .args(["-m", &ram_mb.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot", "-smp", &cores.to_string()])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-netdev")
        .arg(format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:11211"))
        .args(["-device", "virtio-net-device,netdev=n0", "-kernel"])
        .arg(kernel)
        .args(["-append", &format!("kv {cores} {memory_mb}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("qemu-system-x86_64 cannot run ({e}): install qemu-system-x86 (scripts/test.sh does)")
        });
    let console = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = console.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let mut console = sink.lock().unwrap();
            console.push_str(&line);
            console.push('\n');
        }
    });
    let node = NativeKv {
        server: Server { child, port },
        console,
    };
    // QEMU's forwarded port accepts before the guest listens: ask until it answers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answered = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut c| {
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut reply = [0u8; 8];
            c.write_all(b"version\r\n").is_ok()
                && c.read_exact(&mut reply).is_ok()
                && &reply == b"VERSION "
        });
        if answered {
            return node;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the native node did not answer within 30 s: {}",
            node.console.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The lines of a child's output stream, on a channel (read by a thread of their own).
pub fn lines(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for `child` to exit; after `within`, kills it and fails the test.
pub fn wait_for_exit(
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            // Stopped by its PID before the test fails, so it outlives no test.
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {within:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits until none of `pids` runs, failing the test after `within`.
pub fn wait_until_gone(pids: &[u32], within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "processes still running after {within:?}: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
