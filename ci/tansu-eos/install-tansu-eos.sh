#!/usr/bin/env bash
# Build tansu 0.6.0 (crates.io) with the spanline EOS patches and install it as
# $TANSU_EOS_PREFIX/bin/tansu. Idempotent: does nothing when the installed binary was built
# from the same patches and features. Needs: cargo, gcc, patch (Debian: apt-get install -y patch).
#   TANSU_EOS_FEATURES  storage engines to compile in (default: libsql; postgres,libsql for both)
#   TANSU_EOS_PREFIX    install prefix (default: /opt/tansu-eos)
#   CARGO_BUILD_JOBS    as usual (1 on a shared 2-core machine)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FEATURES=${TANSU_EOS_FEATURES:-libsql}
PREFIX=${TANSU_EOS_PREFIX:-/opt/tansu-eos}
STAMP="$(cat "$HERE"/tansu-storage-0.6.0-eos.patch "$HERE"/tansu-broker-0.6.0-eos.patch | sha256sum | cut -c1-16) $FEATURES"
if [[ -x "$PREFIX/bin/tansu" && -f "$PREFIX/stamp" && "$(cat "$PREFIX/stamp")" == "$STAMP" ]]; then
    echo "tansu-eos already installed: $PREFIX/bin/tansu ($STAMP)"
    exit 0
fi
command -v patch >/dev/null || { apt-get update -qq && apt-get install -y -qq patch; }
WORK=${TANSU_EOS_WORK:-/var/tmp/tansu-eos-build}
mkdir -p "$WORK"
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}

# 1. the tansu 0.6.0 crate itself (it ships its Cargo.lock), through cargo's registry cache
mkdir -p "$WORK/fetch/src"
cat >"$WORK/fetch/Cargo.toml" <<'EOF'
[package]
name = "tansu-eos-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
tansu = { version = "=0.6.0", default-features = false }
EOF
: >"$WORK/fetch/src/lib.rs"
(cd "$WORK/fetch" && cargo fetch --quiet)
registry_src() { ls -d "$CARGO_HOME"/registry/src/*/"$1" | head -1; }

# 2. a private copy of the tansu crate; fetch exactly the versions its Cargo.lock names
rm -rf "$WORK/tansu" "$WORK/tansu-storage" "$WORK/tansu-broker"
cp -r "$(registry_src tansu-0.6.0)" "$WORK/tansu"
(cd "$WORK/tansu" && cargo fetch --locked --quiet)

# 3. patched copies of tansu-storage and tansu-broker 0.6.0
cp -r "$(registry_src tansu-storage-0.6.0)" "$WORK/tansu-storage"
cp -r "$(registry_src tansu-broker-0.6.0)" "$WORK/tansu-broker"
patch -s -p1 -d "$WORK/tansu-storage" <"$HERE/tansu-storage-0.6.0-eos.patch"
patch -s -p1 -d "$WORK/tansu-broker" <"$HERE/tansu-broker-0.6.0-eos.patch"
cat >>"$WORK/tansu/Cargo.toml" <<'EOF'

[patch.crates-io]
tansu-storage = { path = "../tansu-storage" }
tansu-broker = { path = "../tansu-broker" }
EOF

# 4. build with the crate's own lock (only the two patched entries change) and install
# (the target dir sits outside the crate copy, so a rebuild after a patch change is incremental)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$WORK/target}
(cd "$WORK/tansu" && cargo build --release --no-default-features --features "$FEATURES" --bin tansu)
mkdir -p "$PREFIX/bin"
install -m 0755 "$CARGO_TARGET_DIR/release/tansu" "$PREFIX/bin/tansu"
echo "$STAMP" >"$PREFIX/stamp"
echo "installed $PREFIX/bin/tansu ($("$PREFIX/bin/tansu" --version), $STAMP)"
