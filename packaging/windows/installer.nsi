; LeukGUI installer (NSIS 3). Per user by default: no administrator rights, no network.
;
;   makensis /NOCD /DVERSION=0.1.0 /DSOURCE=dist\LeukGUI /DOUTFILE=LeukGUI-0.1.0-setup.exe ^
;            packaging\windows\installer.nsi
; (/NOCD: relative paths are taken from the current folder, not from this script's.)
;
; Per user (default): %LOCALAPPDATA%\Programs\LeukGUI, HKCU, this user's Start menu.
; Machine-wide (/ALLUSERS, run as administrator): %ProgramFiles%\LeukGUI, HKLM, everyone's
; Start menu; the folder AppLocker's and WDAC's default rules allow.
; Silent: /S; another folder: /D=C:\path (last on the command line, never quoted).
; An upgrade replaces the program files only; each user's models, settings and sessions
; live in %LOCALAPPDATA%\LeukGUI and are never touched, not even by the uninstaller.
;
; Exit codes (installer and uninstaller), for IT tools:
;   0 done   1 cancelled by the user   2 a file could not be written or removed (nothing
;   was half-replaced: the previous version is left as it was when the check came first)
;   3 LeukGUI is running   4 /ALLUSERS without administrator rights
;   5 a per-user install run as SYSTEM (deploy in the user's context, or pass /ALLUSERS)

; /DTARGET=amd64-unicode builds a 64-bit installer where makensis has that stub (Debian's
; does); the default is NSIS's usual 32-bit stub, which every Windows 10 runs.
!ifdef TARGET
  Target "${TARGET}"
!endif
Unicode true
ManifestDPIAware true
RequestExecutionLevel user
; Not solid: makensis holds a solid block's whole uncompressed payload in one buffer with a
; signed 32-bit size, so a payload near 2 GB fails ("error mmapping file ... is out of range").
; File by file, only the compressed installer (about a third of the payload) has that limit;
; packaging/nsis_payload.py checks it before makensis runs.
SetCompressor lzma
; Never skip a file that cannot be written (NSIS's default offers "Ignore", and silent mode
; takes it): a half-replaced program folder is worse than a failed, repeatable install.
AllowSkipFiles off

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
; The same name as leukgui/core/running.py (MUTEX_NAME): every LeukGUI process holds it.
!define RUNNING_MUTEX "LeukGUI.Running.{5C6A1B8E-2D4F-4A57-9E0C-7B1D3F9A6E42}"
!define EXIT_FILES 2
!define EXIT_RUNNING 3
!define EXIT_NOT_ADMIN 4
!define EXIT_SYSTEM_ACCOUNT 5

!include "MUI2.nsh"
!include "FileFunc.nsh"
!include "LogicLib.nsh"
!include "x64.nsh"

Name "${APP} ${VERSION}"
OutFile "${OUTFILE}"
; No InstallDir: .onInit picks the folder (per user or machine-wide) unless /D= gave one.
BrandingText "${APP} ${VERSION}"

Var AllUsers  ; "1" for a machine-wide install (/ALLUSERS), "" per user

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

; --- is LeukGUI running? ------------------------------------------------------------------------
; Sets $R9 to 1 when a LeukGUI process holds the mutex. Every LeukGUI process holds it in its
; session (Local\) and machine-wide (Global\). A per-user install or uninstall looks in this
; session only, so another user's LeukGUI on a shared PC (fast user switching, Remote Desktop)
; does not block it; a machine-wide one looks everywhere, since every user runs those files.
; OpenMutex failing with "access denied" (5) also means it exists: another user holds it.
!macro CHECK_MUTEX namespace
  System::Call 'kernel32::OpenMutexW(i 0x00100000, i 0, w "${namespace}${RUNNING_MUTEX}") p .R7 ?e'
  Pop $R6
  ${If} $R7 != 0
    System::Call 'kernel32::CloseHandle(p R7)'
    StrCpy $R9 1
  ${ElseIf} $R6 = 5
    StrCpy $R9 1
  ${EndIf}
!macroend
!macro IS_RUNNING_FUNCTION prefix
Function ${prefix}IsRunning
  StrCpy $R9 0
  !insertmacro CHECK_MUTEX "Local\"
  ${If} $AllUsers == 1
    !insertmacro CHECK_MUTEX "Global\"
  ${EndIf}
FunctionEnd

; Waits for LeukGUI to be closed (interactive: Retry / Cancel); silent: exit code 3.
Function ${prefix}WaitUntilClosed
  ${Do}
    Call ${prefix}IsRunning
    ${If} $R9 != 1
      ${Break}
    ${EndIf}
    MessageBox MB_RETRYCANCEL|MB_ICONEXCLAMATION \
      "${APP} is running. Close every ${APP} window and any leukgui-cli command (save your \
      review first), then click Retry." /SD IDCANCEL IDRETRY retry
    SetErrorLevel ${EXIT_RUNNING}
    Quit
    retry:
  ${Loop}
FunctionEnd
!macroend
!insertmacro IS_RUNNING_FUNCTION ""
!insertmacro IS_RUNNING_FUNCTION "un."

Function .onInit
  ${GetParameters} $R0
  ClearErrors
  ${GetOptions} $R0 "/ALLUSERS" $R1
  ${IfNot} ${Errors}
    StrCpy $AllUsers 1
  ${EndIf}
  ${If} ${RunningX64}
    SetRegView 64
  ${EndIf}
  ${If} $AllUsers == 1
    UserInfo::GetAccountType
    Pop $R1
    ${If} $R1 != "Admin"
      MessageBox MB_ICONSTOP "A machine-wide install (/ALLUSERS) needs administrator rights: \
        run the installer as administrator, or without /ALLUSERS to install for yourself." /SD IDOK
      SetErrorLevel ${EXIT_NOT_ADMIN}
      Quit
    ${EndIf}
    SetShellVarContext all
    StrCpy $R2 "$PROGRAMFILES64\${APP}"
  ${Else}
    ; A per-user install by SYSTEM (an IT tool's default) would land in the system profile,
    ; where no user ever starts it.
    ${If} "$PROFILE" == "$WINDIR\system32\config\systemprofile"
      MessageBox MB_ICONSTOP "This installer installs for the user who runs it, and it is \
        running as SYSTEM. Deploy it in the user's context, or pass /ALLUSERS." /SD IDOK
      SetErrorLevel ${EXIT_SYSTEM_ACCOUNT}
      Quit
    ${EndIf}
    SetShellVarContext current
    StrCpy $R2 "$LOCALAPPDATA\Programs\${APP}"
  ${EndIf}
  ; The folder: /D= when given, else where the previous version is, else the default.
  ${If} $INSTDIR == ""
    ReadRegStr $INSTDIR SHCTX "${UNINST_KEY}" "InstallLocation"
    ${If} $INSTDIR == ""
      StrCpy $INSTDIR $R2
    ${EndIf}
  ${EndIf}
  Call WaitUntilClosed
FunctionEnd

Section "!${APP}" SecMain
  SectionIn RO
  ; LeukGUI may have been started while the pages were shown.
  Call WaitUntilClosed
  ; Upgrade: remove the previous program files (only those), then copy the new ones. The
  ; previous _internal is renamed first: Windows refuses while any file in it is in use, and
  ; then nothing has been changed yet.
  ReadRegStr $0 SHCTX "${UNINST_KEY}" "InstallLocation"
  ${If} $0 != ""
  ${AndIf} ${FileExists} "$0\LeukGUI.exe"
    DetailPrint "Removing the previous version in $0 (your data is kept)"
    RMDir /r "$0\_internal.old"  ; left by an upgrade that was cut off
    ClearErrors
    ${If} ${FileExists} "$0\_internal\*.*"
      Rename "$0\_internal" "$0\_internal.old"
    ${EndIf}
    ${If} ${Errors}
      MessageBox MB_ICONSTOP "The previous version in $0 is in use (is ${APP} running?). \
        Nothing was changed; close it and run the installer again." /SD IDOK
      SetErrorLevel ${EXIT_FILES}
      Quit
    ${EndIf}
    ClearErrors
    RMDir /r "$0\_internal.old"
    Delete "$0\LeukGUI.exe"
    Delete "$0\leukgui-cli.exe"
    Delete "$0\Uninstall.exe"
    ${If} ${Errors}
      MessageBox MB_ICONSTOP "Some files of the previous version in $0 could not be removed. \
        Close ${APP} and run the installer again." /SD IDOK
      SetErrorLevel ${EXIT_FILES}
      Quit
    ${EndIf}
  ${EndIf}
  SetOutPath "$INSTDIR"
  File /r "${SOURCE}\*.*"
  WriteUninstaller "$INSTDIR\Uninstall.exe"

  CreateShortCut "$SMPROGRAMS\${APP}.lnk" "$INSTDIR\LeukGUI.exe" "" "$INSTDIR\LeukGUI.exe" 0

  ; Uninstall entry (Settings > Apps): HKCU per user, HKLM machine-wide (SHCTX).
  WriteRegStr SHCTX "${UNINST_KEY}" "DisplayName" "${APP}"
  WriteRegStr SHCTX "${UNINST_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr SHCTX "${UNINST_KEY}" "Publisher" "${PUBLISHER}"
  WriteRegStr SHCTX "${UNINST_KEY}" "DisplayIcon" "$INSTDIR\LeukGUI.exe,0"
  WriteRegStr SHCTX "${UNINST_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr SHCTX "${UNINST_KEY}" "UninstallString" '"$INSTDIR\Uninstall.exe"'
  ; In place (_?=), so the caller waits for the uninstall and gets its exit code; the
  ; uninstaller then removes itself and the folder a moment after it ends.
  WriteRegStr SHCTX "${UNINST_KEY}" "QuietUninstallString" '"$INSTDIR\Uninstall.exe" /S _?=$INSTDIR'
  WriteRegDWORD SHCTX "${UNINST_KEY}" "NoModify" 1
  WriteRegDWORD SHCTX "${UNINST_KEY}" "NoRepair" 1
  ${GetSize} "$INSTDIR" "/S=0K" $1 $2 $3
  IntFmt $1 "0x%08X" $1
  WriteRegDWORD SHCTX "${UNINST_KEY}" "EstimatedSize" $1

  ; Double-clicking a model bundle imports it into LeukGUI (file association).
  WriteRegStr SHCTX "Software\Classes\.leukmodel" "" "${PROGID}"
  WriteRegStr SHCTX "Software\Classes\${PROGID}" "" "LeukGUI model bundle"
  WriteRegStr SHCTX "Software\Classes\${PROGID}\DefaultIcon" "" "$INSTDIR\LeukGUI.exe,0"
  WriteRegStr SHCTX "Software\Classes\${PROGID}\shell\open\command" "" '"$INSTDIR\LeukGUI.exe" "%1"'
  System::Call 'shell32::SHChangeNotify(i 0x08000000, i 0, p 0, p 0)'
SectionEnd

Section /o "Desktop shortcut" SecDesktop
  CreateShortCut "$DESKTOP\${APP}.lnk" "$INSTDIR\LeukGUI.exe" "" "$INSTDIR\LeukGUI.exe" 0
SectionEnd

Function un.onInit
  ${If} ${RunningX64}
    SetRegView 64
  ${EndIf}
  ; Machine-wide when HKLM's entry points at this folder.
  ReadRegStr $R1 HKLM "${UNINST_KEY}" "InstallLocation"
  ${If} $R1 == $INSTDIR
    StrCpy $AllUsers 1
    UserInfo::GetAccountType
    Pop $R2
    ${If} $R2 != "Admin"
      MessageBox MB_ICONSTOP "${APP} was installed for all users: uninstalling it needs \
        administrator rights." /SD IDOK
      SetErrorLevel ${EXIT_NOT_ADMIN}
      Quit
    ${EndIf}
    SetShellVarContext all
  ${Else}
    SetShellVarContext current
  ${EndIf}
  Call un.WaitUntilClosed
FunctionEnd

Section "Uninstall"
  ; Program files only. %LOCALAPPDATA%\LeukGUI (models, settings, sessions) stays.
  Delete "$SMPROGRAMS\${APP}.lnk"
  Delete "$DESKTOP\${APP}.lnk"
  ClearErrors
  RMDir /r "$INSTDIR\_internal"
  Delete "$INSTDIR\LeukGUI.exe"
  Delete "$INSTDIR\leukgui-cli.exe"
  ${If} ${Errors}
    ; Keep the entry and the uninstaller, so it can be run again once LeukGUI is closed.
    MessageBox MB_ICONSTOP "Some files in $INSTDIR could not be removed (is ${APP} running?). \
      Close it and run the uninstaller again." /SD IDOK
    SetErrorLevel ${EXIT_FILES}
    Quit
  ${EndIf}
  Delete "$INSTDIR\Uninstall.exe"
  ${If} ${FileExists} "$INSTDIR\Uninstall.exe"
    ; Still there: this is the running uninstaller, run in place (_?=, the
    ; QuietUninstallString). A hidden command removes it and the then empty folder a moment
    ; after this process ends.
    SetOutPath "$TEMP"  ; leave the folder, so that it can go
    ExecShell "open" "$SYSDIR\cmd.exe" \
      '/d /c ping -n 3 127.0.0.1 >nul & del /f /q "$INSTDIR\Uninstall.exe" & rmdir "$INSTDIR"' SW_HIDE
  ${Else}
    RMDir "$INSTDIR"
  ${EndIf}
  DeleteRegKey SHCTX "${UNINST_KEY}"
  ReadRegStr $0 SHCTX "Software\Classes\.leukmodel" ""
  ${If} $0 == "${PROGID}"
    DeleteRegKey SHCTX "Software\Classes\.leukmodel"
  ${EndIf}
  DeleteRegKey SHCTX "Software\Classes\${PROGID}"
  System::Call 'shell32::SHChangeNotify(i 0x08000000, i 0, p 0, p 0)'
SectionEnd
