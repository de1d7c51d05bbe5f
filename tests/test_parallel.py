"""ordered_map and the engine's parallel decoding: input order, errors in place, bounded
look-ahead, stopping, and the same results whatever the number of threads."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import cv2
import pytest

from leukgui.core.engine import AnalysisOptions, iter_run
from leukgui.core.parallel import default_threads, ordered_map
from leukgui.core.results import CellResult, FileError
from leukgui.core.synthetic import write_dataset


def _slow_square(x: int) -> int:
    time.sleep(random.uniform(0.0, 0.01))  # later items often finish first
    if x == 7:
        raise ValueError("seven is broken")
    return x * x


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_results_come_in_input_order_with_errors_in_place(threads: int) -> None:
    out = list(ordered_map(_slow_square, range(20), threads))
    assert [item for item, _, _ in out] == list(range(20))
    for item, result, error in out:
        if item == 7:
            assert result is None and isinstance(error, ValueError)
        else:
            assert error is None and result == item * item


def test_look_ahead_is_bounded() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(x: int) -> int:
        with lock:
            started.append(x)
        return x

    stream = ordered_map(work, range(100), 2, ahead=3)
    first = next(stream)
    time.sleep(0.05)  # let the pool run as far as it may
    assert first[0] == 0
    assert len(started) <= 4  # the item handed on and at most 3 more
    stream.close()


def test_stop_drops_the_rest_and_closing_ends_the_pool_threads() -> None:
    stop = threading.Event()
    seen = []
    for item, _, _ in ordered_map(lambda x: x, range(1000), 2, stop=stop):
        seen.append(item)
        if item == 5:
            stop.set()
    assert seen == list(range(6))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        t.name.startswith("leukgui-decode_") for t in threading.enumerate()
    ):
        time.sleep(0.01)
    assert not any(t.name.startswith("leukgui-decode_") for t in threading.enumerate())


def test_default_threads_is_one_per_core_at_most_four(monkeypatch) -> None:
    import leukgui.core.parallel as parallel

    for cores, expected in ((None, 1), (1, 1), (2, 2), (4, 4), (16, 4)):
        monkeypatch.setattr(parallel.os, "cpu_count", lambda c=cores: c)
        assert default_threads() == expected


def test_the_engine_gives_the_same_run_with_one_or_two_decode_threads(
    tiny_bundle, tmp_path: Path
) -> None:
    """Cells, fields and broken files, in one folder: order, labels and boxes must not
    depend on how many files are decoded at once."""
    from leukgui.core.engine import Analyzer
    from leukgui.core.fields import make_synthetic_field

    write_dataset(tmp_path / "cells", n_per_class=3, seed=31, fmt="png", size=96)
    fields_dir = tmp_path / "fields"
    fields_dir.mkdir()
    for seed in range(3):
        rgb, _ = make_synthetic_field(seed)
        cv2.imwrite(str(fields_dir / f"field{seed}.png"), rgb[..., ::-1])
    (fields_dir / "broken.png").write_bytes(b"not an image")
    analyzer = Analyzer(tiny_bundle)

    def run(threads: int) -> list[tuple]:
        options = AnalysisOptions(batch_size=2, decode_threads=threads)
        events = list(iter_run([tmp_path], analyzer, options))
        rows = []
        for outcome in events[-1].run.outcomes:
            if isinstance(outcome, CellResult):
                rows.append((str(outcome.path), outcome.box, round(outcome.p_all, 5)))
            else:
                assert isinstance(outcome, FileError)
                rows.append((str(outcome.path), outcome.kind))
        return rows

    one, two = run(1), run(2)
    assert one == two
    assert any(len(r) == 2 for r in one)  # the broken file is a row, in its place
    assert sum(r[1] is not None for r in one if len(r) == 3) >= 3  # field cells have boxes


def test_decode_threads_must_be_a_positive_whole_number() -> None:
    with pytest.raises(ValueError, match="decode_threads"):
        AnalysisOptions(decode_threads=0)
