"""Two training workers on 127.0.0.1 (MultiWorkerMirroredStrategy) end with the same weights.

Each worker is a separate `leukgui train --strategy multiworker` process with its own
TF_CONFIG, exactly as on a cluster. The digest covers every weight, BatchNorm moving
statistics included (those are the ones that drift apart when nobody synchronises them).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from leukgui.core.synthetic import write_dataset

DIGEST = re.compile(r"weight arrays sha256 ([0-9a-f]{64})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_finish_with_identical_weights(tmp_path: Path) -> None:
    data = tmp_path / "cells"
    write_dataset(data, 16, 9, fmt="png", layout="cnmc", subjects=4, size=64)
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    procs = []
    for index in range(2):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        command = [
            sys.executable,
            "-m",
            "leukgui",
            "train",
            str(data),
            "--weights",
            "none",
            "--input-size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--strategy",
            "multiworker",
            "--out",
            str(tmp_path / f"out{index}"),
        ]
        procs.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    outputs = []
    for proc in procs:
        try:
            text, _ = proc.communicate(timeout=480)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a worker did not finish within 8 minutes")
        outputs.append(text.decode("utf-8", "replace"))
    for index, (proc, text) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"worker {index} failed:\n{text[-3000:]}"
        assert "2 replica(s)" in text, text[-2000:]
    digests = [DIGEST.search(text) for text in outputs]
    assert all(digests), outputs
    assert digests[0][1] == digests[1][1]
    # Only the chief (worker 0) writes into the folder it was given.
    assert len(list((tmp_path / "out0").glob("*.leukmodel"))) == 1
    assert not (tmp_path / "out1").exists()
