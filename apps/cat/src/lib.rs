//! # sesa-cat: files printed by nodes, read through the frontend
//!
//! The paper's legacy offload in its smallest form: node `i` of `n` reads the files at
//! positions `p` with `p % n == i - 1` through the frontend's offloaded file system
//! (only under the directories granted) and prints them through its offloaded console.

#![cfg_attr(not(feature = "frontend"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use sesa_node::app::{App, AppError, NodeContext};
use sesa_node::offload::Stream;

#[cfg(feature = "frontend")]
mod frontend;

#[cfg(feature = "frontend")]
pub use frontend::CatFrontend;

/// Prints files through the offloaded console: node `i` reads (through the offloaded
/// file system) and prints every file whose position `p` has `p % nodes == i - 1`.
pub struct Cat;

/// Files `cat` printed, and files it could not.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Printed {
    /// Printed.
    pub files: u32,
    /// Refused or unreadable (each reported on stderr by its node).
    pub failed: u32,
}

impl App for Cat {
    const NAME: &'static str = "cat";
    /// Paths, as the user gave them (relative to the frontend's directory).
    type Settings = Vec<String>;
    type Outcome = Printed;

    async fn run(node: NodeContext, files: Vec<String>) -> Result<Printed, AppError> {
        let offload = node.offload();
        let mut printed = Printed::default();
        for (_, file) in node.share(&files) {
            match offload.read(file).await {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    offload.print(Stream::Out, &text).await?;
                    printed.files += 1;
                }
                Err(e) => {
                    offload.print(Stream::Err, &format!("cat: {e}\n")).await?;
                    printed.failed += 1;
                }
            }
        }
        Ok(printed)
    }
}
