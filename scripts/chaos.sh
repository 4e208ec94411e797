#!/usr/bin/env bash
# The long chaos run: both delivery modes, each with at least 10 SIGKILLs of the pipeline
# and 3 SIGKILL-and-restarts of the broker while 5,000 traces stream through, checked
# with a read_committed consumer (tests/chaos.rs). Needs what `bash .ci/run` installs
# (tansu-eos in .venv/tools). Sizes can be overridden:
#   SPANLINE_CHAOS_KILLS=20 SPANLINE_CHAOS_BROKER_RESTARTS=5 bash scripts/chaos.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.venv/tools:$HOME/.cargo/bin:$PATH"
export SPANLINE_REQUIRE_EXTERNAL=1
export SPANLINE_CHAOS_KILLS=${SPANLINE_CHAOS_KILLS:-10}
export SPANLINE_CHAOS_BROKER_RESTARTS=${SPANLINE_CHAOS_BROKER_RESTARTS:-3}
export SPANLINE_CHAOS_TRACES=${SPANLINE_CHAOS_TRACES:-5000}
exec cargo test --locked --release --test chaos -- --nocapture --test-threads 1 "$@"
