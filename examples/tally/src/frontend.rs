//! The frontend side: the last node creates the tally, then every node counts on it.

use std::process::ExitCode;

use anyhow::bail;
use sesa_frontend::{Application, Cluster, Event, Program};

use crate::{Done, Step, TallyApp, TallyData};

/// `tally [--nodes N] [--cores C] [--incs K] [--weight W] [--name NAME]`
#[derive(clap::Args)]
pub struct Args {
    /// Increments per core.
    #[arg(long, default_value_t = 1000)]
    pub incs: u64,
    /// What an increment adds.
    #[arg(long, default_value_t = 1)]
    pub weight: u64,
    /// The tally's name.
    #[arg(long, default_value = "tally")]
    pub name: String,
}

/// What the frontend does: the tally to create, then the increments per core.
pub struct Plan {
    data: TallyData,
    incs: u64,
}

impl Application for TallyApp {
    type Node = TallyApp;
    type Settings = Plan;
    type Output = ExitCode;

    async fn frontend(cluster: &mut Cluster<'_>, plan: Plan) -> anyhow::Result<ExitCode> {
        let Plan { data, incs } = plan;
        let (name, weight) = (data.name.clone(), data.weight);
        // The last node creates it: every other node then reaches it by a global miss.
        let Some(creator) = cluster.first_nodes().values().next_back().cloned() else {
            bail!("no node to create the tally on");
        };
        let Done::Created(tally) = cluster
            .run_on::<TallyApp>(&creator, &Step::Create(data))
            .await?
        else {
            bail!("node {} did not create the tally", creator.node);
        };
        cluster.report(Event::Note(format!(
            "node {} created tally {name} as {tally:?}",
            creator.node
        )));
        let (mut total, mut expected) = (0u64, 0u64);
        let cores: std::collections::BTreeMap<sesa_ebb::NodeId, u32> = cluster
            .first_nodes()
            .values()
            .map(|r| (r.node, r.cores))
            .collect();
        for (node, done) in cluster
            .run_everywhere::<TallyApp>(&Step::Count { tally, incs })
            .await?
        {
            let Done::Counted { sum, reps, by_miss } = done else {
                bail!("node {node} did not count");
            };
            let how = if by_miss {
                "by a global miss"
            } else {
                "locally"
            };
            println!("node {node}: reached the tally {how}, {reps} rep(s), {sum}");
            total += sum;
            expected += u64::from(cores.get(&node).copied().unwrap_or(0)) * incs * weight;
        }
        println!("tally {name}: {total}");
        if total != expected {
            eprintln!("tally: expected {expected}");
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl Program for TallyApp {
    type Args = Args;

    fn settings(args: Args) -> anyhow::Result<Plan> {
        Ok(Plan {
            data: TallyData {
                name: args.name,
                weight: args.weight,
            },
            incs: args.incs,
        })
    }
}
