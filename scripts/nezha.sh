#!/usr/bin/env bash
# Detection and root-cause quality on the Nezha fault-injection streams: replays each
# stream through the default pipeline and scores its alerts with the dataset's score.py
# (recall, precision, F1, median delay, AS@1/3/5 of the ranked suspects) and what a
# detector alerting once on every injection would score (scripts/nezha_segments.py: the
# streams hold injections whose faults the lists leave out) and how the alerts score
# when a fault's window opens 60 or 120 s before its listed time (scripts/nezha_lead.py:
# TrainTicket's traces change before it). Then the cost
# of the stages after assembly: each stream's replay rate with every stage against
# assembly only (pipelines/traces-only.yaml), one run each, as a ratio.
#
#   bash scripts/nezha.sh [DATASET_DIR]     (default ../shared/datasets/nezha)
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/datasets/nezha}"
python="${SPANLINE_PYTHON:-python3}"
cargo build --release --locked --quiet
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# prints "<spans> <seconds>" of one replay; written-back first, so no replay pays for the
# dirty pages of the one before (the outputs are hundreds of megabytes)
replay() {
  local started ended summary
  sync
  started=$(date +%s.%N)
  summary=$(./target/release/spanline replay "$1" --input "$2" --output-dir "$3")
  ended=$(date +%s.%N)
  awk -v s="$(sed -E 's/.*: ([0-9]+) spans.*/\1/' <<<"$summary")" -v a="$started" -v b="$ended" \
    'BEGIN { printf "%d %.3f\n", s, b - a }'
}

declare -A every
for faults in "$data"/*.faults.json; do
  name="$(basename "$faults" .faults.json)"
  every[$name]=$(replay pipelines/trace-analytics.yaml "$data/$name.jsonl.gz" "$out/$name")
  printf '%-28s ' "$name"
  "$python" "$data/score.py" "$faults" "$out/$name/alerts.jsonl"
  printf '%-28s ' ''
  "$python" scripts/nezha_segments.py "$data/$name.jsonl.gz" "$faults"
  "$python" scripts/nezha_lead.py "$faults" "$out/$name/alerts.jsonl" 60 120 | sed 's/^/                             /'
done
echo
for faults in "$data"/*.faults.json; do
  name="$(basename "$faults" .faults.json)"
  read -r spans full <<<"${every[$name]}"
  rm -rf "${out:?}/$name"
  read -r _ assemble <<<"$(replay pipelines/traces-only.yaml "$data/$name.jsonl.gz" "$out/$name-traces")"
  rm -rf "${out:?}/$name-traces"
  awk -v n="$name" -v s="$spans" -v f="$full" -v a="$assemble" 'BEGIN {
    printf "%-28s replay: every stage %.0f spans/s, assembly only %.0f spans/s, ratio %.2f\n",
      n, s / f, s / a, a / f }'
done
