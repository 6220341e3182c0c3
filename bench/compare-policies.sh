#!/usr/bin/env bash
# Per-packet cost of ACLs and load balancers, and the cost of a metrics scrape, in lab
# namespaces only ([P1], [P2], [U1]); each result file holds the command that made it.
#   bench/results/policy-rate.txt  hns-bench acl-rate  (ACL tables with 1 rule vs 10 000 rules
#                                  over 1 000 endpoints vs the same rules as one flat chain)
#   bench/results/lb-rate.txt      hns-bench lb-rate   (1st vs 10 000th service, hns vs
#                                  kube-proxy's iptables shape)
#   bench/results/scrape.txt       hns-bench scrape    (GET /metrics at 0, 1 000, 5 000 endpoints)
# Run as root after `cargo build --release -p hns-bench -p hnsd`.
# Env: ONLY=acl|lb|scrape (one of them), ROUNDS (default 5), SECONDS_EACH (default 3),
#      CLIENTS (client threads, default 4), OUT (results directory, default bench/results).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/hns-bench
[ -x "$BIN" ] && [ -x target/release/hnsd ] || { echo "build first: cargo build --release -p hns-bench -p hnsd" >&2; exit 2; }
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_EACH:-3}
CLIENTS=${CLIENTS:-4}
OUT=${OUT:-bench/results}
ONLY=${ONLY:-}

# run FILE ARGS...: the header (date, machine, load, command), then the bench's output.
run() {
  local file=$1; shift
  {
    echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')  host: $(uname -r), $(nproc) vCPU; loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# command: $BIN $*   (release build, commit $(git rev-parse --short HEAD))"
    "$BIN" "$@"
    echo "# loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)"
  } 2>&1 | tee "$OUT/$file"
}

[ -z "$ONLY" ] || [ "$ONLY" = acl ] && run policy-rate.txt acl-rate --endpoints 1000 --rules 10 --rounds "$ROUNDS" --seconds "$SECS" --clients "$CLIENTS"
[ -z "$ONLY" ] || [ "$ONLY" = lb ] && run lb-rate.txt lb-rate --services 10000 --backends 5 --rounds "$ROUNDS" --seconds "$SECS" --clients "$CLIENTS"
[ -z "$ONLY" ] || [ "$ONLY" = scrape ] && run scrape.txt scrape --levels 0,1000,5000 --scrapes 20
exit 0
