"""Where LeukGUI finds its bundled resources and keeps per-user data.

The same lookup serves a source checkout, an installed wheel and a frozen (PyInstaller) app,
so the CLI, GUI and installer never disagree about which models exist.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from platformdirs import user_data_dir

from leukgui import APP_NAME

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../leukgui


def resources_dir() -> Path:
    """The bundled `resources/` folder (models, samples, weights)."""
    override = os.environ.get("LEUKGUI_RESOURCES")
    if override:
        return Path(override)
    candidates = []
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        candidates.append(Path(frozen_root) / "resources")
    candidates.append(_PACKAGE_DIR / "resources")  # installed wheel
    candidates.append(_PACKAGE_DIR.parent / "resources")  # source checkout / editable install
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[-1]


def user_dir() -> Path:
    """Per-user data folder (models, settings, sessions); never next to the program."""
    override = os.environ.get("LEUKGUI_USER_DIR")
    if override:
        return Path(override)
    return Path(user_data_dir(APP_NAME, appauthor=False))


def bundled_models_dir() -> Path:
    return resources_dir() / "models"


def user_models_dir() -> Path:
    return user_dir() / "models"


def bundled_weights_dir() -> Path:
    """ImageNet weight files an installer may bundle for offline clinics."""
    return resources_dir() / "weights"


def samples_dir() -> Path:
    return resources_dir() / "samples"
