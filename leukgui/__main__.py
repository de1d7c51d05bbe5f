"""`python -m leukgui` runs the same command line as `leukgui`."""

import sys

from leukgui.cli import main

sys.exit(main())
