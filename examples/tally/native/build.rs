//! Links the image with the kernel library's script and flags.

fn main() {
    let args = std::env::var("DEP_SESA_NATIVE_LINK_ARGS")
        .expect("sesa-native's build script gives its link arguments");
    for arg in args.split('\u{1f}') {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
