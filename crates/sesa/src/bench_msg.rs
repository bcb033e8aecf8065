//! `sesa bench msg`: remote invocation between two nodes, against a plain tokio TCP echo
//! of the same sizes in the same run.
//!
//! Two single-core nodes (two hosted runtimes in this process, on their own threads)
//! talk over loopback. Figures:
//! - `call_rtt_p50_us` / `_p99_us`: one remote call at a time (`MessengerRef::call` of
//!   an echo EBB's rep, 32-byte argument), client core to server core and back.
//! - `call_pipelined_kops`: thousands of calls per second with `in_flight` calls
//!   outstanding (one task each), batched into shared writes by the messenger.
//! - the same two figures for a bare tokio echo (a 4-byte length and 32 bytes each way),
//!   the floor any messenger over tokio TCP sits on.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde::Serialize;
use sesa_ebb::{CoreId, EbbId, PerCore};
use sesa_exec::{
    Identity, Messenger, MessengerConfig, NodeId, RemoteError, RemoteRep, Request, Secret,
};
use sesa_hosted::{Config, Exit, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sizes of one run.
#[derive(Clone, Debug)]
pub struct MsgConfig {
    /// Unpipelined round trips measured.
    pub round_trips: usize,
    /// Calls outstanding at once in the pipelined figure.
    pub in_flight: usize,
    /// Calls per outstanding slot in the pipelined figure.
    pub calls_per_slot: usize,
}

impl MsgConfig {
    /// The published sizes.
    pub fn full() -> Self {
        MsgConfig {
            round_trips: 20_000,
            in_flight: 64,
            calls_per_slot: 3_000,
        }
    }

    /// A smoke run.
    pub fn quick() -> Self {
        MsgConfig {
            round_trips: 200,
            in_flight: 8,
            calls_per_slot: 50,
        }
    }
}

/// What `sesa bench msg --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct MsgReport {
    /// Remote call round trip, median, µs.
    pub call_rtt_p50_us: f64,
    /// Remote call round trip, 99th percentile, µs.
    pub call_rtt_p99_us: f64,
    /// Remote calls per second with `in_flight` outstanding, thousands.
    pub call_pipelined_kops: f64,
    /// Bare tokio echo round trip, median, µs.
    pub tokio_rtt_p50_us: f64,
    /// Bare tokio echo round trip, 99th percentile, µs.
    pub tokio_rtt_p99_us: f64,
    /// Bare tokio echoes per second with `in_flight` outstanding, thousands.
    pub tokio_pipelined_kops: f64,
    /// Calls outstanding in the pipelined figures.
    pub in_flight: usize,
}

impl MsgReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        format!(
            "sesa bench msg: 2 single-core nodes over loopback, 32-byte calls\n\
             remote call round trip   {:>8.1} us p50  {:>8.1} us p99   (tokio echo {:.1} / {:.1} us: {:.2}x)\n\
             pipelined ({} in flight) {:>8.0} k calls/s           (tokio echo {:.0} k/s: {:.2}x)\n",
            self.call_rtt_p50_us,
            self.call_rtt_p99_us,
            self.tokio_rtt_p50_us,
            self.tokio_rtt_p99_us,
            self.call_rtt_p50_us / self.tokio_rtt_p50_us,
            self.in_flight,
            self.call_pipelined_kops,
            self.tokio_pipelined_kops,
            self.call_pipelined_kops / self.tokio_pipelined_kops,
        )
    }
}

struct Echo;

impl RemoteRep for Echo {
    fn handle(&self, request: Request<'_>) -> Result<Vec<u8>, RemoteError> {
        Ok(request.payload.to_vec())
    }
}

fn one_core_node() -> anyhow::Result<Runtime> {
    Ok(Runtime::new(Config {
        pin_threads: false,
        ..Config::with_cores(1)
    })?)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1e3
}

/// Runs the messenger and tokio figures.
///
/// # Errors
/// If a node fails to start or a call fails.
pub fn msg(config: &MsgConfig) -> anyhow::Result<MsgReport> {
    let secret = Secret::from_bytes([0x5e; 32]);
    let (ready_tx, ready_rx) = mpsc::channel::<(SocketAddr, u64)>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let server_secret = secret.clone();
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        let done_rx = std::sync::Mutex::new(done_rx);
        let exit = one_core_node()?.run(move || async move {
            let me = Identity {
                node: NodeId::new(1),
                generation: 1,
            };
            let messenger = Messenger::create(MessengerConfig::new(me, server_secret))?;
            let addr = messenger.listen("127.0.0.1:0".parse()?).await?;
            let (echo, _root) = PerCore::create(|_| Echo)?;
            messenger.serve(echo).await?;
            ready_tx.send((addr, echo.id().raw()))?;
            while done_rx
                .lock()
                .map_err(|_| anyhow!("poisoned"))?
                .try_recv()
                .is_err()
            {
                sesa_event::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(())
        })?;
        match exit {
            Exit::Completed(r) => r,
            other => Err(anyhow!("server node stopped ({})", other.code())),
        }
    });
    let (addr, ebb) = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the server node did not start")?;
    let cfg = config.clone();
    let client = one_core_node()?.run(move || async move {
        let me = Identity {
            node: NodeId::new(2),
            generation: 1,
        };
        let messenger = Messenger::create(MessengerConfig::new(me, secret))?;
        messenger.connect(addr).await?;
        let ebb = EbbId::from_raw(ebb).context("bad id")?;
        let payload = vec![7u8; 32];
        let mut rtts = Vec::with_capacity(cfg.round_trips);
        for _ in 0..cfg.round_trips {
            let start = Instant::now();
            messenger
                .call(NodeId::new(1), CoreId::new(0), ebb, 1, payload.clone())
                .await?;
            rtts.push(start.elapsed().as_nanos() as u64);
        }
        rtts.sort_unstable();
        let start = Instant::now();
        let slots: Vec<_> = (0..cfg.in_flight)
            .map(|_| {
                let payload = payload.clone();
                sesa_event::spawn_local(async move {
                    for _ in 0..cfg.calls_per_slot {
                        messenger
                            .call(NodeId::new(1), CoreId::new(0), ebb, 1, payload.clone())
                            .await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for slot in slots {
            slot.await??;
        }
        let kops =
            (cfg.in_flight * cfg.calls_per_slot) as f64 / start.elapsed().as_secs_f64() / 1e3;
        anyhow::Ok((rtts, kops))
    })?;
    let _ = done_tx.send(());
    server
        .join()
        .map_err(|_| anyhow!("the server node panicked"))??;
    let (rtts, call_kops) = match client {
        Exit::Completed(r) => r?,
        other => return Err(anyhow!("client node stopped ({})", other.code())),
    };
    let (tokio_rtts, tokio_kops) = tokio_echo(config)?;
    Ok(MsgReport {
        call_rtt_p50_us: percentile(&rtts, 0.5),
        call_rtt_p99_us: percentile(&rtts, 0.99),
        call_pipelined_kops: call_kops,
        tokio_rtt_p50_us: percentile(&tokio_rtts, 0.5),
        tokio_rtt_p99_us: percentile(&tokio_rtts, 0.99),
        tokio_pipelined_kops: tokio_kops,
        in_flight: config.in_flight,
    })
}

/// The baseline: a bare length-prefixed echo between two current-thread tokio runtimes.
fn tokio_echo(config: &MsgConfig) -> anyhow::Result<(Vec<u64>, f64)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let (mut r, mut w) = tokio::io::split(stream);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    return anyhow::Ok(());
                }
                // Echo: the stream is a sequence of identical 36-byte frames.
                w.write_all(&buf[..n]).await?;
            }
        })
    });
    let cfg = config.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut frame = vec![0u8; 36];
        frame[..4].copy_from_slice(&32u32.to_le_bytes());
        let mut back = vec![0u8; 36];
        let mut rtts = Vec::with_capacity(cfg.round_trips);
        for _ in 0..cfg.round_trips {
            let start = Instant::now();
            s.write_all(&frame).await?;
            s.read_exact(&mut back).await?;
            rtts.push(start.elapsed().as_nanos() as u64);
        }
        rtts.sort_unstable();
        // Pipelined: keep `in_flight` frames outstanding, writing and reading in batches.
        let total = cfg.in_flight * cfg.calls_per_slot;
        let batch = frame.repeat(cfg.in_flight);
        let mut replies = vec![0u8; batch.len()];
        let start = Instant::now();
        for _ in 0..cfg.calls_per_slot {
            s.write_all(&batch).await?;
            s.read_exact(&mut replies).await?;
        }
        let kops = total as f64 / start.elapsed().as_secs_f64() / 1e3;
        anyhow::Ok((rtts, kops))
    });
    server
        .join()
        .map_err(|_| anyhow!("the echo server panicked"))??;
    result
}
