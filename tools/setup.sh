#!/usr/bin/env bash
# Idempotent set-up for development, CI and the demo: the system libraries napari needs
# under Xvfb, a Python 3.11 virtual environment in .venv, and this package installed
# editable with every extra. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT_PACKAGES=(
  xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-cursor0
  libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-randr0
  libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libfontconfig1 libdbus-1-3
)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
fi
if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "setup: missing system packages (install them as root): ${missing[*]}" >&2
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: napari-freedrag needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi

# Reinstall only when the dependency declarations changed (or the install is broken).
stamp=.venv/.napari-freedrag-setup
wanted="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1) $PWD"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]] \
  || ! .venv/bin/python -c 'import napari_freedrag' >/dev/null 2>&1; then
  echo "setup: installing napari-freedrag[qt,ldm,batch,movie,dev] into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q -c constraints.txt torch -e ".[qt,ldm,batch,movie,dev]"
  echo "$wanted" >"$stamp"
fi
echo "setup: ready ($(.venv/bin/python --version), $(.venv/bin/napari-freedrag --version))"
