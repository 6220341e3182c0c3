# Shared by scripts/sandbox and scripts/test (sourced, not run): root escalation, finding cargo,
# and installing Debian packages only when they are missing.

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "$0: this step needs root and there is no sudo: run it as root" >&2; return 1
  fi
}

# cargo is usually in the invoking user's ~/.cargo/bin, which `sudo` drops from PATH.
find_cargo() {
  command -v cargo >/dev/null 2>&1 && return 0
  for home in "${HOME:-}" "$(getent passwd "${SUDO_USER:-}" 2>/dev/null | cut -d: -f6)"; do
    if [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ]; then
      export PATH="$home/.cargo/bin:$PATH"
      [ -n "${CARGO_HOME:-}" ] || export CARGO_HOME="$home/.cargo"
      [ -n "${RUSTUP_HOME:-}" ] || export RUSTUP_HOME="$home/.rustup"
      return 0
    fi
  done
  echo "$0: cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
  return 1
}

# Installs the Debian packages that are not installed yet, quietly. Packages must never start
# services in the root namespace (hns's tests and sandbox start their own dnsmasq, etcd and dockerd
# inside lab namespaces): a policy-rc.d that refuses every start is in place while apt runs.
install_missing() {
  missing=
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
  done
  [ -n "$missing" ] || return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$0: missing packages:$missing (install them with your package manager)" >&2
    return 1
  fi
  echo "$0: installing:$missing" >&2
  as_root sh -c '
    set -e
    guard=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      guard=1
    fi
    trap "[ -z \"$guard\" ] || rm -f /usr/sbin/policy-rc.d" EXIT
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  ' install_missing $missing
}

# What the sandbox needs at run time: nft (hns's firewall), ip, nsenter/unshare, ping (the quick
# tour) and dnsmasq (the sandbox LAN's DHCP server).
SANDBOX_PACKAGES="nftables iproute2 util-linux dnsmasq-base iputils-ping"
# What the tests need beyond that: ps, an etcd server and openssl for the overlay cluster
# tests (with TLS), docker and compose with iptables and a static busybox for the Docker plugin
# tests (their own dockerd in a lab namespace), tcpdump for captures on the lab LAN, podman for
# the CNI plugin's podman tests (podman 4.3 with its CNI backend, private dirs in a lab host) and
# containerd (ctr run --cni) for its containerd test.
# chromium: the web view test (tests/web.rs) drives a headless browser over the DevTools protocol.
TEST_PACKAGES="$SANDBOX_PACKAGES procps etcd-server openssl docker.io docker-compose iptables busybox-static tcpdump podman containerd chromium"
