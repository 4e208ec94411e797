#!/usr/bin/env bash
# Detection and root-cause quality on the Nezha fault-injection streams: replays each
# stream through the default pipeline and scores its alerts with the dataset's score.py
# (recall, precision, F1, median delay, AS@1/3/5 of the ranked suspects).
#
#   bash scripts/nezha.sh [DATASET_DIR]     (default ../shared/datasets/nezha)
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/datasets/nezha}"
python="${SPANLINE_PYTHON:-python3}"
cargo build --release --locked --quiet
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for faults in "$data"/*.faults.json; do
  name="$(basename "$faults" .faults.json)"
  ./target/release/spanline replay pipelines/trace-analytics.yaml \
    --input "$data/$name.jsonl.gz" --output-dir "$out/$name" > /dev/null
  printf '%-28s ' "$name"
  "$python" "$data/score.py" "$faults" "$out/$name/alerts.jsonl"
done
