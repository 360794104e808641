#!/usr/bin/env bash
# Prepare the side-by-side benchmark environment.
#
#   benchmarks/setup.sh                      # current python3
#   benchmarks/setup.sh --python python3.14t # another interpreter
#   benchmarks/setup.sh --force              # reinstall even if up to date
#
# * installs wrk through apt-get when it is missing;
# * creates benchmarks/.work/venv-<X.Y[t]> for the chosen interpreter with
#   the peer servers (uvicorn[standard] -- which brings websockets --,
#   wsproto for `uvicorn --ws wsproto`, hypercorn, granian when a wheel
#   exists), trustme for the TLS rows' certificate, and pounce installed
#   editable from the repository root.
#
# Every peer is installed on its own so that one missing wheel (typical on
# free-threaded or brand-new interpreters) only removes that peer.  A stamp
# file makes the second run a no-op unless the interpreter, this script or
# pyproject.toml changed.
set -euo pipefail

PYTHON=python3
FORCE=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --python) PYTHON="$2"; shift 2 ;;
        --python=*) PYTHON="${1#*=}"; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
WORK="$HERE/.work"
mkdir -p "$WORK"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- wrk -------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [[ $(id -u) -ne 0 ]] && SUDO="sudo"
        log "installing wrk with apt-get"
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq wrk >/dev/null
    else
        log "wrk is missing and apt-get is unavailable: install wrk by hand"
        exit 1
    fi
fi

# --- interpreter -----------------------------------------------------------
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    log "interpreter not found: $PYTHON"
    exit 1
fi
PYTAG="$("$PYTHON" -c 'import sys, sysconfig; print(f"{sys.version_info[0]}.{sys.version_info[1]}" + ("t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""))')"
PYEXE="$("$PYTHON" -c 'import sys; print(sys.executable)')"
VENV="$WORK/venv-$PYTAG"
STAMP="$VENV/.bench-stamp"

fingerprint() {
    {
        echo "$PYEXE"
        "$PYTHON" -c 'import sys; print(sys.version)'
        cat "$HERE/setup.sh" "$REPO/pyproject.toml" 2>/dev/null
    } | sha256sum | cut -d' ' -f1
}
FP="$(fingerprint)"

if [[ $FORCE -eq 0 && -f "$STAMP" && "$(cat "$STAMP")" == "$FP" && -x "$VENV/bin/python" ]]; then
    log "up to date: $VENV"
    echo "$VENV"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $PYEXE"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -U pip >/dev/null 2>&1 || log "warning: could not upgrade pip (continuing)"

try_install() {  # try_install <label> <pip args...>
    local label="$1"; shift
    if "${PIP[@]}" install "$@" >"$WORK/pip-$label.log" 2>&1; then
        log "ok: $label"
        return 0
    fi
    log "skipped: $label (see $WORK/pip-$label.log)"
    return 1
}

# uvicorn with httptools + uvloop.  On interpreters without wheels for the
# [standard] extras, fall back to the pieces the benchmark actually needs.
if ! try_install uvicorn-standard --only-binary=:all: "uvicorn[standard]"; then
    try_install uvicorn --only-binary=:all: uvicorn h11 || true
    try_install httptools --only-binary=:all: httptools || true
    try_install uvloop --only-binary=:all: uvloop || true
fi
# `uvicorn --ws websockets` comes with uvicorn[standard]; wsproto is the
# other implementation Uvicorn offers (and the one Hypercorn uses).
try_install websockets --only-binary=:all: websockets || true
try_install wsproto --only-binary=:all: wsproto || true
try_install hypercorn --only-binary=:all: hypercorn || true
# A throwaway CA and 127.0.0.1 certificate for the TLS rows (one per run, made by run.py).
try_install trustme --only-binary=:all: trustme || true
# granian ships a compiled core: only accept a prebuilt wheel.
try_install granian --only-binary=:all: granian || true
# pounce itself, editable, so the benchmark always runs the working tree.
try_install pounce -e "$REPO" || true

"$VENV/bin/python" - <<'EOF' >&2
import importlib.metadata as md
for dist in ("pounce", "uvicorn", "httptools", "uvloop", "h11", "websockets", "wsproto",
             "hypercorn", "granian", "trustme"):
    try:
        print(f"[setup]   {dist:10s} {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"[setup]   {dist:10s} -- not installed")
EOF

echo "$FP" >"$STAMP"
echo "$VENV"
