#!/usr/bin/env bash
# Type-checks and lints the workspace, tests included, for 64-bit ARM Linux (the code paths a
# Graviton server or, nearly, an Apple Silicon Mac compiles: the AVX2 kernels are x86-64 only,
# so everything around them must build without them). No ARM machine is needed: rustup adds
# the target's standard library, and zig from PyPI (ziglang, about 50 MB, into
# .cross-toolchain/) compiles the few C and assembly files of dependencies (psm). Nothing runs.
#
# Usage: tools/cross-check.sh [TARGET]   (default aarch64-unknown-linux-gnu; CARGO_TARGET_DIR
# defaults to target-cross/)
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${1:-aarch64-unknown-linux-gnu}
TOOLS=$PWD/.cross-toolchain
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cross}

rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
if [ ! -x "$TOOLS/site/ziglang/zig" ]; then
    echo "installing zig (PyPI ziglang) into $TOOLS..." >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        --target "$TOOLS/site" ziglang
fi
# The cc crate passes clang's --target=...; zig takes its own -target instead.
zig_target=${TARGET/-unknown/}
cat >"$TOOLS/cc" <<WRAPPER
#!/usr/bin/env bash
args=()
for a in "\$@"; do case "\$a" in --target=*) ;; *) args+=("\$a") ;; esac; done
exec "$TOOLS/site/ziglang/zig" cc -target $zig_target "\${args[@]}"
WRAPPER
printf '#!/bin/sh\nexec "%s" ar "$@"\n' "$TOOLS/site/ziglang/zig" >"$TOOLS/ar"
chmod +x "$TOOLS/cc" "$TOOLS/ar"
triple=${TARGET//-/_}
export "CC_$triple=$TOOLS/cc" "AR_$triple=$TOOLS/ar"

cargo clippy --workspace --all-targets --target "$TARGET" -- -D warnings
echo "$TARGET: the workspace and its tests type-check, clippy clean"
