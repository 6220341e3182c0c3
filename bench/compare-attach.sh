#!/usr/bin/env bash
# Attach and detach of an endpoint with one port mapping: hns next to the peers, in one run on
# one machine, with ratios. The peers run through ../shared/peer-bench (the way their runtimes
# drive them); hns through target/release/hns-bench. Run as root after
#   cargo build --release --workspace
#   apt-get install -y containernetworking-plugins netavark iptables jq gcc
# Env: ITER (cycles per case, default 100), LEVELS (hns endpoints present, default "0 100 1000 5000"),
#      PEER_SCALE=1 to also run the CNI scale script (1/100/500 present, ~3 min).
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=${PEER_BENCH:-$(cd .. && pwd)/shared/peer-bench}
ITER=${ITER:-100}
LEVELS=${LEVELS:-"0 100 1000 5000"}
BIN=target/release/hns-bench
[ -x "$BIN" ] || { echo "build first: cargo build --release --workspace" >&2; exit 2; }
[ -d "$PEER" ] || { echo "peer-bench not found at $PEER (set PEER_BENCH)" >&2; exit 2; }
out=$(mktemp -d /tmp/hns-compare.XXXXXX)
# The peers' scripts use `ip netns add`, which turns /run/netns into a mount point of the root
# namespace; undo that if it was not one before (and nothing is left in it).
netns_was_mounted=$(grep -qs ' /run/netns ' /proc/mounts && echo 1 || echo 0)
cleanup() {
  rm -rf "$out"
  if [ "$netns_was_mounted" = 0 ] && grep -qs ' /run/netns ' /proc/mounts && [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
    umount /run/netns && rmdir /run/netns 2>/dev/null || true
  fi
}
trap cleanup EXIT

p50() { awk -v k="$2" '$1 == k { for (i = 2; i <= NF; i++) if ($i ~ /^p50=/) { sub("p50=", "", $i); print $i; exit } }' "$1"; }

echo "== peers, $ITER cycles, no other endpoint present"
ITER=$ITER "$PEER/03-cp-cni.sh" | tee "$out/cni"
if [ -x "${NETAVARK:-/usr/lib/podman/netavark}" ]; then
  ITER=$ITER IPTABLES=nft "$PEER/05-cp-netavark.sh" | tee "$out/netavark"
fi
[ "${PEER_SCALE:-0}" = 1 ] && "$PEER/04-cp-cni-scale.sh" | tee "$out/cni-scale"

echo "== hns, $ITER cycles per level"
for n in $LEVELS; do
  "$BIN" attach-pm --present "$n" --cycles "$ITER" | tee "$out/hns$n"
done

echo
echo "== p50 in ms (attach = endpoint + 1 mapping into an existing namespace; detach = its removal)"
printf '%-34s %10s %10s\n' system attach detach
printf '%-34s %10s %10s\n' "CNI bridge+portmap (0 present)" "$(p50 "$out/cni" add)" "$(p50 "$out/cni" del)"
[ -f "$out/netavark" ] && printf '%-34s %10s %10s\n' "netavark (0 present)" "$(p50 "$out/netavark" setup)" "$(p50 "$out/netavark" teardown)"
for n in $LEVELS; do
  printf '%-34s %10s %10s\n' "hns ($n present)" "$(p50 "$out/hns$n" attach)" "$(p50 "$out/hns$n" detach)"
done
ha=$(p50 "$out/hns0" attach); hd=$(p50 "$out/hns0" detach)
awk -v ca="$(p50 "$out/cni" add)" -v cd="$(p50 "$out/cni" del)" -v ha="$ha" -v hd="$hd" \
  'BEGIN { printf "ratio CNI/hns at 0 present: attach %.1fx, detach %.1fx\n", ca / ha, cd / hd }'
if [ -f "$out/netavark" ]; then
  awk -v na="$(p50 "$out/netavark" setup)" -v nd="$(p50 "$out/netavark" teardown)" -v ha="$ha" -v hd="$hd" \
    'BEGIN { printf "ratio netavark/hns at 0 present: attach %.1fx, detach %.1fx\n", na / ha, nd / hd }'
fi
