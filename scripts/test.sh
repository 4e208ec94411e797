#!/usr/bin/env bash
# The test suite, as CI runs it. Run `bash .ci/run` once to install what the integration
# tests use (Debian packages, the tansu broker, the Python virtualenv); without those
# they are skipped with a printed reason, or fail when SPANLINE_REQUIRE_EXTERNAL=1.
# Extra arguments go to `cargo test`, e.g. `bash scripts/test.sh --test foreign_clients`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PATH="$HOME/.cargo/bin:$PATH"
if [[ -z "${SPANLINE_PYTHON:-}" && -x .venv/bin/python ]]; then
    export SPANLINE_PYTHON="$PWD/.venv/bin/python"
fi

status=0
cargo test --locked --no-fail-fast "$@" || status=$?
if [[ $# -eq 0 ]]; then
    # an hour of simulated workload through every stage: run optimised
    cargo test --locked --release --test alert_faults || status=$?
fi
exit "$status"
