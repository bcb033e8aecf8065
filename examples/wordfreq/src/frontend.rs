//! The frontend side: merges the nodes' counts, joins the words at the files' seams,
//! and prints the table.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

use sesa_frontend::{Application, Cluster, Program};

use crate::{WordFreq, stitch};

impl Application for WordFreq {
    type Node = WordFreq;
    type Settings = Vec<String>;
    type Output = ExitCode;

    async fn frontend(cluster: &mut Cluster<'_>, files: Vec<String>) -> anyhow::Result<ExitCode> {
        let mut total: HashMap<Vec<u8>, u64> = HashMap::new();
        let (mut failed, mut edges) = (0, Vec::new());
        for (_node, counts) in cluster.run_everywhere::<WordFreq>(&files).await? {
            failed += counts.failed;
            edges.extend(counts.edges);
            for (word, n) in counts.words {
                *total.entry(word).or_default() += n;
            }
        }
        for word in stitch(edges) {
            *total.entry(word).or_default() += 1;
        }
        let mut lines: Vec<(Vec<u8>, u64)> = total.into_iter().collect();
        lines.sort_unstable_by(|(wa, na), (wb, nb)| nb.cmp(na).then_with(|| wa.cmp(wb)));
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for (word, n) in &lines {
            write!(out, "{n} ")?;
            out.write_all(word)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        if failed > 0 {
            eprintln!("wordfreq: {failed} file(s) could not be read");
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `wordfreq [--nodes N] [--grant DIR]... FILE...`
#[derive(clap::Args)]
pub struct Args {
    /// The files (readable by the nodes only under a --grant directory).
    #[arg(required = true)]
    pub files: Vec<String>,
}

impl Program for WordFreq {
    type Args = Args;

    fn settings(args: Args) -> anyhow::Result<Vec<String>> {
        Ok(args.files)
    }
}
