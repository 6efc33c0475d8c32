"""The blob store: its port's contract on both backends, and S3's memory of content-addressed
blobs."""

import io

import pytest
from botocore.exceptions import ClientError

from beamjobs.aws import blobs
from beamjobs.aws.blobs import S3BlobStore
from beamjobs.domain.blobs import BlobStore, content_key
from beamjobs.domain.errors import NotFound
from beamjobs.local.memory_blobs import MemoryBlobStore


class CountingS3:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.gets = 0

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:
        self.objects[Key] = Body

    def get_object(self, Bucket: str, Key: str) -> dict:
        self.gets += 1
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": Key}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}


def test_what_was_written_or_read_by_content_is_read_back_without_a_request():
    s3 = CountingS3()
    store = S3BlobStore(s3, "bucket")
    key = store.put_content("pipelines", b"pipeline")
    assert store.get(key) == b"pipeline" and s3.gets == 0

    s3.objects["options/sha256/abc"] = b"options"  # written by another process
    assert store.get("options/sha256/abc") == b"options"
    assert store.get("options/sha256/abc") == b"options"
    assert s3.gets == 1


def test_blobs_that_can_change_and_missing_ones_are_always_read():
    s3 = CountingS3()
    store = S3BlobStore(s3, "bucket")
    store.put("metrics/job-1", b"one")
    store.get("metrics/job-1")
    store.put("metrics/job-1", b"two")
    assert store.get("metrics/job-1") == b"two" and s3.gets == 2
    with pytest.raises(NotFound):
        store.get("pipelines/sha256/missing")
    with pytest.raises(NotFound):
        store.get("pipelines/sha256/missing")
    assert s3.gets == 4


def test_the_memory_keeps_the_most_recent_blobs_within_its_budget(monkeypatch):
    monkeypatch.setattr(blobs, "CACHE_BYTES", 10)
    s3 = CountingS3()
    store = S3BlobStore(s3, "bucket")
    first = store.put_content("p", b"aaaa")
    second = store.put_content("p", b"bbbb")
    store.get(first)  # now the most recent
    third = store.put_content("p", b"cccc")  # 12 bytes: the least recent (second) goes
    big = store.put_content("p", b"x" * 11)  # over the budget on its own: never kept
    assert [store.get(k) for k in (first, third)] == [b"aaaa", b"cccc"] and s3.gets == 0
    store.get(second)
    store.get(big)
    assert s3.gets == 2


@pytest.mark.parametrize("make", [lambda: S3BlobStore(CountingS3(), "bucket"), MemoryBlobStore])
def test_both_stores_keep_the_contract_of_the_port(make):
    # Given either backend of the blob store's port
    store = make()
    # When the same bytes are stored twice by content, and a blob by a key of its own
    first = store.put_content("pipelines", b"pipeline")
    second = store.put_content("pipelines", b"pipeline")
    store.put("metrics/job-1", b"one")
    store.put("metrics/job-1", b"two")
    # Then the content has one key, named by its sha256 under its kind, and reads back
    assert first == second == content_key("pipelines", b"pipeline")
    assert first.startswith("pipelines/sha256/") and store.get(first) == b"pipeline"
    # And a key of its own reads its latest bytes, and a missing one is NotFound
    assert store.get("metrics/job-1") == b"two"
    with pytest.raises(NotFound):
        store.get("options/sha256/missing")
    assert isinstance(store, BlobStore)
