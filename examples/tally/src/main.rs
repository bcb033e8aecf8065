//! `tally`: the frontend, and (launched by it) each hosted node. See the library's docs.

fn main() -> std::process::ExitCode {
    sesa_frontend::main::<tally::TallyApp>()
}
