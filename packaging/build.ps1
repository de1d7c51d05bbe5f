# Build the frozen LeukGUI folder on Windows and prove it works (PowerShell 5+).
#
#   powershell -ExecutionPolicy Bypass -File packaging\build.ps1
#   $env:LEUKGUI_BUNDLE_WEIGHTS = "1"   # also bundle ImageNet weights from the Keras cache
#
# Fresh virtual environment from pinned requirements, PyInstaller with packaging\leukgui.spec,
# then the frozen app's self-test offscreen, the frozen CLI analysing the bundled samples with
# each inference runtime (OpenVINO, ONNX Runtime, TensorFlow), `leukgui-cli runtimes` and the
# DirectML self-check (`runtimes --require onnx:DirectML`; a runner without a GPU passes it
# through Windows' WARP software adapter). The build fails when any of them fails, or when a
# runtime asked for was passed over.
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

# Each runtime by name, without Qt: the run must name that engine on stderr ("Runtime: <engine>",
# then its device and precision) and must not have fallen back ("runtime note: ...").
$tmp = Join-Path $env:TEMP ("leukgui-runtimes-" + [guid]::NewGuid())
New-Item -ItemType Directory -Force $tmp | Out-Null
$env:LEUKGUI_USER_DIR = Join-Path $tmp "user"
$checks = [ordered]@{ "openvino" = "OpenVINO"; "onnx" = "ONNX Runtime"; "tensorflow" = "TensorFlow" }
foreach ($runtime in $checks.Keys) {
    $label = $checks[$runtime]
    Write-Host "== frozen CLI, --runtime $runtime"
    $err = Join-Path $tmp "$runtime.err"
    $xlsx = Join-Path $tmp "$runtime.xlsx"
    $proc = Start-Process -FilePath "dist\LeukGUI\leukgui-cli.exe" -NoNewWindow -Wait -PassThru `
        -ArgumentList "analyze", "resources\samples", "--runtime", $runtime, "--out", "`"$xlsx`"" `
        -RedirectStandardOutput (Join-Path $tmp "$runtime.out") -RedirectStandardError $err
    $lines = Get-Content $err -Encoding UTF8
    $lines | Where-Object { $_ -match "^(Runtime: |  runtime note: )" } | Write-Host
    if ($proc.ExitCode) {
        Get-Content (Join-Path $tmp "$runtime.out"), $err | Write-Host
        throw "the frozen CLI could not analyse the samples with --runtime $runtime ($($proc.ExitCode))"
    }
    $used = @($lines | Where-Object { $_.StartsWith("Runtime: $label") })
    $notes = @($lines | Where-Object { $_ -match "runtime note:" })
    if (-not $used -or $notes -or -not (Test-Path $xlsx)) {
        $lines | Write-Host
        throw "--runtime $runtime did not run on $label (or fell back)"
    }
}
Write-Host "== frozen CLI, runtimes"
& dist\LeukGUI\leukgui-cli.exe runtimes
if ($LASTEXITCODE) { throw "leukgui-cli runtimes failed ($LASTEXITCODE)" }
Write-Host "== frozen CLI, DirectML self-check"
& dist\LeukGUI\leukgui-cli.exe runtimes --require onnx:DirectML
if ($LASTEXITCODE) { throw "the DirectML self-check failed ($LASTEXITCODE)" }
Remove-Item Env:\LEUKGUI_USER_DIR
Remove-Item -Recurse -Force $tmp
$size = (Get-ChildItem dist\LeukGUI -Recurse -File | Measure-Object Length -Sum).Sum / 1MB
$count = (Get-ChildItem dist\LeukGUI -Recurse -File | Measure-Object).Count
Write-Host ("== size: {0:N0} MB, files: {1}" -f $size, $count)
