//! The Dockerfile's toolchain against Cargo.toml and Cargo.lock.

use std::process::Command;

use serde_json::Value;

use super::support::repo_root;
/// The Docker image builds with the Rust of its `FROM rust:X.Y` line: Cargo.toml declares
/// that version, and no locked dependency needs a newer one.
#[test]
fn locked_dependencies_build_with_the_dockerfile_toolchain() {
    let root = repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let image = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .expect("the Dockerfile builds FROM rust:X.Y");
    let docker_rust: String = image.split(['-', ' ']).next().unwrap().to_owned();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let declared = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("Cargo.toml declares rust-version")
        .trim_matches('"');
    assert_eq!(
        declared, docker_rust,
        "Cargo.toml rust-version and the Dockerfile's image"
    );

    // Only the packages that build on the image's platform (linux): the crates of other
    // platforms (e.g. anstyle-wincon) are never downloaded by a build here, and the test
    // runs offline after `cargo test` fetched what the build needs.
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .args(["--filter-platform", "x86_64-unknown-linux-gnu"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = |v: &str| -> Vec<u64> {
        let mut parts: Vec<u64> = v.split('.').map(|p| p.parse().unwrap()).collect();
        parts.resize(3, 0);
        parts
    };
    let newer: Vec<String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let needs = p["rust_version"].as_str()?;
            (version(needs) > version(declared))
                .then(|| format!("{} {} needs Rust {needs}", p["name"], p["version"]))
        })
        .collect();
    assert!(
        newer.is_empty(),
        "locked dependencies need a newer Rust than {declared}: {newer:?} (cargo update picks compatible ones with resolver 3)"
    );
}
