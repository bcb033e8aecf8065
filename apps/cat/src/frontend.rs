//! `cat`'s frontend side: runs it once on every node and adds up what they printed.

use crate::{Cat, Printed};
use sesa_frontend::{Application, Cluster};

/// `cat`'s frontend: runs it once on every node and adds up what they printed.
pub struct CatFrontend;

impl Application for CatFrontend {
    type Node = Cat;
    type Settings = Vec<String>;
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
