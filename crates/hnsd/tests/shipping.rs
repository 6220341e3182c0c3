//! What the daemon ships: the test lab (namespace holders, the etcd and dockerd harnesses, the
//! sandbox) is a dev-dependency only; `hnsd --sandbox` runs the separate `hns-sandbox` binary.

#[test]
fn hnsd_does_not_link_the_test_lab() {
    let manifest: toml::Table = toml::from_str(include_str!("../Cargo.toml")).unwrap();
    let deps = manifest["dependencies"].as_table().unwrap();
    assert!(!deps.contains_key("hns-lab"), "hns-lab must not be a normal dependency of hnsd");
    assert!(manifest["dev-dependencies"].as_table().unwrap().contains_key("hns-lab"));
}

#[test]
fn hnsd_sandbox_without_the_sandbox_binary_says_what_to_build() {
    // A copy of hnsd alone in a directory: --sandbox must name the missing binary, not fail obscurely.
    let dir = std::env::temp_dir().join(format!("hns-shipping-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hnsd = dir.join("hnsd");
    std::fs::copy(env!("CARGO_BIN_EXE_hnsd"), &hnsd).unwrap();
    let out = std::process::Command::new(&hnsd).args(["--sandbox", "--sandbox-dir", "/run/hns-shipping-never"]).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("hns-sandbox") && err.contains("cargo build --release --bin hns-sandbox"), "{err}");
    assert!(!std::path::Path::new("/run/hns-shipping-never").exists());
}
