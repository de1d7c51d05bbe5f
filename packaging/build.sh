#!/usr/bin/env bash
# Build the frozen LeukGUI folder on Linux and prove it works.
#
#   bash packaging/build.sh            # -> dist/LeukGUI/ (LeukGUI, leukgui-cli, _internal/)
#   LEUKGUI_BUNDLE_WEIGHTS=1 bash packaging/build.sh   # also bundle ImageNet weights
#
# A fresh virtual environment from pinned requirements, PyInstaller with packaging/leukgui.spec,
# then the frozen app's self-test offscreen: the build fails when the self-test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=build/venv-freeze
rm -rf "$VENV" build/pyinstaller dist/LeukGUI
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --upgrade pip >/dev/null
# The lock pins every package: --no-deps installs exactly it, and pip check fails the build
# when the lock misses a dependency instead of quietly fetching an unpinned version.
"$VENV/bin/python" -m pip install --no-deps -r packaging/requirements-build.txt
"$VENV/bin/python" -m pip install --no-deps .
"$VENV/bin/python" -m pip check
"$VENV/bin/pyinstaller" --noconfirm --clean --workpath build/pyinstaller --distpath dist \
    packaging/leukgui.spec
echo "== frozen self-test"
QT_QPA_PLATFORM=offscreen LEUKGUI_USER_DIR="$(mktemp -d)" dist/LeukGUI/leukgui-cli --self-test
echo "== size: $(du -sh dist/LeukGUI | cut -f1), files: $(find dist/LeukGUI -type f | wc -l)"
