//! Links a native image as a static, freestanding ELF at 1 MiB with `linker.ld` (the
//! x86_64-unknown-linux-gnu target's prebuilt `core` is used; no C runtime): for this
//! crate's own `sesa-kernel`, and, through `links` metadata, for every application
//! image that depends on this crate (its build script reads `DEP_SESA_NATIVE_LINK_ARGS`,
//! the arguments separated by U+001F, and passes each with `cargo:rustc-link-arg-bins`).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let args = [
        "-nostartfiles".to_owned(),
        "-nostdlib".into(),
        "-static".into(),
        "-no-pie".into(),
        "-Wl,--build-id=none".into(),
        "-Wl,-z,max-page-size=0x1000".into(),
        "-Wl,--gc-sections".into(),
        // The boot code is reached from no Rust code: take it from the library anyway.
        "-Wl,-u,pvh_start".into(),
        format!("-Wl,-T,{dir}/linker.ld"),
    ];
    for arg in &args {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:link_args={}", args.join("\u{1f}"));
    println!("cargo:rerun-if-changed=linker.ld");
}
