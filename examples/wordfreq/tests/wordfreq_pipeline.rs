//! `wordfreq` on 3 hosted nodes against the coreutils pipeline it promises to equal, on
//! the repository's own documents and on a file made to have awkward bytes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn wordfreq(args: &[&str], dir: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_wordfreq"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running wordfreq");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The pipeline of the issue: `cat FILE... | tr -s ' \t\r\n' '\n' | grep -v '^$' |
/// LC_ALL=C sort | uniq -c | LC_ALL=C sort -k1,1nr -k2,2 | awk '{print $1" "$2}'`, in
/// the C locale throughout and with `grep -a` (in a UTF-8 locale grep calls bytes that
/// are not UTF-8 "binary" and prints no lines).
fn coreutils(files: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            r#"cat "$@" | tr -s ' \t\r\n' '\n' | grep -av '^$' | sort | uniq -c \
               | sort -k1,1nr -k2,2 | awk '{print $1" "$2}'"#,
        )
        .env("LC_ALL", "C")
        .arg("pipeline")
        .args(files)
        .current_dir(dir)
        .output()
        .expect("running bash");
    assert!(out.status.success(), "the pipeline failed");
    out.stdout
}

/// wordfreq's output is the pipeline's, byte for byte (compared whole: a diff of
/// thousands of lines would drown the message, so it gives the sizes).
fn assert_same_output(out: &Output, expected: &[u8]) {
    assert!(
        out.stdout == expected,
        "wordfreq's output differs from the pipeline's ({} vs {} bytes)",
        out.stdout.len(),
        expected.len()
    );
}

#[test]
fn three_nodes_match_the_coreutils_pipeline_on_the_docs() {
    let dir = repo();
    let files = [
        "README.md",
        "ARCHITECTURE.md",
        "docs/benchmarks.md",
        "Cargo.toml",
        "crates/sesa-frontend/src/lib.rs",
    ];
    let mut args = vec!["--nodes", "3", "--cores", "2", "--grant", "."];
    args.extend(files);
    let out = wordfreq(&args, &dir);
    assert!(out.status.success(), "wordfreq failed");
    let expected = coreutils(&files, &dir);
    assert!(expected.len() > 10_000, "the documents have words");
    assert_same_output(&out, &expected);
}

#[test]
fn bytes_that_are_not_utf8_and_words_split_across_cores() {
    let dir = std::env::temp_dir().join(format!("wordfreq-bytes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Long words, so each core's slice ends inside one; bytes that are not UTF-8; CR LF;
    // runs of separators; no final newline.
    let mut text = Vec::new();
    for i in 0..2_000u32 {
        text.extend_from_slice(format!("w{} ", i % 37).as_bytes());
        text.extend_from_slice(b"\xff\xfeword\t\t");
        text.extend_from_slice(&[b'x'; 300]);
        text.extend_from_slice(if i % 2 == 0 { b"\r\n" } else { b"  " });
    }
    text.extend_from_slice(b"last");
    std::fs::write(dir.join("a.txt"), &text).unwrap();
    std::fs::write(dir.join("b.txt"), b"b b\nb last\n").unwrap();
    let out = wordfreq(
        &[
            "--nodes", "3", "--cores", "2", "--grant", ".", "a.txt", "b.txt",
        ],
        &dir,
    );
    assert!(out.status.success());
    assert_eq!(out.stdout, coreutils(&["a.txt", "b.txt"], &dir));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn files_missing_or_outside_the_grants_fail_loudly() {
    let dir = std::env::temp_dir().join(format!("wordfreq-grants-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("granted")).unwrap();
    std::fs::write(dir.join("granted/ok.txt"), b"one two two\n").unwrap();
    std::fs::write(dir.join("secret.txt"), b"hidden\n").unwrap();
    let out = wordfreq(
        &[
            "--nodes",
            "2",
            "--grant",
            "granted",
            "granted/ok.txt",
            "secret.txt",
            "granted/missing.txt",
        ],
        &dir,
    );
    assert!(!out.status.success(), "unreadable files fail the run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 two\n1 one\n",
        "what could be read is counted"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secret.txt") && err.contains("outside the granted directories"));
    assert!(err.contains("missing.txt"));
    assert!(err.contains("2 file(s) could not be read"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// wordfreq's native image (`native/`), built into the kernel's target directory (their
/// dependencies are the same): its path.
fn native_image() -> PathBuf {
    sesa_frontend::build_native_image(
        &repo().join("examples/wordfreq/native/Cargo.toml"),
        Some(&repo().join("crates/sesa-native/target")),
        "wordfreq-kernel",
    )
    .expect("building wordfreq's native image")
}

#[test]
fn a_native_node_mixed_with_hosted_ones_gives_the_same_answer() {
    let image = native_image();
    let dir = repo();
    let files = ["README.md", "ARCHITECTURE.md", "docs/benchmarks.md"];
    let mut args = vec![
        "--nodes",
        "3",
        "--native-nodes",
        "1",
        "--accel",
        "tcg",
        "--kernel",
        image.to_str().unwrap(),
        "--grant",
        ".",
    ];
    args.extend(files);
    let out = wordfreq(&args, &dir);
    assert!(out.status.success(), "wordfreq failed");
    let err = String::from_utf8_lossy(&out.stderr);
    // Node 1 booted the image and counted its share of the files on it.
    assert!(
        err.contains("[node 1] sesa-native: node 1 joining the frontend"),
        "{err}"
    );
    let expected = coreutils(&files, &dir);
    assert_same_output(&out, &expected);
}

#[test]
fn a_native_node_without_the_application_says_so() {
    // The `sesa-kernel` image is built with the built-in applications only: a native
    // node of it asked to run wordfreq refuses by name.
    let kernel = sesa_frontend::build_native_image(
        &repo().join("crates/sesa-native/Cargo.toml"),
        None,
        "sesa-kernel",
    )
    .expect("building the kernel");
    let out = wordfreq(
        &[
            "--nodes",
            "2",
            "--native-nodes",
            "1",
            "--accel",
            "tcg",
            "--kernel",
            kernel.to_str().unwrap(),
            "--grant",
            ".",
            "README.md",
        ],
        &repo(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not run application \"wordfreq\" (it runs: counter, cat, kv)"),
        "{err}"
    );
}
