//! Locates the workspace's binaries. Cargo builds every workspace binary before running the
//! tests of `--workspace`, next to the `deps/` directory that holds the test executables.

use std::path::PathBuf;

/// The path of the workspace binary `name` (e.g. `ebb-node`).
pub fn path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe
        .parent()
        .expect("the test executable has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}
