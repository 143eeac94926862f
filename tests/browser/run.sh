#!/usr/bin/env bash
# Browser end-to-end test of the web chat page.
#
#   tests/browser/run.sh <inferno-binary> <model-path>
#
# Installs what is missing (Debian's chromium, nodejs and npm through apt; playwright-core through
# `npm ci` into tests/browser/node_modules; no browser is ever downloaded by a tool), starts the
# server on a free port of 127.0.0.1, runs chat.test.mjs against it, stops the server. Exits
# non-zero on failure. The screenshot goes to $INFERNO_SCREENSHOT (default target/browser/chat.png).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 <inferno-binary> <model-path>" >&2
    exit 2
fi
BIN=$1
MODEL=$2
HERE=$(cd "$(dirname "$0")" && pwd)
CHROMIUM=${CHROMIUM_PATH:-/usr/bin/chromium}
[ -x "$BIN" ] || { echo "not an executable: $BIN" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "no model file: $MODEL" >&2; exit 2; }

apt_install() {
    local sudo=
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null; then
            sudo="sudo"
        else
            echo "missing $*: install with 'apt-get install $*' as root" >&2
            exit 2
        fi
    fi
    echo "installing $* with apt-get" >&2
    local out
    out=$(mktemp)
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            $sudo apt-get install -y -qq --no-install-recommends "$@"; } >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        exit 1
    fi
    rm -f "$out"
}

[ -x "$CHROMIUM" ] || apt_install chromium
command -v node >/dev/null || apt_install nodejs
command -v npm >/dev/null || apt_install npm
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
if [ "$NODE_MAJOR" -lt 18 ]; then
    echo "node $(node --version) is too old; playwright-core needs 18 or newer" >&2
    exit 2
fi
# npm ci leaves node_modules/.package-lock.json; reinstall when the lock file is newer.
if [ ! -f "$HERE/node_modules/.package-lock.json" ] \
    || [ "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]; then
    (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

LOG=$(mktemp -t inferno-browser-XXXXXX.log)
SERVER=
stop_server() {
    if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM "$SERVER" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
    fi
    SERVER=
}
finish() {
    local status=$?
    stop_server
    if [ "$status" -ne 0 ]; then
        echo "--- server log ($LOG) ---" >&2
        tail -n 40 "$LOG" >&2 || true
    else
        rm -f "$LOG"
    fi
    exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

INFERNO_LOG="info,llama-cpp-2=warn" INFERNO_LOG_FORMAT=text \
    "$BIN" serve --model "$MODEL" --host 127.0.0.1 --port 0 >"$LOG" 2>&1 &
SERVER=$!

# Port 0: the server logs the address it bound before it loads the model.
ADDRESS=
for _ in $(seq 300); do
    ADDRESS=$(grep -o 'address=[0-9.]*:[0-9]*' "$LOG" | head -n 1 | cut -d= -f2 || true)
    [ -n "$ADDRESS" ] && break
    kill -0 "$SERVER" 2>/dev/null || { echo "server exited before listening" >&2; exit 1; }
    sleep 0.2
done
[ -n "$ADDRESS" ] || { echo "server did not report its address within 60 s" >&2; exit 1; }

echo "server at http://$ADDRESS (log $LOG)"
START=$SECONDS
INFERNO_URL="http://$ADDRESS" CHROMIUM_PATH="$CHROMIUM" node "$HERE/chat.test.mjs"
echo "browser test passed in $((SECONDS - START)) s"
