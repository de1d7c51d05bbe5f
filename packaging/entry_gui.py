"""Entry point of the windowed LeukGUI executable (PyInstaller)."""

import sys

from leukgui.cli import main

if __name__ == "__main__":
    sys.exit(main())
