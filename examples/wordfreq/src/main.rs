//! `wordfreq [--nodes N] [--native-nodes K --kernel IMAGE] --grant DIR FILE...`: the
//! frontend, and (launched by it) each hosted node. See the library's docs.

fn main() -> std::process::ExitCode {
    sesa_frontend::main::<wordfreq::WordFreq>()
}
