#!/usr/bin/env bash
# Builds the "fast engine": Unicorn 2.1.4 for x86 only, with store-path.patch, installed as
# VENV/lib/acrn-sim/libunicorn.so.2, where sim/unicorn_engine.py finds it (README.md here).
#
#   third_party/unicorn/build.sh [VENV]      (default .venv; `make engine` calls it)
#
# Without cmake, make, patch or a C compiler, or if a step fails, it says so in one line and exits 0:
# acrn-sim then runs on PyPI's unicorn 2.1.4 (same results, guest stores slower).
# ACRN_SIM_FAST_ENGINE=required turns those cases into a failure (CI).
# Nothing is rebuilt when the installed library's stamp matches the sdist, patch and flags.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${1:-.venv}"
[ -d "$VENV" ] && VENV="$(cd "$VENV" && pwd)"
PY="$VENV/bin/python"
VERSION=2.1.4
# sha256 of unicorn-2.1.4.tar.gz as PyPI serves it (pip checks it too, see below).
SDIST_SHA256=00567a70e323f749b419cd86bee4f9115beab7ebba32194581c090cbb7c59cff
PATCH="$HERE/store-path.patch"
CMAKE_FLAGS=(-DCMAKE_BUILD_TYPE=Release -DUNICORN_ARCH=x86 -DUNICORN_BUILD_TESTS=OFF
             -DUNICORN_INSTALL=OFF -DUNICORN_LEGACY_STATIC_ARCHIVE=OFF -DBUILD_SHARED_LIBS=ON)
DEST="$VENV/lib/acrn-sim"
LIB="$DEST/libunicorn.so.2"
STAMP="$DEST/libunicorn.stamp"
WORK="$DEST/build"
LOG="$DEST/build.log"

fallback() {
    rm -rf "$WORK"
    echo "acrn-sim: note: fast engine not built ($1); using PyPI's unicorn $VERSION" \
         "(same results; code that stores to memory runs slower)" >&2
    if [ "${ACRN_SIM_FAST_ENGINE:-}" = required ]; then
        exit 1
    fi
    exit 0
}

sha256() { "$PY" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

[ -x "$PY" ] || fallback "no virtual environment at $VENV"
want="unicorn $VERSION sdist $SDIST_SHA256; patch $(sha256 "$PATCH"); ${CMAKE_FLAGS[*]}"
if [ -f "$LIB" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0  # already built from the same sources
fi

command -v cmake >/dev/null || fallback "cmake not found"
command -v make >/dev/null || fallback "make not found"
command -v patch >/dev/null || fallback "patch not found"
command -v "${CC:-cc}" >/dev/null || fallback "no C compiler"

mkdir -p "$DEST"
rm -rf "$WORK" "$LIB" "$STAMP"
mkdir -p "$WORK"
: > "$LOG"
echo "acrn-sim: building the fast engine (Unicorn $VERSION for x86 + store-path.patch," \
     "about 1-3 min; log: $LOG)" >&2

sdist="$DEST/unicorn-$VERSION.tar.gz"
if [ ! -f "$sdist" ] || [ "$(sha256 "$sdist")" != "$SDIST_SHA256" ]; then
    # --require-hashes: pip itself refuses a file with another hash.
    echo "unicorn==$VERSION --hash=sha256:$SDIST_SHA256" > "$WORK/req.txt"
    "$PY" -m pip download -q --no-binary :all: --no-deps --require-hashes \
        -r "$WORK/req.txt" -d "$WORK/dl" >>"$LOG" 2>&1 || fallback "download failed, see $LOG"
    mv "$WORK/dl/unicorn-$VERSION.tar.gz" "$sdist"
fi
[ "$(sha256 "$sdist")" = "$SDIST_SHA256" ] || fallback "sdist sha256 mismatch"

tar -xzf "$sdist" -C "$WORK"
src="$WORK/unicorn-$VERSION"
patch -d "$src" -p1 --quiet < "$PATCH" >>"$LOG" 2>&1 || fallback "patch did not apply, see $LOG"
{
    cmake -S "$src/src" -B "$WORK/cmake" "${CMAKE_FLAGS[@]}" &&
    cmake --build "$WORK/cmake" --target unicorn -j "$(nproc 2>/dev/null || echo 2)"
} >>"$LOG" 2>&1 || fallback "build failed, see $LOG"

install -m 0755 "$WORK/cmake/libunicorn.so.2" "$LIB"
# The binding must load it (LIBUNICORN_PATH names a directory) and it must be the patched one.
if ! LIBUNICORN_PATH="$DEST" "$PY" - "$LIB" >>"$LOG" 2>&1 <<'EOF'
import os, sys
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn.unicorn_py3.unicorn import uclib
assert os.path.samefile(uclib._name, sys.argv[1]), f"the binding loaded {uclib._name}"
assert hasattr(uclib, "tb_page_has_code_x86_64"), "not the patched library"
Uc(UC_ARCH_X86, UC_MODE_64)
EOF
then
    rm -f "$LIB"
    fallback "self-check failed, see $LOG"
fi
echo "$want" > "$STAMP"
rm -rf "$WORK"
echo "acrn-sim: fast engine installed: $LIB" >&2
