//! The sandbox directory is one root writes a `shell` script into and then runs: a directory
//! someone else created first (or could write into) must be refused, never reused.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use hns_lab::{Lab, LabOptions, SandboxOpts, run_sandbox};

fn dir(name: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/hns-sandbox-dir-{name}-{}", std::process::id()))
}

fn refusal(path: &Path) -> String {
    match Lab::with_options(LabOptions { dir: Some(path.to_path_buf()), hnsd_bin: None }) {
        Ok(_) => panic!("{} must be refused", path.display()),
        Err(err) => format!("{err:#}"),
    }
}

#[test]
fn a_directory_created_by_another_user_is_refused() {
    let path = dir("nobody");
    fs::create_dir(&path).unwrap();
    nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let msg = refusal(&path);
    assert!(msg.contains("owned by uid 65534"), "{msg}");
    // Nothing was written into it, and it was not removed or taken over.
    assert!(fs::read_dir(&path).unwrap().next().is_none());

    // The sandbox itself refuses it the same way, before writing its shell script.
    let err = run_sandbox(SandboxOpts { dir: path.clone(), ..Default::default() }).unwrap_err();
    assert!(format!("{err:#}").contains("owned by uid 65534"), "{err:#}");
    assert!(!path.join("shell").exists());
    fs::remove_dir(&path).unwrap();
}

#[test]
fn a_directory_others_can_write_to_is_refused() {
    let path = dir("shared");
    fs::create_dir(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o1777)).unwrap();
    let msg = refusal(&path);
    assert!(msg.contains("writable by other users (mode 1777)"), "{msg}");
    fs::remove_dir(&path).unwrap();
}

#[test]
fn a_symbolic_link_is_refused() {
    let target = dir("target");
    let link = dir("link");
    fs::create_dir(&target).unwrap();
    symlink(&target, &link).unwrap();
    let msg = refusal(&link);
    assert!(msg.contains("not a directory"), "{msg}");
    fs::remove_file(&link).unwrap();
    fs::remove_dir(&target).unwrap();
}

#[test]
fn a_new_directory_is_private() {
    let path = dir("fresh");
    let lab = Lab::with_options(LabOptions { dir: Some(path.clone()), hnsd_bin: None }).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "a fresh lab directory must be private");
    drop(lab);
    assert!(!path.exists());
}
