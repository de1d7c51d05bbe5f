# Build the frozen LeukGUI folder on Windows and prove it works (PowerShell 5+).
#
#   powershell -ExecutionPolicy Bypass -File packaging\build.ps1
#   $env:PYTHON = "C:\Python311\python.exe"   # another 64-bit Python 3.11 than `py -3.11`
#   $env:LEUKGUI_BUNDLE_WEIGHTS = "1"          # also bundle ImageNet weights from the Keras cache
#   $env:LEUKGUI_VC_RUNTIME_DIR = "C:\vcrt"    # VC++ runtime DLLs to bundle (default: Visual
#                                              # Studio's redist folder, else System32)
#
# Fresh virtual environment from pinned requirements, PyInstaller with packaging\leukgui.spec,
# then:
# - the DLL gate (packaging\dll_gate.py): every import of every .dll/.pyd resolves inside the
#   folder or to Windows itself, and the VC++ runtime sits at the top of _internal;
# - the frozen app's self-test offscreen;
# - the frozen CLI, which never imports Qt, analysing the bundled samples with each inference
#   runtime (OpenVINO, ONNX Runtime, TensorFlow): without Qt nothing else has loaded the C++
#   runtime, so this is where a missing msvcp140.dll would show;
# - `leukgui-cli runtimes` and the DirectML self-check (`runtimes --require onnx:DirectML`; a
#   runner without a GPU passes it through Windows' WARP software adapter);
# - NSIS's size limits (packaging\nsis_payload.py).
# The build fails when any of them fails, or when a runtime asked for was passed over. Every
# native command's exit code is checked.
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..")

# --- the Python to build with: 64-bit 3.11 (the version the lock was made for) -----------------
if ($env:PYTHON) { $python = @($env:PYTHON) } else { $python = @("py", "-3.11") }
$pyExe = $python[0]
$pyArgs = @($python | Select-Object -Skip 1)
$check = "import struct, sys; print(sys.version_info[:2] == (3, 11) and struct.calcsize('P') == 8)"
$ok = & $pyExe @pyArgs -c $check
if ($LASTEXITCODE) { throw "cannot run Python ($($python -join ' ')): install 64-bit Python 3.11 or set PYTHON" }
if ("$ok".Trim() -ne "True") { throw "$($python -join ' ') is not 64-bit Python 3.11, which the lock pins" }

# --- long paths: TensorFlow's deepest files are ~200 characters below the checkout -------------
$longPaths = (Get-ItemProperty "HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem" -ErrorAction SilentlyContinue).LongPathsEnabled
if ($longPaths -ne 1 -and (Get-Location).Path.Length -gt 50) {
    Write-Warning ("long paths are disabled and the checkout path is {0} characters: pip or " +
        "PyInstaller may fail on TensorFlow's deepest files. Enable LongPathsEnabled or build " +
        "from a short path such as C:\lg." -f (Get-Location).Path.Length)
}

$venv = "build\venv-freeze"
foreach ($p in @($venv, "build\pyinstaller", "dist\LeukGUI")) {
    if (Test-Path $p) { Remove-Item -Recurse -Force $p }
}
& $pyExe @pyArgs -m venv $venv
if ($LASTEXITCODE) { throw "venv failed ($LASTEXITCODE)" }
$vpy = "$venv\Scripts\python.exe"
& $vpy -m pip install --upgrade pip
if ($LASTEXITCODE) { throw "pip upgrade failed ($LASTEXITCODE)" }
# The lock pins every package: --no-deps installs exactly it, and pip check fails the build
# when the lock misses a dependency instead of quietly fetching an unpinned version.
& $vpy -m pip install --no-deps -r packaging\requirements-build.txt
if ($LASTEXITCODE) { throw "pip install failed ($LASTEXITCODE)" }
& $vpy -m pip install --no-deps .
if ($LASTEXITCODE) { throw "pip install . failed ($LASTEXITCODE)" }
& $vpy -m pip check
if ($LASTEXITCODE) { throw "the pinned requirements miss a dependency" }
& "$venv\Scripts\pyinstaller.exe" --noconfirm --clean --workpath build\pyinstaller `
    --distpath dist packaging\leukgui.spec
if ($LASTEXITCODE) { throw "PyInstaller failed ($LASTEXITCODE)" }

Write-Host "== DLL gate"
& $vpy packaging\dll_gate.py dist\LeukGUI
if ($LASTEXITCODE) { throw "the DLL gate failed: a DLL above is missing from the bundle" }

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

Write-Host "== NSIS size limits"
& $vpy packaging\nsis_payload.py dist\LeukGUI
if ($LASTEXITCODE) { throw "dist\LeukGUI is too large for one NSIS installer (see above)" }
$size = (Get-ChildItem dist\LeukGUI -Recurse -File | Measure-Object Length -Sum).Sum / 1MB
$count = (Get-ChildItem dist\LeukGUI -Recurse -File | Measure-Object).Count
Write-Host ("== size: {0:N0} MB, files: {1}" -f $size, $count)
