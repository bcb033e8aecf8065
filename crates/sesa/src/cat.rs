//! `sesa run cat`: nodes print files read through the frontend's offloaded file system
//! (the node side is `sesa_node::builtin::Cat`).

use sesa_frontend::{Application, Cluster};
use sesa_node::builtin::{Cat, Printed};

/// `cat`'s frontend: runs it once on every node and adds up what they printed.
pub struct CatFrontend;

impl Application for CatFrontend {
    type Node = Cat;
    type Output = Printed;

    async fn frontend(cx: &mut Cluster<'_>, files: Vec<String>) -> anyhow::Result<Printed> {
        let mut total = Printed::default();
        for (_node, printed) in cx.run_everywhere::<Cat>(&files).await? {
            total.files += printed.files;
            total.failed += printed.failed;
        }
        Ok(total)
    }
}
