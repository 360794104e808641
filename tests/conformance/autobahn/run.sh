#!/usr/bin/env bash
# Run Autobahn|Testsuite's fuzzing client against a WebSocket echo server and summarise it.
#
# Not part of pytest: it needs Python 2.7 (autobahntestsuite never moved to Python 3) and takes
# minutes. See README.md beside this file for what it does, its settings and how to read it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"

server="${AUTOBAHN_SERVER:-pounce}"           # pounce | uvicorn (the reference, for comparison)
port="${AUTOBAHN_PORT:-9001}"
work="${AUTOBAHN_WORK:-$here/.work}"          # virtualenvs and reports (git-ignored)
python3="${PYTHON3:-python3}"                 # runs the server and makes the 2.7 virtualenv
cases="${AUTOBAHN_CASES:-}"                   # e.g. '1.*,2.*' or '*' (all, incl. 9/12/13)

if [ -z "${PYTHON27:-}" ]; then
    if command -v pyenv >/dev/null 2>&1 && [ -x "$(pyenv root)/versions/2.7.18/bin/python" ]; then
        PYTHON27="$(pyenv root)/versions/2.7.18/bin/python"
    elif [ -x "$HOME/.pyenv/versions/2.7.18/bin/python" ]; then
        PYTHON27="$HOME/.pyenv/versions/2.7.18/bin/python"
    else
        echo "run.sh: no Python 2.7 found; install it (pyenv install 2.7.18) or set PYTHON27" >&2
        exit 2
    fi
fi

mkdir -p "$work"

# 1. wstest in a Python 2.7 virtualenv. The last virtualenv release that still creates 2.7
#    environments is 20.15.1, so it is installed under Python 3 first, in a venv of its own.
if [ ! -x "$work/wstest/bin/wstest" ]; then
    echo "== installing autobahntestsuite into $work/wstest (once)"
    "$python3" -m venv "$work/tools"
    "$work/tools/bin/pip" install --quiet "virtualenv==20.15.1"
    "$work/tools/bin/virtualenv" --quiet -p "$PYTHON27" "$work/wstest"
    "$work/wstest/bin/pip" install --quiet autobahntestsuite
fi

# 2. The echo server.
case "$server" in
    pounce)
        server_cmd=("$python3" -m pounce tests.conformance.autobahn.echo_app:app
                    --host 127.0.0.1 --port "$port" --log-level warning --no-access-log)
        ;;
    uvicorn)
        server_cmd=("$python3" -m uvicorn tests.conformance.autobahn.echo_app:app
                    --host 127.0.0.1 --port "$port" --log-level warning --no-access-log
                    --ws wsproto)
        ;;
    *)
        echo "run.sh: AUTOBAHN_SERVER must be pounce or uvicorn, not '$server'" >&2
        exit 2
        ;;
esac

echo "== starting $server on 127.0.0.1:$port"
(cd "$repo" && PYTHONPATH="$repo/src:$repo${PYTHONPATH:+:$PYTHONPATH}" exec "${server_cmd[@]}") &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
    if "$python3" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" \
        2>/dev/null; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "run.sh: the $server server exited during start-up" >&2
        exit 1
    fi
    sleep 0.1
done

# 3. The fuzzing client, with the spec's agent, URL and (optionally) case list adjusted.
spec="$work/fuzzingclient.json"
"$python3" - "$here/fuzzingclient.json" "$spec" "$server" "$port" "$cases" <<'PY'
import json, sys
source, target, agent, port, cases = sys.argv[1:]
spec = json.load(open(source))
spec["servers"] = [{"agent": agent, "url": "ws://127.0.0.1:%s" % port}]
spec["outdir"] = "./reports/servers"
if cases:
    spec["cases"] = [case.strip() for case in cases.split(",") if case.strip()]
    spec["exclude-cases"] = []
json.dump(spec, open(target, "w"), indent=2)
PY

rm -rf "$work/reports/servers"
echo "== wstest -m fuzzingclient ($(date -u +%H:%M:%S))"
(cd "$work" && "$work/wstest/bin/wstest" -m fuzzingclient -s "$spec")
echo "== done ($(date -u +%H:%M:%S)); HTML report: $work/reports/servers/index.html"

# 4. The summary (exit status 1 when any case FAILED).
"$python3" "$here/summarise.py" "$work/reports/servers"
