#!/usr/bin/env bash
# Set up agentgraph from nothing: a virtualenv in .venv with every dependency, pinned.
# Safe to run again: an existing .venv is reused and only what changed is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "agentgraph needs Python >= 3.11"'

# The web page's browser tests drive Debian's Chromium (a browser downloaded by a test tool
# cannot be had offline).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=(); [ "$(id -u)" = 0 ] || SUDO=(sudo)
  "${SUDO[@]}" apt-get install -y -q chromium >/dev/null \
    || { "${SUDO[@]}" apt-get update -q >/dev/null && "${SUDO[@]}" apt-get install -y -q chromium >/dev/null; }
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)

# torch first, pinned: it resolves to the CPU wheel; an unpinned torch pulls gigabytes of CUDA.
"${PIP[@]}" install -q "torch==2.13.0"
# llama-cpp-python builds from source (about 5 minutes the first time, cached afterwards).
"${PIP[@]}" install -q -c constraints.txt -e ".[dev]"
echo "agentgraph is set up: activate with 'source .venv/bin/activate'"
