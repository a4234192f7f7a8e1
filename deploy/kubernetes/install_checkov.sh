#!/usr/bin/env bash
# Install checkov (the IaC scanner tests/deploy runs on every rendered variant of the chart) into its own virtual
# environment inside the project's: checkov pins packaging<24, which pytest (>=24) cannot share. The project's
# venv gets only a `checkov` launcher in bin/. Pinned version; idempotent.
#   bash deploy/kubernetes/install_checkov.sh .venv
set -euo pipefail
VENV="${1:-.venv}"
VERSION="3.3.30"
TOOL="$VENV/tools/checkov"
if [ -x "$TOOL/bin/checkov" ] && "$TOOL/bin/python" -m pip show checkov 2>/dev/null | grep -qx "Version: $VERSION"; then
  exit 0
fi
python_bin="$("$VENV/bin/python" -c 'import sys; print(sys.executable)')"
rm -rf "$TOOL"
"$python_bin" -m venv "$TOOL"
"$TOOL/bin/python" -m pip install -q --upgrade pip
"$TOOL/bin/python" -m pip install -q "checkov==$VERSION"
ln -sf "$(cd "$TOOL/bin" && pwd)/checkov" "$VENV/bin/checkov"
