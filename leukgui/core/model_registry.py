"""The lab's model registry: which model is in use, who adopted it, when, and on what evidence.

A newly trained or imported model is added to the model list but never becomes the model in
use by itself: adopting it is an explicit decision, recorded here. The registry is one JSON
file in the per-user folder (`model_registry.json`):

    {"format": "leukgui-model-registry", "format_version": 1,
     "adoptions": [{"name", "version", "sha256", "path", "who", "when" (UTC, ISO 8601),
                    "comparison" (the verdict shown, or a note that there was none),
                    "previous": {"name", "version", "sha256"} | null}, ...]}

The last adoption is the model in use; the list is its history, oldest first. Writers hold
an exclusive OS lock (`atomic.try_lock`, `model_registry.lock`) and replace the file
atomically, so two LeukGUI processes adopting at once never lose a record and a reader never
sees half a file. Qt-free, like the rest of `leukgui.core`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from leukgui.core.atomic import atomic_write, try_lock, unlock
from leukgui.core.bundle import BundleError, BundleInfo, load_bundle
from leukgui.core.paths import user_dir

__all__ = [
    "NO_COMPARISON",
    "REGISTRY_FILE",
    "Adoption",
    "RegistryError",
    "adopt",
    "comparison_lines",
    "comparison_summary",
    "current",
    "current_bundle_path",
    "history",
    "is_adopted",
    "registry_path",
]

REGISTRY_FILE = "model_registry.json"
LOCK_FILE = "model_registry.lock"
FORMAT = "leukgui-model-registry"
FORMAT_VERSION = 1
NO_COMPARISON = "no comparison with a parent model is recorded in this model file"
_LOCK_TIMEOUT_S = 10.0
_LOCK_POLL_S = 0.05


class RegistryError(RuntimeError):
    """An adoption that was refused, or a registry that cannot be read or written."""


@dataclass(frozen=True)
class Adoption:
    """One recorded decision to use a model for the next analyses."""

    name: str
    version: str
    sha256: str
    path: str
    who: str
    when: str  # UTC, ISO 8601
    comparison: str  # the verdict shown when it was adopted
    previous: dict[str, str] | None = None

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def when_text(self) -> str:
        """ "2026-12-01 03:40 UTC"."""
        try:
            return datetime.fromisoformat(self.when).strftime("%Y-%m-%d %H:%M UTC")
        except ValueError:
            return self.when

    @classmethod
    def from_json(cls, raw: Any) -> Adoption:
        if not isinstance(raw, dict):
            raise RegistryError(f"an adoption is not an object: {raw!r}")
        try:
            previous = raw.get("previous")
            return cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                sha256=str(raw["sha256"]),
                path=str(raw["path"]),
                who=str(raw["who"]),
                when=str(raw["when"]),
                comparison=str(raw.get("comparison", "")),
                previous=dict(previous) if isinstance(previous, dict) else None,
            )
        except KeyError as exc:
            raise RegistryError(f"an adoption lacks {exc}") from exc


def registry_path() -> Path:
    return user_dir() / REGISTRY_FILE


def _read(path: Path) -> list[Adoption]:
    if not path.is_file():
        return []
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"the model registry {path} cannot be read: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise RegistryError(f"{path} is not a LeukGUI model registry")
    adoptions = raw.get("adoptions")
    if not isinstance(adoptions, list):
        raise RegistryError(f"{path}: 'adoptions' is not a list")
    return [Adoption.from_json(a) for a in adoptions]


def history(path: Path | None = None) -> list[Adoption]:
    """Every adoption, oldest first."""
    return _read(path or registry_path())


def current(path: Path | None = None) -> Adoption | None:
    """The model in use (the last adoption), or None when no model was ever adopted."""
    adoptions = history(path)
    return adoptions[-1] if adoptions else None


def is_adopted(info: BundleInfo, adoptions: list[Adoption] | None = None) -> bool:
    """Whether this exact model (by SHA-256) was ever adopted."""
    if adoptions is None:
        try:
            adoptions = history()
        except RegistryError:
            return False
    return any(a.sha256 == info.sha256 for a in adoptions)


def current_bundle_path(path: Path | None = None) -> Path | None:
    """The adopted model's file, when there is one and it is still there."""
    try:
        adoption = current(path)
    except RegistryError:
        return None
    if adoption is None or not Path(adoption.path).is_file():
        return None
    return Path(adoption.path)


def _number(value: Any, pct: bool = True) -> str:
    if not _real(value):
        return "n/a"
    return f"{100 * value:.1f}%" if pct else f"{value:.3g}"


def comparison_lines(manifest: dict[str, Any]) -> list[str]:
    """The parent-vs-new comparison of a fine-tuned model, as plain lines ([] without one)."""
    comparison = manifest.get("comparison")
    if not isinstance(comparison, dict):
        return []
    parent = comparison.get("parent", "the parent model")
    lines = [
        f"Balanced accuracy, parent ({parent}): "
        f"{_number(comparison.get('balanced_accuracy_parent'))}",
        f"Balanced accuracy, new model: {_number(comparison.get('balanced_accuracy_new'))}",
    ]
    difference = comparison.get("difference")
    text = f"Difference (new − parent): {_signed(difference)}"
    bounds = _interval(comparison)
    if bounds is not None:
        low, high = bounds
        text += f", interval {_signed(low)} to {_signed(high)}"
    else:
        text += " (no 95% interval: too few test subjects of each class)"
    lines.append(text)
    caution = adoption_caution(comparison)
    if caution:
        lines.append(caution)
    lines.append(f"McNemar p: {_number(comparison.get('mcnemar_p'), pct=False)}")
    if comparison.get("verdict"):
        lines.append(f"Verdict: {comparison['verdict']}")
    return lines


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _interval(comparison: dict[str, Any]) -> tuple[float, float] | None:
    """The recorded 95% interval of the difference, or None (null when too few subjects)."""
    interval = comparison.get("interval")
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(map(_real, interval)):
        return float(interval[0]), float(interval[1])
    return None


def adoption_caution(comparison: dict[str, Any]) -> str:
    """A warning to read before adopting ("" when there is none): the new model scored lower
    than its parent on the same cells, or its gain is not shown by the interval."""
    difference = comparison.get("difference")
    if not _real(difference):
        return "CAUTION: the two models could not be compared on the same cells."
    if difference < 0:
        return (
            "CAUTION: the new model scored LOWER than its parent on the same test cells; "
            "keep the parent unless you know why."
        )
    bounds = _interval(comparison)
    if bounds is None:
        return "CAUTION: too few test subjects to show that the new model is better."
    if bounds[0] <= 0:
        return "CAUTION: the interval includes no difference: the gain may be chance."
    return ""


def _signed(value: Any) -> str:
    if not _real(value):
        return "n/a"
    return f"{100 * value:+.1f} points"


def comparison_summary(manifest: dict[str, Any]) -> str:
    """The verdict recorded with an adoption."""
    comparison = manifest.get("comparison")
    if isinstance(comparison, dict) and comparison.get("verdict"):
        return str(comparison["verdict"])
    return NO_COMPARISON


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + _LOCK_TIMEOUT_S
    while True:
        try:
            fd = try_lock(folder / LOCK_FILE)
        except OSError as exc:
            raise RegistryError(f"cannot write the model registry in {folder}: {exc}") from exc
        if fd is not None:
            break
        if time.monotonic() >= deadline:
            raise RegistryError(
                "the model registry is busy (another LeukGUI is writing it); "
                "try again in a moment. Nothing was changed"
            )
        time.sleep(_LOCK_POLL_S)
    try:
        yield
    finally:
        unlock(fd)


def adopt(
    bundle: BundleInfo | str | Path,
    who: str,
    comparison: str | None = None,
    *,
    path: Path | None = None,
) -> Adoption:
    """Record that `bundle` is the model in use from now on, adopted by `who`.

    The file is verified first (weights against the manifest); a file that is gone, damaged,
    or whose SHA-256 is not the one the caller showed (a `BundleInfo` read earlier) is refused
    with RegistryError and nothing is recorded. `comparison` is the verdict shown to the
    person; by default the one recorded in the model file (or a note that there is none).
    """
    who = " ".join(str(who).split())
    if not who:
        raise RegistryError("say who adopts the model (a reviewer's name); nothing was changed")
    file = Path(bundle.path if isinstance(bundle, BundleInfo) else bundle)
    if not file.is_file():
        raise RegistryError(f"the model file {file} is gone; nothing was changed")
    try:
        loaded = load_bundle(file, keras=False)
    except (BundleError, OSError) as exc:
        raise RegistryError(f"{file.name} cannot be adopted: {exc}; nothing was changed") from exc
    if isinstance(bundle, BundleInfo) and loaded.sha256 != bundle.sha256:
        raise RegistryError(
            f"{file.name} has changed since it was shown (SHA-256 {loaded.sha256[:12]}… is not "
            f"{bundle.sha256[:12]}…); look at it again before adopting it. Nothing was changed"
        )
    registry = path or registry_path()
    with _locked(registry.parent):
        adoptions = _read(registry)
        before = adoptions[-1] if adoptions else None
        adoption = Adoption(
            name=loaded.name,
            version=loaded.version,
            sha256=loaded.sha256,
            path=str(file.absolute()),
            who=who,
            when=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            comparison=comparison or comparison_summary(loaded.manifest),
            previous=(
                {"name": before.name, "version": before.version, "sha256": before.sha256}
                if before is not None
                else None
            ),
        )
        data = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "adoptions": [asdict(a) for a in [*adoptions, adoption]],
        }
        text = json.dumps(data, indent=2, ensure_ascii=False)
        atomic_write(registry, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return adoption
