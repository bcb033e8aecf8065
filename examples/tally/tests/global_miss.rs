//! The global miss across processes: the last node creates a globally named EBB, every
//! other node reaches it by its id alone (hosted nodes, and a native one), and the
//! counts add up exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tally(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("running tally");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The lines a run printed, and its exit.
fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_node_reaches_a_global_ebb_by_its_id() {
    let out = tally(&[
        "--nodes", "3", "--cores", "2", "--incs", "1000", "--weight", "3",
    ]);
    assert!(out.status.success());
    let lines = lines(&out);
    assert_eq!(
        lines,
        [
            "node 1: reached the tally by a global miss, 2 rep(s), 6000",
            "node 2: reached the tally by a global miss, 2 rep(s), 6000",
            "node 3: reached the tally locally, 2 rep(s), 6000",
            "tally tally: 18000",
        ]
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sesa: node 3 created tally tally as GlobalRef(0x8003"),
        "{err}"
    );
}

#[test]
fn a_native_node_reaches_it_by_a_global_miss_too() {
    let image = sesa_frontend::build_native_image(
        &repo().join("examples/tally/native/Cargo.toml"),
        Some(&repo().join("crates/sesa-native/target")),
        "tally-kernel",
    )
    .expect("building tally's native image");
    let out = tally(&[
        "--nodes",
        "3",
        "--native-nodes",
        "1",
        "--accel",
        "tcg",
        "--kernel",
        image.to_str().unwrap(),
        "--incs",
        "500",
        "--weight",
        "2",
    ]);
    assert!(out.status.success());
    let lines = lines(&out);
    // Node 1 is the native one (one core by default), nodes 2 and 3 hosted (2 cores).
    assert!(
        lines.contains(&"node 1: reached the tally by a global miss, 1 rep(s), 1000".to_owned()),
        "{lines:?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("tally tally: 5000"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[node 1] sesa-native: node 1 joining the frontend"),
        "{err}"
    );
}
