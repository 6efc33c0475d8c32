"""The embedded AWS's journal: what it was asked to write, kept in a file and asked again when it
starts, so that `make run` keeps its jobs (their records, logs, messages and metrics, pipelines
and artifacts) across a restart.

Why a journal of requests, rather than the alternatives:
- moto keeps its state in Python objects and has no persistence of its own. Pickling its
  backends at exit would lose everything on a SIGKILL, and ties the state file to moto's
  internals, which change between versions.
- moto's own request recorder records every request, reads and the change feed's polling
  included (thousands a minute), and replays them all.
- DynamoDB Local needs Java and a download from outside the package registries, for the table
  alone (the bucket would still need keeping).
A request is AWS's own API, stable across moto versions; replaying the writes in order rebuilds
the same table, stream and bucket, conditional writes that were refused included (they are
refused again). Each write is appended before it is answered and flushed to the operating
system at once, so a SIGKILL loses nothing answered; an fsync every second bounds what a
machine's crash loses to the last second.

S3's multipart uploads are named by an id the upload's creation answers, which moto draws at
random: the journal notes the id each creation answered, and a replay asks the upload's parts
and completion with the id the replayed creation answered instead.

Every write is kept, artifacts' bytes included, so the journal grows with every job. Once it
holds at least COMPACT_AT_LEAST writes, and more than twice as many as the state they leave has
items and objects, a start writes it anew as that state (`compact`: each item and object put
once, beamjobs.local.state_copy). The old journal stands until the new one is whole.
`make clean-state` forgets it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, quote, unquote

logger = logging.getLogger(__name__)

# DynamoDB's writes (the table's; the tables themselves are made from the template at start).
_DYNAMODB_WRITES = frozenset(
    f"DynamoDB_20120810.{operation}"
    for operation in (
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
    )
)
_S3_WRITES = frozenset({"PUT", "POST", "DELETE"})
# The request's parts a replay needs: moto routes by host and credential scope.
_KEPT = (
    "REQUEST_METHOD",
    "PATH_INFO",
    "QUERY_STRING",
    "CONTENT_TYPE",
    "SERVER_NAME",
    "SERVER_PORT",
)
_HEADER = struct.Struct(">II")  # the entry's metadata length, then its body's
_FSYNC_SECONDS = 1.0
# The journal's name in a state directory (`beamjobs serve --state-dir`).
JOURNAL = "embedded-aws.journal"
# A journal replayed at start is written anew as the state it leaves once it holds at least this
# many writes, and more than twice as many as that state's items and objects: a replay asks
# about 500 writes a second, so a start never spends minutes on superseded ones.
COMPACT_AT_LEAST = 5000

# A note in the journal (not a request): the upload id a CreateMultipartUpload answered.
_NOTE = "JOURNAL_NOTE"
_UPLOAD_ID = re.compile(rb"<UploadId>([^<]+)</UploadId>")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _creates_upload(environ: dict[str, Any]) -> bool:
    """Whether an S3 write is a CreateMultipartUpload (POST ?uploads)."""
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return environ.get("REQUEST_METHOD") == "POST" and "uploads" in query


def _upload_id(answer: bytes) -> str | None:
    found = _UPLOAD_ID.search(answer)
    return found.group(1).decode() if found else None


def _renamed_uploads(query: str, uploads: dict[str, str]) -> str:
    """`query` with its upload id (if any) renamed as `uploads` says."""

    def renamed(found: re.Match[str]) -> str:
        first = unquote(found.group(1))
        return f"uploadId={quote(uploads.get(first, first), safe='')}"

    return re.sub(r"(?<![^&])uploadId=([^&]*)", renamed, query)


def is_write(environ: dict[str, Any]) -> bool:
    """Whether a request writes: a DynamoDB item write, or an S3 PUT, POST or DELETE."""
    if environ.get("HTTP_X_AMZ_TARGET") in _DYNAMODB_WRITES:
        return True
    if environ.get("REQUEST_METHOD") not in _S3_WRITES:
        return False
    scope = environ.get("HTTP_AUTHORIZATION", "") + environ.get("QUERY_STRING", "")
    return "/s3/aws4_request" in scope or "%2Fs3%2Faws4_request" in scope


class Journal:
    """The journal at `path`. `wrap` the application (inside what answers one request at a
    time, so that writes are recorded in the order they are made), `replay` what the journal
    holds through that, then `start` recording."""

    def __init__(self, path: Path, *, compact_at_least: int = COMPACT_AT_LEAST) -> None:
        self._path = path
        self._compact_at_least = compact_at_least
        self._file: BinaryIO | None = None
        self._lock = threading.Lock()
        self._dirty = threading.Event()

    @property
    def _compacting(self) -> Path:
        return self._path.with_name(self._path.name + ".compacting")

    def worth_compacting(self, replayed: int, live: Callable[[], int]) -> bool:
        """Whether a journal that replayed `replayed` writes is worth writing anew as the
        state they left, which has `live()` items and objects (asked only if it may be)."""
        return replayed >= self._compact_at_least and replayed > 2 * live()

    def compact(self, write_again: Callable[[], None]) -> None:
        """Once started: replace the journal by the writes `write_again` makes, the state as it
        is put again (nothing else may write meanwhile). The old journal stands until the new
        one is whole and synced (then a rename): a process killed meanwhile keeps the old one,
        and its next start drops the partial one."""
        with self._lock:
            assert self._file is not None, "start() first"
            self._file.close()
            self._file = self._compacting.open("wb")
        write_again()
        with self._lock:
            self._file.flush()
            os.fsync(self._file.fileno())
            os.replace(self._compacting, self._path)
            directory = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a crash
            finally:
                os.close(directory)

    def replay(self, app: WsgiApp) -> int:
        """Ask `app` every write the journal holds, in order; how many. A last entry cut short
        (the process was killed while writing it) is dropped: it was never answered."""
        self._compacting.unlink(missing_ok=True)  # a compaction that never finished
        replayed = 0
        whole = 0  # where the entries read whole end
        # Upload ids as first answered → as answered in this replay.
        uploads: dict[str, str] = {}
        answered_now: str | None = None
        for metadata, body, end in self._entries():
            whole = end
            if _NOTE in metadata:
                if answered_now is not None:
                    uploads[metadata[_NOTE]["upload_id"]] = answered_now
                continue
            query = _renamed_uploads(metadata.get("QUERY_STRING", ""), uploads)
            environ = {
                **metadata,
                "QUERY_STRING": query,
                "wsgi.input": io.BytesIO(body),
                "CONTENT_LENGTH": str(len(body)),
                "wsgi.url_scheme": "http",
                "wsgi.errors": io.StringIO(),
            }
            try:
                answer = b"".join(app(environ, lambda *status: None))
            except Exception:  # one write moto cannot take again must not cost the rest
                logger.warning(
                    "could not ask %s %s again",
                    metadata.get("REQUEST_METHOD"),
                    metadata.get("PATH_INFO"),
                    exc_info=True,
                )
                continue
            if _creates_upload(environ):
                answered_now = _upload_id(answer)
            replayed += 1
        if self._path.exists() and self._path.stat().st_size != whole:
            with self._path.open("r+b") as cut:
                cut.truncate(whole)
        return replayed

    def _entries(self) -> Iterator[tuple[dict[str, Any], bytes, int]]:
        if not self._path.exists():
            return
        with self._path.open("rb") as journal:
            while True:
                header = journal.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return
                metadata_length, body_length = _HEADER.unpack(header)
                metadata = journal.read(metadata_length)
                body = journal.read(body_length)
                if len(metadata) < metadata_length or len(body) < body_length:
                    logger.warning("the journal's last write was cut short: dropped")
                    return
                yield json.loads(metadata), body, journal.tell()

    def start(self) -> None:
        """Record every write from now on."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._path.open("ab")
        threading.Thread(target=self._sync, name="journal-fsync", daemon=True).start()

    def wrap(self, app: WsgiApp) -> WsgiApp:
        """`app`, recording each write before it is asked (so before it is answered), once
        started."""

        def recording(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if self._file is None or not is_write(environ):
                return app(environ, start_response)
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            self._append(environ, body)
            asked = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
            if not _creates_upload(environ):
                return app(asked, start_response)
            answer = b"".join(app(asked, start_response))
            upload_id = _upload_id(answer)
            if upload_id is not None:
                self._note({"upload_id": upload_id})
            return [answer]

        return recording

    def _append(self, environ: dict[str, Any], body: bytes) -> None:
        self._write(
            {
                name: value
                for name, value in environ.items()
                if name in _KEPT or (name.startswith("HTTP_") and isinstance(value, str))
            },
            body,
        )

    def _note(self, note: dict[str, str]) -> None:
        self._write({_NOTE: note}, b"")

    def _write(self, metadata: dict[str, Any], body: bytes) -> None:
        encoded = json.dumps(metadata).encode()
        assert self._file is not None
        with self._lock:
            self._file.write(_HEADER.pack(len(encoded), len(body)) + encoded + body)
            self._file.flush()  # in the operating system's hands: a SIGKILL loses nothing
        self._dirty.set()

    def _sync(self) -> None:
        while True:
            self._dirty.wait()
            time.sleep(_FSYNC_SECONDS)
            self._dirty.clear()
            with self._lock:
                assert self._file is not None
                os.fsync(self._file.fileno())
