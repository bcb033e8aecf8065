//! tally's native image: the sesa kernel with tally's node side. The frontend
//! (`tally --native-nodes K --kernel <this image>`) boots it under QEMU as a node.

#![no_std]
#![no_main]

use sesa_node::app::Apps;

/// The applications this image runs.
fn apps() -> Apps {
    Apps::new().with::<tally::TallyApp>()
}

sesa_native::entry!(apps);
