#!/usr/bin/env bash
# Attach and detach of an endpoint with one port mapping: hns next to the peers and next to the
# kernel floor (the same kernel operations done by a minimal program at the same level,
# bench/src/floor.rs), in one run on one machine, with ratios; hnsd's RSS at each level; and
# the throughput of 50 concurrent clients (hns and the floor). The peers run through ../shared/peer-bench (the way their runtimes
# drive them); hns through target/release/hns-bench. Run as root after
#   cargo build --release --workspace
#   apt-get install -y containernetworking-plugins netavark iptables jq gcc
# Env: ITER (cycles per case, default 100), LEVELS (hns endpoints present, default "0 1000 5000"),
#      TPUT_SECS (seconds of each throughput run, default 5; 0 skips it), CLIENTS (default 50),
#      PEER_SCALE=1 to also run the CNI scale script (1/100/500 present, ~3 min), PEERS=0 to
#      skip the peers.
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=${PEER_BENCH:-$(cd .. && pwd)/shared/peer-bench}
ITER=${ITER:-100}
LEVELS=${LEVELS:-"0 1000 5000"}
TPUT_SECS=${TPUT_SECS:-5}
CLIENTS=${CLIENTS:-50}
PEERS=${PEERS:-1}
BIN=target/release/hns-bench
[ -x "$BIN" ] || { echo "build first: cargo build --release --workspace" >&2; exit 2; }
[ "$PEERS" = 0 ] || [ -d "$PEER" ] || { echo "peer-bench not found at $PEER (set PEER_BENCH, or PEERS=0)" >&2; exit 2; }
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

# field FILE KEY NAME: the value of NAME=... on the line starting with KEY (first match).
field() { awk -v k="$2" -v f="$3=" '$1 == k { for (i = 2; i <= NF; i++) if (index($i, f) == 1) { sub(f, "", $i); sub("/s$", "", $i); print $i; exit } }' "$1"; }
p50() { field "$1" "$2" p50; }

echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')  host: $(uname -r), $(nproc) vCPU; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# command: ITER=$ITER LEVELS=\"$LEVELS\" TPUT_SECS=$TPUT_SECS CLIENTS=$CLIENTS PEERS=$PEERS bench/compare-attach.sh"
if [ "$PEERS" != 0 ]; then
  echo "== peers, $ITER cycles, no other endpoint present"
  ITER=$ITER "$PEER/03-cp-cni.sh" | tee "$out/cni"
  if [ -x "${NETAVARK:-/usr/lib/podman/netavark}" ]; then
    ITER=$ITER IPTABLES=nft "$PEER/05-cp-netavark.sh" | tee "$out/netavark"
  fi
  [ "${PEER_SCALE:-0}" = 1 ] && "$PEER/04-cp-cni-scale.sh" | tee "$out/cni-scale"
fi

echo "== hns and the kernel floor, $ITER cycles per level, throughput $TPUT_SECS s with $CLIENTS clients"
for n in $LEVELS; do
  "$BIN" attach-pm --present "$n" --cycles "$ITER" --throughput-secs "$TPUT_SECS" --clients "$CLIENTS" | tee "$out/hns$n"
done

echo
echo "== hns vs the kernel floor (ms; floor = the same kernel operations by a minimal program, same level, interleaved)"
printf '%-8s %-7s %21s %21s %12s\n' present op "hns p50/p90/p99" "floor p50/p90/p99" "ratio p50"
for n in $LEVELS; do
  f=$out/hns$n
  for op in attach detach; do
    printf '%-8s %-7s %21s %21s %12s\n' "$n" "$op" \
      "$(field "$f" "$op" p50)/$(field "$f" "$op" p90)/$(field "$f" "$op" p99)" \
      "$(field "$f" "floor-$op" p50)/$(field "$f" "floor-$op" p90)/$(field "$f" "floor-$op" p99)" \
      "$(awk -v a="$(p50 "$f" "$op")" -v b="$(p50 "$f" "floor-$op")" 'BEGIN { printf "%.2f", a / b }')"
  done
done
echo
echo "== hnsd RSS (MiB; peak pre: VmHWM before the clients, peak: after them) and throughput ($CLIENTS clients, attach+detach cycles/s)"
printf '%-8s %10s %10s %10s %10s %10s %10s %10s\n' present "RSS filled" "peak pre" "peak" "RSS end" hns/s floor/s hns/floor
for n in $LEVELS; do
  f=$out/hns$n
  printf '%-8s %10s %10s %10s %10s %10s %10s %10s\n' "$n" "$(field "$f" rss filled)" "$(field "$f" rss peak-so-far)" "$(field "$f" rss peak || true)" "$(field "$f" rss after-throughput || true)" \
    "$(field "$f" tput hns)" "$(field "$f" tput floor)" "$(field "$f" tput hns/floor)"
done
if [ "$PEERS" != 0 ]; then
  echo
  echo "== peers at 0 present, p50 in ms"
  printf '%-34s %10s %10s\n' system attach detach
  printf '%-34s %10s %10s\n' "CNI bridge+portmap (0 present)" "$(p50 "$out/cni" add)" "$(p50 "$out/cni" del)"
  [ -f "$out/netavark" ] && printf '%-34s %10s %10s\n' "netavark (0 present)" "$(p50 "$out/netavark" setup)" "$(p50 "$out/netavark" teardown)"
  set -- $LEVELS
  ha=$(p50 "$out/hns$1" attach); hd=$(p50 "$out/hns$1" detach)
  awk -v ca="$(p50 "$out/cni" add)" -v cd="$(p50 "$out/cni" del)" -v ha="$ha" -v hd="$hd" \
    'BEGIN { printf "ratio CNI/hns at the first level: attach %.1fx, detach %.1fx\n", ca / ha, cd / hd }'
  if [ -f "$out/netavark" ]; then
    awk -v na="$(p50 "$out/netavark" setup)" -v nd="$(p50 "$out/netavark" teardown)" -v ha="$ha" -v hd="$hd" \
      'BEGIN { printf "ratio netavark/hns at the first level: attach %.1fx, detach %.1fx\n", na / ha, nd / hd }'
  fi
fi
