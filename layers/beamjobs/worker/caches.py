"""The worker's caches on a machine (artifacts by sha256, the environments standing in for SDK
images): the user's own. Nothing here imports Beam (`make stand-ins` builds environments with
the system's Python)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_directory(kind: str = "artifacts") -> Path:
    """Where a worker caches things of this kind when its settings do not say: under the user's
    own cache directory ($XDG_CACHE_HOME, else ~/.cache). A path in the shared /tmp could be
    made first by another user of the machine, who would then choose what jobs run."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "beamjobs" / kind


def owned_directory(path: Path) -> Path:
    """`path`, made (for this user alone) if absent; refused unless this user owns it and no
    one else may write in it (what is cached there is run)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = path.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o022:
        raise PermissionError(
            f"the cache {path} is not this user's alone (owner uid {status.st_uid}, mode "
            f"{oct(status.st_mode & 0o777)}): what is cached there is run; remove it, or give "
            "another directory (BEAMJOBS_ARTIFACT_CACHE, BEAMJOBS_ENVIRONMENT_CACHE)"
        )
    return path
