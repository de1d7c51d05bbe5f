"""Entry point of the console leukgui executable (command line) (PyInstaller)."""

import sys

from leukgui.cli import main

if __name__ == "__main__":
    sys.exit(main())
