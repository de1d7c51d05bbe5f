#!/usr/bin/env bash
# Build the frozen LeukGUI folder on Linux and prove it works.
#
#   bash packaging/build.sh            # -> dist/LeukGUI/ (LeukGUI, leukgui-cli, _internal/)
#   LEUKGUI_BUNDLE_WEIGHTS=1 bash packaging/build.sh   # also bundle ImageNet weights
#
# A fresh virtual environment from pinned requirements, PyInstaller with packaging/leukgui.spec,
# then the frozen app's self-test offscreen, the frozen CLI analysing the bundled samples with
# each inference runtime (OpenVINO, ONNX Runtime, TensorFlow), `leukgui-cli runtimes` and NSIS's
# size limits (packaging/nsis_payload.py): the build fails when any of them fails, or when a
# runtime asked for was passed over.
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

# Each runtime by name, without Qt: the run must name that engine on stderr ("Runtime: <engine>",
# then its device and precision) and must not have fallen back ("runtime note: ...").
tmp=$(mktemp -d)
export LEUKGUI_USER_DIR="$tmp/user"
for check in "openvino=OpenVINO" "onnx=ONNX Runtime" "tensorflow=TensorFlow"; do
    runtime=${check%%=*}
    label=${check#*=}
    echo "== frozen CLI, --runtime $runtime"
    if ! dist/LeukGUI/leukgui-cli analyze resources/samples --runtime "$runtime" \
        --out "$tmp/$runtime.xlsx" >"$tmp/$runtime.out" 2>"$tmp/$runtime.err"; then
        cat "$tmp/$runtime.out" "$tmp/$runtime.err"
        echo "FAILED: the frozen CLI could not analyse the samples with --runtime $runtime" >&2
        exit 1
    fi
    grep -E '^(Runtime: |  runtime note: )' "$tmp/$runtime.err" || true
    if ! grep -q "^Runtime: $label" "$tmp/$runtime.err" \
        || grep -q 'runtime note:' "$tmp/$runtime.err" || [ ! -s "$tmp/$runtime.xlsx" ]; then
        cat "$tmp/$runtime.err"
        echo "FAILED: --runtime $runtime did not run on $label (or fell back)" >&2
        exit 1
    fi
done
echo "== frozen CLI, runtimes"
dist/LeukGUI/leukgui-cli runtimes
unset LEUKGUI_USER_DIR
rm -rf "$tmp"
echo "== size: $(du -sh dist/LeukGUI | cut -f1), files: $(find dist/LeukGUI -type f | wc -l)"
# NSIS's size limits, as the Windows release checks them before makensis.
echo "== NSIS size limits"
"$VENV/bin/python" packaging/nsis_payload.py dist/LeukGUI
