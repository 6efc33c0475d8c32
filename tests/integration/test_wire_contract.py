"""proto/ is the contract: the generated classes must be fresh, and every message must mean the
same on the wire as Beam's own. Beam's classes declare the same protobuf names as ours, so they
are loaded in a helper interpreter (tests/integration/beam_wire_peer.py)."""

import base64
import filecmp
import json
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor

from beamjobs.api import artifact_api_pb2, endpoints_pb2, job_api_pb2, pipeline_pb2
from tests.integration.conftest import ROOT

PEER = Path(__file__).with_name("beam_wire_peer.py")
# Fields that are opaque bytes here and messages in Beam, with a valid serialized sample.
_OPAQUE_SAMPLES = {
    "pipeline": pipeline_pb2.Pipeline(
        root_transform_ids=["t"], requirements=["r"]
    ).SerializeToString(),
    # A MonitoringInfo with urn (1) and type (2) set.
    "attempted": b"\x0a\x0bbeam:metric\x12\x04type",
    "committed": b"\x0a\x0bbeam:metric\x12\x04type",
}


def test_generated_code_matches_proto(tmp_path):
    subprocess.run(["make", "-s", "proto", f"PROTO_OUT={tmp_path}"], cwd=ROOT, check=True)
    generated = ROOT / "layers" / "beamjobs" / "api"
    fresh = tmp_path / "beamjobs" / "api"
    names = sorted(p.name for p in fresh.iterdir())
    assert names, "make proto generated nothing"
    match, mismatch, errors = filecmp.cmpfiles(generated, fresh, names, shallow=False)
    assert not mismatch and not errors, (
        f"stale generated code, run `make proto`: {mismatch + errors}"
    )


def _fill(message, depth=0):
    """Set every field of `message` to a recognisable value (one level of nesting per field)."""
    for field in message.DESCRIPTOR.fields:
        repeated = field.is_repeated
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry or depth > 2:
                continue
            if field.message_type.full_name.startswith("google.protobuf."):
                target = getattr(message, field.name)
                if field.message_type.name == "Struct":
                    target.update({"beam:option:job_name:v1": "x", "n": 2.0})
                else:
                    target.FromNanoseconds(1_700_000_000_123_000_000)
                continue
            target = (
                getattr(message, field.name).add() if repeated else getattr(message, field.name)
            )
            _fill(target, depth + 1)
            if field.containing_oneof is not None:
                break  # one member of a oneof
            continue
        if field.type == descriptor.FieldDescriptor.TYPE_BYTES:
            value = _OPAQUE_SAMPLES.get(field.name, b"\x01bytes")
        elif field.type == descriptor.FieldDescriptor.TYPE_STRING:
            value = f"{field.name}-value"
        elif field.type == descriptor.FieldDescriptor.TYPE_BOOL:
            value = True
        elif field.type == descriptor.FieldDescriptor.TYPE_ENUM:
            value = field.enum_type.values[-1].number
        else:
            value = 7
        if repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)
    return message


def _our_messages():
    for module in (job_api_pb2, artifact_api_pb2, endpoints_pb2):
        for name, message_type in module.DESCRIPTOR.message_types_by_name.items():
            yield message_type.full_name, getattr(module, name)


def test_every_message_round_trips_through_beams_classes():
    ours = dict(_our_messages())
    samples = {
        name: {
            "bytes": base64.b64encode(_fill(cls()).SerializeToString()).decode(),
            "fields": [field.name for field in cls.DESCRIPTOR.fields],
        }
        for name, cls in ours.items()
    }
    peer = subprocess.run(
        [sys.executable, str(PEER)],
        input=json.dumps(samples),
        capture_output=True,
        text=True,
        check=True,
    )
    answers = json.loads(peer.stdout)
    assert set(answers) == set(ours)
    for name, answer in answers.items():
        assert answer["unknown_fields"] == 0, f"Beam does not know some of our fields of {name}"
        assert answer["missing_fields"] == [], (
            f"{name} lacks Beam's fields {answer['missing_fields']}"
        )
        original = ours[name].FromString(base64.b64decode(samples[name]["bytes"]))
        assert ours[name].FromString(base64.b64decode(answer["reserialized"])) == original, name


@pytest.mark.parametrize(
    "full_name",
    [
        "org.apache.beam.model.job_management.v1.JobService",
        "org.apache.beam.model.job_management.v1.ArtifactStagingService",
        "org.apache.beam.model.job_management.v1.ArtifactRetrievalService",
    ],
)
def test_services_keep_beams_method_paths(full_name):
    services = {
        **job_api_pb2.DESCRIPTOR.services_by_name,
        **artifact_api_pb2.DESCRIPTOR.services_by_name,
    }
    assert full_name in {s.full_name for s in services.values()}
