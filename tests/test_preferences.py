"""Preferences: validated on load, written atomically, recent folders bounded."""

from __future__ import annotations

import json
from pathlib import Path

from leukgui.core.preferences import (
    MAX_RECENT,
    Preferences,
    load_preferences,
    preferences_path,
    save_preferences,
)


def test_round_trip_in_the_user_folder() -> None:
    prefs = Preferences(reviewer="A. Smith", theme="dark", thumb_size=96)
    prefs.add_recent("/data/p1")
    path = save_preferences(prefs)
    assert path == preferences_path()
    loaded, notes = load_preferences()
    assert notes == []
    assert loaded == prefs


def test_bad_values_fall_back_to_defaults_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(
        json.dumps({"theme": "purple", "thumb_size": 9999, "reviewer": 7, "batch_size": 16})
    )
    prefs, notes = load_preferences(path)
    assert (prefs.theme, prefs.thumb_size, prefs.reviewer) == ("light", 128, "")
    assert prefs.batch_size == 16
    assert len(notes) == 3 and any("theme" in n for n in notes)


def test_damaged_file_gives_defaults_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text("{ not json")
    prefs, notes = load_preferences(path)
    assert prefs == Preferences() and "could not be read" in notes[0]
    path.write_text("[1, 2]")
    assert "not a JSON object" in load_preferences(path)[1][0]


def test_recent_folders_most_recent_first_without_duplicates() -> None:
    prefs = Preferences()
    for i in range(MAX_RECENT + 3):
        prefs.add_recent(f"/data/{i}")
    prefs.add_recent("/data/5")
    assert len(prefs.recent_folders) == MAX_RECENT
    assert prefs.recent_folders[0].endswith("5")
    assert len(set(prefs.recent_folders)) == MAX_RECENT


def test_the_old_field_mode_setting_is_kept_as_image_kind(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"field_mode": "fields"}), encoding="utf-8")
    prefs, notes = load_preferences(path)
    assert prefs.image_kind == "fields" and notes == []
    path.write_text(json.dumps({"field_mode": "cells", "image_kind": "auto"}), encoding="utf-8")
    assert load_preferences(path)[0].image_kind == "auto"  # the new name wins
