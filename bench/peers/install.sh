#!/usr/bin/env bash
# Install the peer servers' pinned dependencies, quietly and only if missing:
# ws (bench/peers/node-ws/package.json) into bench/peers/node-ws/node_modules,
# websockets (bench/peers/python-websockets/requirements.txt) into a venv at
# bench/peers/python-websockets/.venv. Used by the bench scripts and .ci/run.
# The load generators bench/peers-harness.sh compares with, on request only:
# artillery (bench/peers/artillery/package.json, npm, browsers not downloaded)
# and tsung (Debian's package).
# Usage: bench/peers/install.sh [node] [python] [artillery] [tsung]   (default: node python)
set -euo pipefail
cd "$(dirname "$0")"
want=("${@:-node python}")
read -r -a want <<< "${want[*]}"

for peer in "${want[@]}"; do
    case "$peer" in
    node)
        pinned=$(sed -n 's/.*"ws": "\(.*\)".*/\1/p' node-ws/package.json)
        have=$(node -p 'require("./node-ws/node_modules/ws/package.json").version' 2>/dev/null || true)
        if [ "$have" != "$pinned" ]; then
            (cd node-ws && npm install --silent --no-audit --no-fund --no-package-lock >/dev/null)
        fi
        ;;
    python)
        venv=python-websockets/.venv
        pinned=$(sed -n 's/^websockets==//p' python-websockets/requirements.txt)
        have=$("$venv/bin/python" -c 'import websockets; print(websockets.__version__)' 2>/dev/null || true)
        if [ "$have" != "$pinned" ]; then
            python3 -m venv "$venv"
            "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r python-websockets/requirements.txt
        fi
        ;;
    artillery)
        pinned=$(sed -n 's/.*"artillery": "\(.*\)".*/\1/p' artillery/package.json)
        have=$(node -p 'require("./artillery/node_modules/artillery/package.json").version' 2>/dev/null || true)
        if [ "$have" != "$pinned" ]; then
            (cd artillery && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund --no-package-lock >/dev/null)
        fi
        ;;
    tsung)
        if ! command -v tsung >/dev/null 2>&1; then
            apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tsung >/dev/null
        fi
        ;;
    *)
        echo "install.sh: unknown peer $peer (node, python, artillery or tsung)" >&2
        exit 2
        ;;
    esac
done
