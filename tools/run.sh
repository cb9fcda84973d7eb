#!/usr/bin/env bash
# README command 1: set up, then the main job. With a display: napari with the FreeDrag
# widget docked and the bundled model. Without one: the same viewer under Xvfb runs a
# real drag and writes screenshots and a JSON report to demo-output/ (or $1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup.sh

if [[ -n "${DISPLAY:-}" ]]; then
  exec .venv/bin/napari-freedrag
fi
out="${1:-demo-output}"
xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/napari-freedrag demo --out "$out"
echo "run.sh: no display, so the demo ran under Xvfb."
echo "run.sh: screenshots: $out/before.png $out/after.png"
echo "run.sh: report:      $out/report.json"
