#!/usr/bin/env bash
# Install the peer servers' pinned dependencies, quietly and only if missing:
# ws (bench/peers/node-ws/package.json) into bench/peers/node-ws/node_modules,
# websockets (bench/peers/python-websockets/requirements.txt) into a venv at
# bench/peers/python-websockets/.venv. Used by the bench scripts and .ci/run.
# Usage: bench/peers/install.sh [node] [python]   (default: both)
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
    *)
        echo "install.sh: unknown peer $peer (node or python)" >&2
        exit 2
        ;;
    esac
done
