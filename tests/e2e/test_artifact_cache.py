"""The worker's artifact cache checks an entry's hash on every read: a cached file changed on
disk (by accident, or by another job of the machine) is fetched again, never run."""

import hashlib

from beamjobs.pipeline.artifacts import ArtifactLocation
from beamjobs.worker.artifacts import ArtifactCache


class Source:
    location = ArtifactLocation("bucket")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    def read(self, sha256: str):
        self.reads += 1
        yield self.data


def test_a_cached_artifact_changed_on_disk_is_fetched_again(tmp_path):
    data = b"the package's bytes"
    sha256 = hashlib.sha256(data).hexdigest()
    source, cache = Source(data), ArtifactCache(tmp_path / "artifacts")
    path = cache.fetch(sha256, source)
    assert cache.fetch(sha256, source) == path and source.reads == 1  # verified, kept
    path.write_bytes(b"import os; os.system('something else')")
    assert cache.fetch(sha256, source).read_bytes() == data
    assert source.reads == 2
