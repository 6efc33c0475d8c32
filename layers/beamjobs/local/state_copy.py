"""The embedded AWS's state, counted and put again through its own endpoint: how a journal is
compacted (beamjobs.local.journal), each write of the copy recorded like any other. Items of
every table, objects of every bucket (with their content type and metadata, streamed: a large
one goes again as a multipart upload, a part in memory at a time); the tables and the bucket
themselves come from the template at every start, and multipart uploads left unfinished are
not kept."""

from __future__ import annotations

from typing import Any

from boto3.s3.transfer import TransferConfig

# One request at a time: the embedded AWS answers one at a time anyway.
_ONE_AT_A_TIME = TransferConfig(use_threads=False)


def live_count(dynamodb: Any, s3: Any) -> int:
    """How many items and objects the embedded AWS holds (boto3 clients of it)."""
    count = 0
    for table in dynamodb.list_tables()["TableNames"]:
        for page in dynamodb.get_paginator("scan").paginate(TableName=table, Select="COUNT"):
            count += page["Count"]
    for bucket in s3.list_buckets()["Buckets"]:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            count += page.get("KeyCount", 0)
    return count


def put_again(dynamodb: Any, s3: Any) -> None:
    """Put every item and object of the embedded AWS (boto3 clients of it) again, as it is."""
    for table in dynamodb.list_tables()["TableNames"]:
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                dynamodb.put_item(TableName=table, Item=item)
    for bucket in s3.list_buckets()["Buckets"]:
        name = bucket["Name"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for listed in page.get("Contents", []):
                found = s3.get_object(Bucket=name, Key=listed["Key"])
                s3.upload_fileobj(
                    found["Body"],
                    name,
                    listed["Key"],
                    ExtraArgs={
                        "ContentType": found.get("ContentType", "binary/octet-stream"),
                        "Metadata": found.get("Metadata", {}),
                    },
                    Config=_ONE_AT_A_TIME,
                )
