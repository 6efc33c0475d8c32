"""The control plane (shim, handlers, executors) must run where neither apache-beam (the
worker's) nor moto (local mode's) is installed: the shim image and the Lambda layer."""

import subprocess
import sys
import tomllib
from pathlib import Path

CONTROL_PLANE = [
    "beamjobs.cli",
    "beamjobs.shim.server",
    "beamjobs.aws.stepfunctions",
    "beamjobs_functions.control.app",
    "beamjobs_functions.query.app",
    "beamjobs_functions.reconcile.app",
    "beamjobs_functions.worker.app",
    "beamjobs.local.executor",
]


def test_the_control_plane_imports_neither_beam_nor_moto():
    probe = (
        f"import importlib, sys\nfor m in {CONTROL_PLANE!r}: importlib.import_module(m)\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'apache_beam', 'moto'}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


def test_the_layer_installs_the_core_dependencies():
    root = Path(__file__).resolve().parents[2]
    core = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    layer = [
        line.strip()
        for line in (root / "layers" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert sorted(layer) == sorted(d for d in core if not d.startswith("PyYAML"))
