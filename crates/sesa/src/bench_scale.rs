//! `sesa bench kv-scale`: does the store's throughput grow with its nodes?
//!
//! On one small machine every node shares the same CPUs, so adding a node cannot add
//! capacity, and a benchmark that adds nodes measures only the cost of spreading the
//! same CPUs thinner. Here each node process gets a CPU share of its own (a cgroup with
//! a CFS quota: [`crate::cgroup`]), as if each ran on a machine of its own, the clients
//! and the frontend unconstrained; the same load per node runs against 1, 2, ... N
//! nodes, the runs interleaved, and each N is reported against N times one node.

use anyhow::bail;
use serde::Serialize;

use crate::bench_kv::{Clients, KvBenchConfig, KvFigures, kv};

/// One cluster size's figures (medians over the runs).
#[derive(Clone, Debug, Serialize)]
pub struct ScaleRow {
    /// How the clients picked nodes.
    pub clients: Clients,
    /// Node processes, each with its CPU share.
    pub nodes: u32,
    /// The store's figures at the measured depth.
    pub figures: KvFigures,
    /// Throughput over `nodes` times one node's: 1.0 is linear scaling.
    pub scaling: f64,
}

/// What `sesa bench kv-scale --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleReport {
    /// The load per node, for the record.
    pub load: String,
    /// CPUs per node process, and how the shares are made.
    pub share: String,
    /// One row per cluster size, from one node up.
    pub rows: Vec<ScaleRow>,
}

impl ScaleReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!("load: {}\nshares: {}\n", self.load, self.share);
        out += "clients   nodes      kops    p99 µs  cpu µs/req  answered here  scaling (kops / (nodes x one node's))\n";
        for r in &self.rows {
            let here = match r.figures.answered_here {
                Some(share) => format!("{:>12.0}%", share * 100.0),
                None => format!("{:>13}", "-"),
            };
            out += &format!(
                "{:<9} {:>5} {:>9.1} {:>9.1} {:>11.2} {here} {:>8.2}\n",
                r.clients.to_string(),
                r.nodes,
                r.figures.kops,
                r.figures.p99_us,
                r.figures.cpu_us_per_req,
                r.scaling
            );
        }
        out
    }
}

/// Runs `per_node`'s load (its connections per node, one pipeline depth) against 1 to
/// `max_nodes` nodes of `share` CPUs each, with each kind of `clients`, in
/// `per_node.runs` interleaved rounds. One node is measured once per round: every kind
/// of client sends it everything.
///
/// # Errors
/// Bad settings, no CPU shares can be made here (the message says why), or a run
/// failed.
pub fn kv_scale(
    per_node: &KvBenchConfig,
    max_nodes: u32,
    share: f64,
    clients: &[Clients],
) -> anyhow::Result<ScaleReport> {
    if max_nodes == 0 {
        bail!("--max-nodes must be at least 1");
    }
    if clients.is_empty() {
        bail!("--clients names no kind of client");
    }
    let [pipeline] = per_node.pipelines[..] else {
        bail!("kv-scale measures one pipeline depth");
    };
    if per_node.native.is_some() || per_node.against.is_some() {
        bail!("kv-scale measures hosted sesa nodes against themselves");
    }
    // Each kind once, in the order given.
    let mut unique: Vec<Clients> = Vec::new();
    for c in clients {
        if !unique.contains(c) {
            unique.push(*c);
        }
    }
    let clients = unique;
    // (clients, nodes) in the order measured in each round.
    let mut cases = vec![(clients[0], 1)];
    for nodes in 2..=max_nodes {
        cases.extend(clients.iter().map(|&c| (c, nodes)));
    }
    let mut runs: Vec<Vec<KvFigures>> = vec![Vec::new(); cases.len()];
    let mut kind = String::new();
    for _ in 0..per_node.runs.max(1) {
        for (i, &(clients, nodes)) in cases.iter().enumerate() {
            let config = KvBenchConfig {
                connections: per_node.connections * nodes as usize,
                nodes,
                cpu_share: Some(share),
                runs: 1,
                clients,
                ..per_node.clone()
            };
            let report = kv(&config)?;
            kind.clone_from(&report.shares);
            runs[i].extend(report.sesa);
        }
    }
    let medians: Vec<KvFigures> = runs.iter().map(|r| crate::bench_kv::median(r)).collect();
    let one = medians[0].kops;
    Ok(ScaleReport {
        load: format!(
            "{} connection(s) per node, pipeline {pipeline}, {}-byte keys ({} of them), \
             {}-byte values, {}% get, {} s x {} interleaved round(s), {} core(s) per node",
            per_node.connections,
            per_node.key_size,
            per_node.keys,
            per_node.value_size,
            per_node.get_percent,
            per_node.seconds,
            per_node.runs.max(1),
            per_node.server_cores,
        ),
        share: kind,
        rows: cases
            .iter()
            .zip(medians)
            .map(|(&(clients, nodes), figures)| ScaleRow {
                clients,
                nodes,
                scaling: figures.kops / (f64::from(nodes) * one),
                figures,
            })
            .collect(),
    })
}
