# Build the frozen LeukGUI folder on Windows and prove it works (PowerShell 5+).
#
#   powershell -ExecutionPolicy Bypass -File packaging\build.ps1
#   $env:LEUKGUI_BUNDLE_WEIGHTS = "1"   # also bundle ImageNet weights from the Keras cache
#
# Fresh virtual environment from pinned requirements, PyInstaller with packaging\leukgui.spec,
# then the frozen app's self-test offscreen; the build fails when the self-test fails.
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..")
$python = if ($env:PYTHON) { $env:PYTHON } else { "python" }
$venv = "build\venv-freeze"
foreach ($p in @($venv, "build\pyinstaller", "dist\LeukGUI")) {
    if (Test-Path $p) { Remove-Item -Recurse -Force $p }
}
& $python -m venv $venv; if ($LASTEXITCODE) { throw "venv failed" }
& "$venv\Scripts\python.exe" -m pip install --upgrade pip | Out-Null
# The lock pins every package: --no-deps installs exactly it, and pip check fails the build
# when the lock misses a dependency instead of quietly fetching an unpinned version.
& "$venv\Scripts\python.exe" -m pip install --no-deps -r packaging\requirements-build.txt
if ($LASTEXITCODE) { throw "pip install failed" }
& "$venv\Scripts\python.exe" -m pip install --no-deps .
if ($LASTEXITCODE) { throw "pip install . failed" }
& "$venv\Scripts\python.exe" -m pip check
if ($LASTEXITCODE) { throw "the pinned requirements miss a dependency" }
& "$venv\Scripts\pyinstaller.exe" --noconfirm --clean --workpath build\pyinstaller `
    --distpath dist packaging\leukgui.spec
if ($LASTEXITCODE) { throw "PyInstaller failed" }
Write-Host "== frozen self-test"
$env:QT_QPA_PLATFORM = "offscreen"
$env:LEUKGUI_USER_DIR = Join-Path $env:TEMP ("leukgui-selftest-" + [guid]::NewGuid())
& dist\LeukGUI\leukgui-cli.exe --self-test
if ($LASTEXITCODE) { throw "frozen self-test failed ($LASTEXITCODE)" }
Remove-Item Env:\QT_QPA_PLATFORM
Remove-Item Env:\LEUKGUI_USER_DIR
$size = (Get-ChildItem dist\LeukGUI -Recurse -File | Measure-Object Length -Sum).Sum / 1MB
Write-Host ("== size: {0:N0} MB" -f $size)
