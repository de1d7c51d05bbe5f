; LeukGUI per-user installer (NSIS 3). No administrator rights, no network.
;
;   makensis /DVERSION=0.1.0 /DSOURCE=dist\LeukGUI /DOUTFILE=LeukGUI-0.1.0-setup.exe ^
;            packaging\windows\installer.nsi
;
; Installs into %LOCALAPPDATA%\Programs\LeukGUI (silent: /S, folder: /D=C:\path, last).
; An upgrade replaces the program files only; the user's models, settings, sessions and logs
; live in %LOCALAPPDATA%\LeukGUI and are never touched, not even by the uninstaller.

; /DTARGET=amd64-unicode builds a 64-bit installer where makensis has that stub (Debian's
; does); the default is NSIS's usual 32-bit stub, which every Windows 10 runs.
!ifdef TARGET
  Target "${TARGET}"
!endif
Unicode true
ManifestDPIAware true
RequestExecutionLevel user
SetCompressor /SOLID lzma

!ifndef VERSION
  !error "pass /DVERSION=x.y.z (the version in leukgui/__init__.py)"
!endif
!ifndef SOURCE
  !error "pass /DSOURCE=path\to\the\PyInstaller\onedir (dist\LeukGUI)"
!endif
!ifndef OUTFILE
  !define OUTFILE "LeukGUI-${VERSION}-setup.exe"
!endif

!define APP "LeukGUI"
!define PUBLISHER "LeukGUI team"
!define UNINST_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\${APP}"
!define PROGID "LeukGUI.ModelBundle"

!include "MUI2.nsh"
!include "FileFunc.nsh"

Name "${APP} ${VERSION}"
OutFile "${OUTFILE}"
InstallDir "$LOCALAPPDATA\Programs\${APP}"
InstallDirRegKey HKCU "${UNINST_KEY}" "InstallLocation"
BrandingText "${APP} ${VERSION}"

!define MUI_ICON "${SOURCE}\_internal\leukgui.ico"
!define MUI_UNICON "${SOURCE}\_internal\leukgui.ico"
!define MUI_FINISHPAGE_RUN "$INSTDIR\LeukGUI.exe"
!define MUI_FINISHPAGE_RUN_TEXT "Start ${APP}"

!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_COMPONENTS
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

VIProductVersion "${VERSION}.0"
VIAddVersionKey "ProductName" "${APP}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "CompanyName" "${PUBLISHER}"
VIAddVersionKey "FileDescription" "${APP} installer"
VIAddVersionKey "LegalCopyright" "${PUBLISHER}"

Section "!${APP}" SecMain
  SectionIn RO
  ; Upgrade: remove the previous program files (only those), then copy the new ones.
  ReadRegStr $0 HKCU "${UNINST_KEY}" "InstallLocation"
  StrCmp $0 "" fresh
    IfFileExists "$0\LeukGUI.exe" 0 fresh
      DetailPrint "Removing the previous version in $0 (your data is kept)"
      RMDir /r "$0\_internal"
      Delete "$0\LeukGUI.exe"
      Delete "$0\leukgui-cli.exe"
      Delete "$0\Uninstall.exe"
  fresh:
  SetOutPath "$INSTDIR"
  File /r "${SOURCE}\*.*"
  WriteUninstaller "$INSTDIR\Uninstall.exe"

  CreateShortCut "$SMPROGRAMS\${APP}.lnk" "$INSTDIR\LeukGUI.exe" "" "$INSTDIR\LeukGUI.exe" 0

  ; Uninstall entry (Settings > Apps), per user.
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayName" "${APP}"
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINST_KEY}" "Publisher" "${PUBLISHER}"
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayIcon" "$INSTDIR\LeukGUI.exe,0"
  WriteRegStr HKCU "${UNINST_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINST_KEY}" "UninstallString" '"$INSTDIR\Uninstall.exe"'
  WriteRegStr HKCU "${UNINST_KEY}" "QuietUninstallString" '"$INSTDIR\Uninstall.exe" /S'
  WriteRegDWORD HKCU "${UNINST_KEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINST_KEY}" "NoRepair" 1
  ${GetSize} "$INSTDIR" "/S=0K" $1 $2 $3
  IntFmt $1 "0x%08X" $1
  WriteRegDWORD HKCU "${UNINST_KEY}" "EstimatedSize" $1

  ; Double-clicking a model bundle imports it into LeukGUI (per-user file association).
  WriteRegStr HKCU "Software\Classes\.leukmodel" "" "${PROGID}"
  WriteRegStr HKCU "Software\Classes\${PROGID}" "" "LeukGUI model bundle"
  WriteRegStr HKCU "Software\Classes\${PROGID}\DefaultIcon" "" "$INSTDIR\LeukGUI.exe,0"
  WriteRegStr HKCU "Software\Classes\${PROGID}\shell\open\command" "" '"$INSTDIR\LeukGUI.exe" "%1"'
  System::Call 'shell32::SHChangeNotify(i 0x08000000, i 0, p 0, p 0)'
SectionEnd

Section /o "Desktop shortcut" SecDesktop
  CreateShortCut "$DESKTOP\${APP}.lnk" "$INSTDIR\LeukGUI.exe" "" "$INSTDIR\LeukGUI.exe" 0
SectionEnd

Section "Uninstall"
  ; Program files only. %LOCALAPPDATA%\LeukGUI (models, settings, sessions) stays.
  Delete "$SMPROGRAMS\${APP}.lnk"
  Delete "$DESKTOP\${APP}.lnk"
  RMDir /r "$INSTDIR\_internal"
  Delete "$INSTDIR\LeukGUI.exe"
  Delete "$INSTDIR\leukgui-cli.exe"
  Delete "$INSTDIR\Uninstall.exe"
  RMDir "$INSTDIR"
  DeleteRegKey HKCU "${UNINST_KEY}"
  ReadRegStr $0 HKCU "Software\Classes\.leukmodel" ""
  StrCmp $0 "${PROGID}" 0 +2
    DeleteRegKey HKCU "Software\Classes\.leukmodel"
  DeleteRegKey HKCU "Software\Classes\${PROGID}"
  System::Call 'shell32::SHChangeNotify(i 0x08000000, i 0, p 0, p 0)'
SectionEnd
