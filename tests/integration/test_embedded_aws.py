"""The embedded AWS: its fast serialization answers exactly what moto's own serializer answers,
its requests sent past Flask exactly what moto's Flask application answers, and it tells
listeners about item puts."""

import io
import json
import os
import select
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from moto.core import responses
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.test import EnvironBuilder

from beamjobs import runtime
from beamjobs.aws import clients
from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message
from beamjobs.domain.states import JobState
from beamjobs.local import moto_tuning
from beamjobs.local.embedded import EmbeddedAwsProcess, local_settings
from tests.integration.conftest import TEMPLATE, make_job
from tests.jobstates import advance, leased


def test_fast_answers_equal_moto_serializer_answers(monkeypatch, settings, stores):
    compared: Counter[str] = Counter()

    def both(handler, action_result):
        fast = moto_tuning.plain_json(handler, action_result)
        generic = moto_tuning.generic_serialized(handler, action_result)
        if fast is not None:
            assert json.loads(fast[2]) == json.loads(generic[2]), handler._get_action()
            assert fast[:2] == (generic[0], {**generic[1], **fast[1]})
            compared[handler._get_action()] += 1
        return generic

    monkeypatch.setattr(responses.BaseResponse, "serialized", both)
    streams = clients.client("dynamodbstreams", settings)
    iterator = _from_the_start(streams, stores)

    stores.jobs.create(make_job("j1"))
    Jobs(stores.jobs).stage("j1", leased(stores.jobs, "j1"), "pipelines/other", ["a.whl"])
    advance(stores.jobs, "j1", JobState.STARTING)
    Jobs(stores.jobs).beat("j1")
    advance(
        stores.jobs, "j1", JobState.FAILED, messages=[Message("JOB_MESSAGE_ERROR", "boom ✗", 1.5)]
    )
    stores.jobs.events("j1")
    stores.jobs.list_jobs()
    db = clients.client("dynamodb", settings)
    db.get_item(TableName=settings.table_name, Key={"pk": {"S": "job#j1"}, "sk": {"S": "job"}})
    db.delete_item(TableName=settings.table_name, Key={"pk": {"S": "x"}, "sk": {"S": "y"}})
    records = streams.get_records(ShardIterator=iterator)["Records"]

    assert records and all("ApproximateCreationDateTime" in r["dynamodb"] for r in records)
    assert set(compared) == {
        "PutItem",
        "UpdateItem",
        "Query",
        "GetItem",
        "DeleteItem",
        "GetShardIterator",
        "GetRecords",
    }


def _answer(app, target: str, body: dict) -> tuple:
    """What `app` answers a JSON-protocol request: status, headers (but the request's id and
    date, which differ by request, and CORS's, which Flask adds) and body."""
    environ = EnvironBuilder(
        method="POST",
        base_url="http://127.0.0.1:4566",
        headers={
            "X-Amz-Target": target,
            "Content-Type": "application/x-amz-json-1.0",
            "Authorization": "AWS4-HMAC-SHA256 Credential=embedded/20261207/us-east-1/dynamodb/"
            "aws4_request, SignedHeaders=host, Signature=0",
        },
        data=json.dumps(body),
    ).get_environ()
    started: list = []
    content = b"".join(app(environ, lambda status, headers, *_: started.append((status, headers))))
    [(status, headers)] = started
    varying = ("x-amzn-requestid", "date", "access-control-allow-origin")
    return status, sorted((n.lower(), v) for n, v in headers if n.lower() not in varying), content


def test_requests_past_flask_answer_what_moto_flask_application_answers(
    embedded_aws, settings, stores
):
    stores.jobs.create(make_job("j1"))
    key = {"pk": {"S": "job#j1"}, "sk": {"S": "job"}}
    table = settings.table_name
    generic = DomainDispatcherApplication(create_backend_app)
    direct = moto_tuning.DirectJsonTargets(generic)
    requests = {
        "DynamoDB_20120810.GetItem": {"TableName": table, "Key": key},
        "DynamoDB_20120810.Query": {
            "TableName": table,
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": "job#j1"}},
        },
        "DynamoDB_20120810.DescribeTable": {"TableName": table},
        # Refused: answered as errors, nothing written.
        "DynamoDB_20120810.PutItem": {
            "TableName": table,
            "Item": key,
            "ConditionExpression": "attribute_not_exists(pk)",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        },
        "DynamoDB_20120810.UpdateItem": {
            "TableName": table,
            "Key": key,
            "UpdateExpression": "SET = nothing",
        },
        "DynamoDB_20120810.DeleteTable": {"TableName": "no-such-table"},
        "DynamoDBStreams_20120810.ListStreams": {"TableName": table},
    }
    for target, body in requests.items():
        fast, slow = _answer(direct, target, body), _answer(generic, target, body)
        assert fast == slow, target
        refused = target.endswith(("PutItem", "UpdateItem", "DeleteTable"))
        assert fast[0].startswith("400") == refused, (target, fast)
    # Flask lets any web page read every answer (CORS's "*"); past it, a page in a browser on
    # this machine cannot read the tables.
    environ = EnvironBuilder(
        method="POST", headers={"X-Amz-Target": "DynamoDB_20120810.ListTables"}
    )
    headers: list = []
    direct(environ.get_environ(), lambda status, sent, *_: headers.extend(sent))
    assert "access-control-allow-origin" not in {name.lower() for name, _ in headers}


def test_item_puts_and_only_puts_ring_the_put_listeners(
    monkeypatch, embedded_aws, settings, stores
):
    monkeypatch.setattr(embedded_aws._app, "put_listeners", [])  # this test's listener only
    puts: list[None] = []
    embedded_aws.on_item_put(lambda: puts.append(None))
    stores.jobs.create(make_job("j1"))  # the first event and the record
    assert len(puts) == 2
    stores.jobs.get("j1")
    stores.jobs.events("j1")
    Jobs(stores.jobs).beat("j1")  # an update
    stores.blobs.put_content("pipeline", b"not a table")
    assert len(puts) == 2
    advance(stores.jobs, "j1", JobState.STARTING)  # the event; the projection is an update
    assert len(puts) == 3


def test_the_embedded_aws_process_rings_its_doorbell_on_item_puts(tmp_path):
    process = EmbeddedAwsProcess(TEMPLATE)
    settings = local_settings(process.start())
    try:
        jobs = runtime.stores(settings).jobs
        jobs.create(make_job("j1"))
        ready, _, _ = select.select([process.doorbell], [], [], 5)
        assert ready and os.read(process.doorbell, 100)
        jobs.get("j1")
        ready, _, _ = select.select([process.doorbell], [], [], 0.5)
        assert not ready, "a read rang the doorbell"
    finally:
        process.stop()


def test_the_embedded_aws_process_ends_with_the_process_that_started_it(tmp_path):
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from beamjobs.local.embedded import EmbeddedAwsProcess\n"
            f"EmbeddedAwsProcess(Path({str(TEMPLATE)!r})).start()\n"
            "print('up', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout.readline().strip() == "up"
    [child] = [
        int(pid)
        for pid in Path(f"/proc/{starter.pid}/task/{starter.pid}/children").read_text().split()
    ]
    starter.kill()  # it cannot stop its child itself
    starter.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and "Z" not in _state(child):
        assert time.monotonic() < deadline, "the embedded AWS outlived its parent"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "Z"


def test_partition_queries_answer_what_moto_answers_from_the_whole_table(
    monkeypatch, settings, stores
):
    from moto.dynamodb.models.table import Table

    for job in ("j1", "j2", "j3"):
        stores.jobs.create(make_job(job))
        for n in range(4):
            Jobs(stores.jobs).say(job, [Message("JOB_MESSAGE_BASIC", f"{job} {n}", 1.0)])
    db = clients.client("dynamodb", settings)

    def answers():
        pages = []
        for job in ("j1", "j2", "j3", "missing"):
            for forward in (True, False):
                query = {
                    "TableName": settings.table_name,
                    "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
                    "ExpressionAttributeValues": {
                        ":pk": {"S": f"job#{job}"},
                        ":lo": {"S": "ev#000000000002"},
                        ":hi": {"S": "ev#~"},
                    },
                    "ScanIndexForward": forward,
                    "Limit": 2,
                }
                while True:  # every page, as JobStore.events reads them
                    page = db.query(**query)
                    pages.append((page["Items"], page.get("LastEvaluatedKey")))
                    if "LastEvaluatedKey" not in page:
                        break
                    query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        pages.append(db.query(**_list_query(settings))["Items"])  # an index: unchanged path
        return pages

    assert Table.query is moto_tuning.partition_query
    fast = answers()
    monkeypatch.setattr(Table, "query", moto_tuning.generic_query)
    assert fast == answers()
    assert any(items for items, _ in fast[:-1]) and fast[-1]


def _list_query(settings):
    return {
        "TableName": settings.table_name,
        "IndexName": "gsi1",
        "KeyConditionExpression": "gsi1pk = :p",
        "ExpressionAttributeValues": {":p": {"S": "jobs"}},
    }


def _from_the_start(streams, stores) -> str:
    """An iterator over the jobs table's stream from its first record."""
    arn = stores.jobs.stream_arn()
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    return streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]


def test_a_get_records_answer_stops_at_a_megabyte_as_dynamodb_streams_does(settings, stores):
    streams = clients.client("dynamodbstreams", settings)
    iterator = _from_the_start(streams, stores)
    db = clients.client("dynamodb", settings)
    for n in range(7):  # ~2.1 MB of records
        item = {"pk": {"S": f"big#{n}"}, "sk": {"S": "x"}, "text": {"S": "t" * 300_000}}
        db.put_item(TableName=settings.table_name, Item=item)

    pages = []
    while sum(pages) < 7:
        page = streams.get_records(ShardIterator=iterator)
        pages.append(len(page["Records"]))
        iterator = page["NextShardIterator"]

    assert pages == [3, 3, 1]


def test_only_the_newest_shard_iterators_are_kept(monkeypatch, settings, stores):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    monkeypatch.setattr(moto_tuning, "MAX_SHARD_ITERATORS", 5)
    streams = clients.client("dynamodbstreams", settings)
    iterator = _from_the_start(streams, stores)
    stores.jobs.create(make_job("j1"))
    read = []
    for _ in range(20):  # a feed polling: each answer's iterator is the next call's
        page = streams.get_records(ShardIterator=iterator)
        read.extend(page["Records"])
        iterator = page["NextShardIterator"]
    advance(stores.jobs, "j1", JobState.STARTING)
    read.extend(streams.get_records(ShardIterator=iterator)["Records"])

    backend = dynamodbstreams_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    assert len(backend.shard_iterators) == 5
    assert len(read) == 4  # the two items of create, then the event and the projection


def test_a_request_naming_a_host_that_is_not_loopback_is_refused(embedded_aws):
    """A page in a browser here may reach the embedded AWS through a name of its own that
    resolves to 127.0.0.1 (DNS rebinding): its requests name that host, and are refused."""
    import http.client
    from urllib.parse import urlsplit

    port = urlsplit(embedded_aws.endpoint_url).port

    def status(host: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/", headers={"Host": host})
            return connection.getresponse().status
        finally:
            connection.close()

    assert status("rebound.example:80") == 403
    assert status(f"attacker.example:{port}") == 403
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"bucket.localhost:{port}"):
        assert status(host) != 403, host


def test_a_long_poll_waits_beside_other_requests_and_returns_with_the_message(embedded_aws):
    """moto waits out a ReceiveMessage's WaitTimeSeconds inside the request; the embedded AWS,
    which answers one request at a time, would then answer nothing else meanwhile."""
    import threading

    import boto3

    def client(service):
        return boto3.client(
            service,
            region_name="us-east-1",
            endpoint_url=embedded_aws.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    sqs = client("sqs")
    queue = sqs.create_queue(QueueName="long-polls")["QueueUrl"]
    received: list[float] = []
    started = time.monotonic()

    def poll():
        answer = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=10)
        received.append(time.monotonic() - started)
        received.append(len(answer.get("Messages", [])))

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)
    # Other requests are answered meanwhile, at once.
    before = time.monotonic()
    client("s3").list_buckets()
    assert time.monotonic() - before < 1
    sqs.send_message(QueueUrl=queue, MessageBody="offer")
    poller.join(10)
    assert received[1] == 1
    assert received[0] < 2  # as soon as the message was sent, not at the poll's end
    # And an empty long poll waits its time out.
    before = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)
    assert time.monotonic() - before >= 1


def test_a_journal_keeps_objects_items_and_multipart_uploads_across_a_restart(tmp_path):
    """The embedded AWS with a journal (what `make run` keeps across restarts): a new process
    asks every write again, multipart uploads included (whose ids moto draws at random)."""
    import boto3
    from boto3.s3.transfer import TransferConfig

    journal = tmp_path / "journal"
    big = os.urandom(11 * 1024 * 1024)  # three parts of an upload

    def client(service, endpoint):
        return boto3.client(
            service,
            region_name="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    first = EmbeddedAwsProcess(TEMPLATE, journal)
    try:
        endpoint = first.start()
        s3 = client("s3", endpoint)
        s3.upload_fileobj(
            io.BytesIO(big),
            "beamjobs-artifacts",
            "artifacts/big",
            Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, use_threads=False),
        )
        s3.put_object(Bucket="beamjobs-artifacts", Key="small", Body=b"small")
        s3.put_object(Bucket="beamjobs-artifacts", Key="gone", Body=b"gone")
        s3.delete_object(Bucket="beamjobs-artifacts", Key="gone")
        client("dynamodb", endpoint).put_item(
            TableName="beamjobs-jobs", Item={"pk": {"S": "job#kept"}, "sk": {"S": "job"}}
        )
    finally:
        first.stop()

    second = EmbeddedAwsProcess(TEMPLATE, journal)
    try:
        endpoint = second.start()
        s3 = client("s3", endpoint)
        assert s3.get_object(Bucket="beamjobs-artifacts", Key="artifacts/big")["Body"].read() == big
        assert s3.get_object(Bucket="beamjobs-artifacts", Key="small")["Body"].read() == b"small"
        listed = s3.list_objects_v2(Bucket="beamjobs-artifacts")["Contents"]
        assert "gone" not in {o["Key"] for o in listed}
        item = client("dynamodb", endpoint).get_item(
            TableName="beamjobs-jobs", Key={"pk": {"S": "job#kept"}, "sk": {"S": "job"}}
        )
        assert "Item" in item
    finally:
        second.stop()


def test_a_journal_of_many_superseded_writes_is_written_anew_as_its_state(tmp_path):
    """A start that replays a journal of mostly superseded writes (COMPACT_AT_LEAST and more)
    writes it anew as the state they left, which the next start replays alone; a large object
    goes again as a multipart upload."""
    import boto3

    from beamjobs.local.journal import COMPACT_AT_LEAST

    journal = tmp_path / "journal"
    key = {"pk": {"S": "counter"}, "sk": {"S": "job"}}
    large = os.urandom(9 * 1024 * 1024)  # past boto3's multipart threshold (8 MiB)

    def clients(endpoint):
        return (
            boto3.client(
                service,
                region_name="us-east-1",
                endpoint_url=endpoint,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            for service in ("dynamodb", "s3")
        )

    first = EmbeddedAwsProcess(TEMPLATE, journal)
    try:
        dynamodb, s3 = clients(first.start())
        s3.put_object(Bucket="beamjobs-artifacts", Key="kept", Body=b"kept", ContentType="x/y")
        s3.put_object(Bucket="beamjobs-artifacts", Key="large", Body=large)
        for _ in range(COMPACT_AT_LEAST):
            dynamodb.update_item(
                TableName="beamjobs-jobs",
                Key=key,
                UpdateExpression="ADD n :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
    finally:
        first.stop()
    grown = journal.stat().st_size

    for start in ("compacting", "replaying the compacted journal"):
        process = EmbeddedAwsProcess(TEMPLATE, journal)
        try:
            dynamodb, s3 = clients(process.start())
            item = dynamodb.get_item(TableName="beamjobs-jobs", Key=key)["Item"]
            assert item["n"] == {"N": str(COMPACT_AT_LEAST)}, start
            kept = s3.get_object(Bucket="beamjobs-artifacts", Key="kept")
            assert (kept["Body"].read(), kept["ContentType"]) == (b"kept", "x/y"), start
            again = s3.get_object(Bucket="beamjobs-artifacts", Key="large")["Body"].read()
            assert again == large, start
        finally:
            process.stop()
        # The objects' bytes, and little else: the 5,000 updates are one item now.
        assert journal.stat().st_size < len(large) + 100_000 < grown - 4_000_000, start
        assert not journal.with_name(journal.name + ".compacting").exists()
