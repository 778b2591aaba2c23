#!/usr/bin/env bash
# Install mess and everything it needs on a fresh Debian/Ubuntu machine (Python 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null; then
  # fluidsynth + soundfont render the real demo/test audio; chromium drives the browser test;
  # mpd is the player `mess mpd` talks to (its tests start a private server on a loopback port).
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    fluidsynth timgm6mb-soundfont chromium libsndfile1 mpd >/dev/null
fi

PY="${PYTHON:-python3.11}"; command -v "$PY" >/dev/null || PY=python3
[ -d .venv ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[test]"
# musicnn's TF1 checkpoints ship in its wheel; --no-deps keeps TensorFlow out (we read them with numpy).
.venv/bin/pip install -q --no-deps musicnn==0.1.0
# an editable install leaves mess's own modules uncompiled: where PYTHONDONTWRITEBYTECODE is set (containers, CI)
# every mess process (each decoder, server, command) compiled them again from source
.venv/bin/python -m compileall -q src
echo "installed: $(.venv/bin/mess --help >/dev/null && echo 'mess CLI ok')"
