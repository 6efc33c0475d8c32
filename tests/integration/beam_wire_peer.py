"""Wire peer for test_wire_contract: reads {full message name: {"bytes": base64, "fields": our
field names}} on stdin, parses each with apache_beam's own classes, and answers what Beam made of
it: fields it did not know, fields of Beam's that we lack, and its own serialization."""

import base64
import json
import sys

from apache_beam.portability.api import beam_artifact_api_pb2, beam_job_api_pb2, endpoints_pb2
from google.protobuf import symbol_database
from google.protobuf.unknown_fields import UnknownFieldSet

_ = (beam_artifact_api_pb2, beam_job_api_pb2, endpoints_pb2)  # registers Beam's messages


def _count_unknown(message):
    count = len(UnknownFieldSet(message))
    for field, value in message.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        for item in value if field.is_repeated else [value]:
            count += _count_unknown(item)
    return count


def main():
    database = symbol_database.Default()
    answers = {}
    for name, sample in json.load(sys.stdin).items():
        message = database.GetSymbol(name)()
        message.ParseFromString(base64.b64decode(sample["bytes"]))
        answers[name] = {
            "unknown_fields": _count_unknown(message),
            "missing_fields": [
                f.name for f in message.DESCRIPTOR.fields if f.name not in sample["fields"]
            ],
            "reserialized": base64.b64encode(message.SerializeToString()).decode(),
        }
    json.dump(answers, sys.stdout)


main()
