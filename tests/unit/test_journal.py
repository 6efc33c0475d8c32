"""The embedded AWS's journal (beamjobs.local.journal): writes recorded in the order they were
made and asked again in that order; a last entry cut short by a kill is dropped."""

from __future__ import annotations

import contextlib
import io

from beamjobs.local.journal import Journal, is_write

S3_SCOPE = "AWS4-HMAC-SHA256 Credential=AKID/20261207/us-east-1/s3/aws4_request, SignedHeaders=host"


def _request(method, path, body=b"", **headers):
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        **{f"HTTP_{name.upper()}": value for name, value in headers.items()},
    }


class Recorder:
    """An application that keeps what it was asked."""

    def __init__(self):
        self.asked = []

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.asked.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], body))
        start_response("200 OK", [])
        return [b"ok"]


def test_writes_are_dynamodb_item_writes_and_s3_puts_posts_and_deletes():
    assert is_write(_request("POST", "/", x_amz_target="DynamoDB_20120810.PutItem"))
    assert is_write(_request("POST", "/", x_amz_target="DynamoDB_20120810.TransactWriteItems"))
    assert not is_write(_request("POST", "/", x_amz_target="DynamoDB_20120810.Query"))
    assert not is_write(_request("POST", "/", x_amz_target="DynamoDBStreams_20120810.GetRecords"))
    assert is_write(_request("PUT", "/bucket/key", authorization=S3_SCOPE))
    assert is_write(_request("DELETE", "/bucket/key", authorization=S3_SCOPE))
    assert not is_write(_request("GET", "/bucket/key", authorization=S3_SCOPE))
    sts = S3_SCOPE.replace("/s3/", "/sts/")
    assert not is_write(_request("POST", "/", authorization=sts))  # an identity proof


def test_writes_are_asked_again_in_order_and_nothing_else(tmp_path):
    journal = Journal(tmp_path / "journal")
    first = Recorder()
    app = journal.wrap(first)
    app(_request("PUT", "/b/before-start", b"0", authorization=S3_SCOPE), lambda *a: None)
    journal.start()
    app(_request("PUT", "/b/one", b"1" * 70_000, authorization=S3_SCOPE), lambda *a: None)
    app(_request("GET", "/b/one", authorization=S3_SCOPE), lambda *a: None)
    app(_request("POST", "/", b"{}", x_amz_target="DynamoDB_20120810.PutItem"), lambda *a: None)
    assert [path for _, path, _ in first.asked] == ["/b/before-start", "/b/one", "/b/one", "/"]

    again = Recorder()
    assert Journal(tmp_path / "journal").replay(again) == 2
    assert again.asked == [("PUT", "/b/one", b"1" * 70_000), ("POST", "/", b"{}")]


def test_a_last_entry_cut_short_is_dropped_and_the_journal_goes_on_after_the_rest(tmp_path):
    path = tmp_path / "journal"
    journal = Journal(path)
    app = journal.wrap(Recorder())
    journal.start()
    app(_request("PUT", "/b/kept", b"kept", authorization=S3_SCOPE), lambda *a: None)
    app(_request("PUT", "/b/cut", b"x" * 1000, authorization=S3_SCOPE), lambda *a: None)
    whole = path.read_bytes()
    path.write_bytes(whole[:-10])  # killed while writing the last entry

    again = Recorder()
    assert Journal(path).replay(again) == 1
    assert [path for _, path, _ in again.asked] == ["/b/kept"]
    resumed = Journal(path)
    resumed.replay(Recorder())
    app = resumed.wrap(Recorder())
    resumed.start()
    app(_request("DELETE", "/b/kept", authorization=S3_SCOPE), lambda *a: None)
    third = Recorder()
    assert Journal(path).replay(third) == 2
    assert [(m, p) for m, p, _ in third.asked] == [("PUT", "/b/kept"), ("DELETE", "/b/kept")]


def _put(app, key):
    app(_request("PUT", f"/b/{key}", key.encode(), authorization=S3_SCOPE), lambda *a: None)


def test_a_compacted_journal_holds_only_what_was_written_again(tmp_path):
    path = tmp_path / "journal"
    journal = Journal(path, compact_at_least=3)
    app = journal.wrap(Recorder())
    journal.start()
    for key in ("one", "one", "one", "two"):
        _put(app, key)
    assert not journal.worth_compacting(2, lambda: 0)  # too few writes to bother
    assert not journal.worth_compacting(4, lambda: 2)  # not twice the state's size
    assert journal.worth_compacting(4, lambda: 1)

    journal.compact(lambda: [_put(app, key) for key in ("one", "two")])
    _put(app, "three")  # and it goes on recording there

    again = Recorder()
    assert Journal(path).replay(again) == 3
    assert [path for _, path, _ in again.asked] == ["/b/one", "/b/two", "/b/three"]


def test_a_compaction_cut_short_leaves_the_journal_as_it_was(tmp_path):
    path = tmp_path / "journal"
    journal = Journal(path)
    app = journal.wrap(Recorder())
    journal.start()
    _put(app, "kept")

    def killed():
        _put(app, "half")
        raise KeyboardInterrupt  # the process ends before the new journal is whole

    with contextlib.suppress(KeyboardInterrupt):
        journal.compact(killed)
    partial = path.with_name(path.name + ".compacting")
    assert partial.exists()

    again = Recorder()
    assert Journal(path).replay(again) == 1
    assert [path for _, path, _ in again.asked] == ["/b/kept"]
    assert not partial.exists()  # dropped by that start
