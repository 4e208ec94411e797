#!/usr/bin/env bash
# Long runs kept out of the test suite (about 5 minutes optimised on 2 cores): a
# fault-free day (24 h of event time) of the synthetic workload through the default
# pipeline gives at most one incident. Prints the incidents and alert events it saw.
#
#   bash scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --release --test alert_faults -- --ignored --nocapture \
  a_fault_free_day_gives_at_most_one_incident
