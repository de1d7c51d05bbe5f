"""LeukGUI: classify white blood cells in microscopy images as ALL (blast) or HEM (normal)."""

__version__ = "0.1.0"
APP_NAME = "LeukGUI"
