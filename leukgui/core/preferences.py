"""User preferences: a small validated JSON file in the per-user folder.

Like labelme, preferences live in a readable file that is checked on load (a wrong or
hand-damaged value falls back to its default with a note, never a crash), while Qt's
QSettings keeps only window geometry. Qt-free, so the CLI and tests can use it too.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from leukgui.core.atomic import atomic_write
from leukgui.core.paths import user_dir

__all__ = ["MAX_RECENT", "Preferences", "load_preferences", "preferences_path", "save_preferences"]

MAX_RECENT = 10
THEMES = ("light", "dark")
INSPECTOR_LAYOUTS = ("overlay", "side by side")  # one view with a heatmap toggle, or two


@dataclass
class Preferences:
    """Everything a user can set; defaults suit a first start."""

    reviewer: str = ""
    recent_folders: list[str] = field(default_factory=list)
    model: str = ""  # bundle name or path last used ("" = the default bundle)
    theme: str = "light"
    inspector_layout: str = "overlay"  # the cell inspector: "overlay" or "side by side"
    thumb_size: int = 128
    batch_size: int = 32
    open_report_after_export: bool = True
    preload_model: bool = True  # load TensorFlow and the model in the background at start-up
    last_export_folder: str = ""  # where the save dialog starts next time
    lab_dataset_folder: str = ""  # the lab data set reviews are added to ("" = the default)
    image_kind: str = "auto"  # "auto" (decided per image), "cells" or "fields"
    tta: bool = False  # test-time augmentation: mean P(ALL) over 8 flips and quarter turns
    runtime: str = "auto"  # inference runtime: "auto", "openvino", "onnx" or "tensorflow"
    precision: str = "auto"  # "auto" (bf16 where the CPU supports it) or "fp32"
    # DetectorSettings overrides for fields, e.g. {"um_per_px": 0.077} (the "µm per pixel"
    # setting; absent: measured on every field). Old px-era keys still load.
    detector: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    def add_recent(self, folder: str | os.PathLike[str]) -> None:
        """Most recent first, no duplicates, at most MAX_RECENT."""
        text = str(Path(folder).absolute())
        self.recent_folders = [text] + [f for f in self.recent_folders if f != text]
        del self.recent_folders[MAX_RECENT:]


def preferences_path() -> Path:
    return user_dir() / "settings.json"


def _valid(name: str, value: object, default: object) -> bool:
    if name == "theme":
        return value in THEMES
    if name == "inspector_layout":
        return value in INSPECTOR_LAYOUTS
    if name == "image_kind":
        return value in ("auto", "cells", "fields")
    if name == "runtime":
        from leukgui.core.runtimes import RUNTIME_CHOICES

        return value in RUNTIME_CHOICES
    if name == "precision":
        return value in ("auto", "fp32")
    if name == "thumb_size":
        return isinstance(value, int) and 48 <= value <= 320
    if name == "batch_size":
        return isinstance(value, int) and 1 <= value <= 1024
    if name == "recent_folders":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if isinstance(default, bool):
        return isinstance(value, bool)
    return isinstance(value, type(default))


def load_preferences(path: Path | None = None) -> tuple[Preferences, list[str]]:
    """Preferences from disk and notes about values that were ignored (bad JSON, bad types)."""
    path = path or preferences_path()
    prefs = Preferences()
    notes: list[str] = []
    if not path.is_file():
        return prefs, notes
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return prefs, [f"{path.name} could not be read ({exc}); using defaults"]
    if not isinstance(raw, dict):
        return prefs, [f"{path.name} is not a JSON object; using defaults"]
    if "field_mode" in raw and "image_kind" not in raw:  # the name before 0.x: keep the choice
        raw["image_kind"] = raw.pop("field_mode")
    defaults = Preferences()
    for f in fields(Preferences):
        if f.name not in raw:
            continue
        value = raw[f.name]
        if _valid(f.name, value, getattr(defaults, f.name)):
            setattr(prefs, f.name, value)
        else:
            notes.append(f"{path.name}: ignored {f.name}={value!r}")
    prefs.recent_folders = prefs.recent_folders[:MAX_RECENT]
    _check_um_per_px(prefs, path.name, notes)
    return prefs, notes


def _check_um_per_px(prefs: Preferences, name: str, notes: list[str]) -> None:
    """Drop a hand-damaged "µm per pixel" (detector's um_per_px) with a note, so one bad
    value falls back to automatic instead of stopping every analysis. Old px-era detector
    keys (pixel_scale, smooth, ...) are left alone: DetectorSettings still reads them."""
    value = prefs.detector.get("um_per_px")
    if value is None:
        return
    from leukgui.core.field_scale import check_um_per_px  # only when set: it loads OpenCV

    try:
        check_um_per_px(value)
    except ValueError as exc:
        prefs.detector = {k: v for k, v in prefs.detector.items() if k != "um_per_px"}
        notes.append(f"{name}: ignored detector um_per_px={value!r} ({exc})")


def save_preferences(prefs: Preferences, path: Path | None = None) -> Path:
    """Write atomically, so a crash while saving never leaves a half file."""
    path = path or preferences_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(asdict(prefs), indent=2, ensure_ascii=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path
