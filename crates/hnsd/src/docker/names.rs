//! Which Docker container a sandbox belongs to, so its compartment carries the container's name
//! (what `hnsctl port ls`, `hnsctl ps` and hns's DNS show). Docker never tells a network driver:
//! hns finds a process in the sandbox's namespace, reads the container ID from its cgroup, and
//! asks dockerd's API for the name (best effort: without the API the short container ID, as
//! `docker ps` shows it, is used).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Where dockerd's API is looked for.
const DOCKER_SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock"];

/// The 64-hex container ID in a `/proc/PID/cgroup` text (cgroupfs: `.../<id>`, systemd:
/// `.../docker-<id>.scope`).
pub fn container_id_in_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let path = line.rsplit(':').next()?;
        let last = path.rsplit('/').next()?;
        let id = last.strip_prefix("docker-").unwrap_or(last).trim_end_matches(".scope");
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

/// The container whose process lives in the network namespace at `netns`.
pub fn container_of(netns: &Path) -> Option<String> {
    let want = std::fs::metadata(netns).ok().map(|m| (m.dev(), m.ino()))?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let same = std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| (m.dev(), m.ino()) == want);
        if same && let Some(id) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok().as_deref().and_then(container_id_in_cgroup) {
            return Some(id);
        }
    }
    None
}

/// The name in a `GET /containers/json` answer (`"Names": ["/web"]`).
pub fn name_in_listing(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let name = v.as_array()?.first()?.get("Names")?.as_array()?.first()?.as_str()?;
    Some(name.trim_start_matches('/').to_owned())
}

/// Asks dockerd for the container's name. Listing (not inspecting) reads Docker's snapshot of
/// its containers, so it answers even while the container is still starting.
fn name_from_api(id: &str) -> Option<String> {
    let path = format!("/containers/json?all=1&filters=%7B%22id%22%3A%5B%22{id}%22%5D%7D");
    DOCKER_SOCKETS.iter().find_map(|s| match hns_client::http_get(Path::new(s), &path) {
        Ok(r) if r.status == 200 => name_in_listing(&r.body),
        _ => None,
    })
}

/// The container's name (or short ID) for the sandbox at `netns`; blocking, call off the runtime.
pub fn container_label(netns: &Path) -> Option<String> {
    let id = container_of(netns)?;
    Some(name_from_api(&id).unwrap_or_else(|| id[..12].to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f1d0c2e9a3b4c5d8e7f0123456789ab6f1d0c2e9a3b4c5d8e7f0123456789ab";

    #[test]
    fn container_ids_from_cgroups() {
        assert_eq!(container_id_in_cgroup(&format!("4:memory:/hns-lab-docker-1-0/{ID}\n0::/\n")).as_deref(), Some(ID));
        assert_eq!(container_id_in_cgroup(&format!("0::/system.slice/docker-{ID}.scope\n")).as_deref(), Some(ID));
        assert_eq!(container_id_in_cgroup("0::/user.slice\n"), None);
    }

    #[test]
    fn names_from_listings() {
        assert_eq!(name_in_listing(r#"[{"Id":"x","Names":["/web"]}]"#).as_deref(), Some("web"));
        assert_eq!(name_in_listing("[]"), None);
    }
}
