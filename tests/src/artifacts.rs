//! Where tests leave files for people to look at after a run (screenshots, page dumps):
//! `<target dir>/test-artifacts/`, e.g. `target/test-artifacts/serve-page.png`.

use std::path::PathBuf;

/// `<target dir>/test-artifacts/<name>` (the directory created), found from the test
/// executable's own path (`<target dir>/<profile>/deps/<test>-<hash>`), so it follows
/// `CARGO_TARGET_DIR`.
pub fn path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe
        .parent()
        .expect("the test executable has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.pop(); // the profile's directory (debug, release)
    let dir = dir.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir.join(name)
}
