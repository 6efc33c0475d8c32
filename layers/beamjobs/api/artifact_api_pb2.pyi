from beamjobs.api import pipeline_pb2 as _pipeline_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResolveArtifactsRequest(_message.Message):
    __slots__ = ("artifacts", "preferred_urns")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_URNS_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[_pipeline_pb2.ArtifactInformation]
    preferred_urns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, artifacts: _Optional[_Iterable[_Union[_pipeline_pb2.ArtifactInformation, _Mapping]]] = ..., preferred_urns: _Optional[_Iterable[str]] = ...) -> None: ...

class ResolveArtifactsResponse(_message.Message):
    __slots__ = ("replacements",)
    REPLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    replacements: _containers.RepeatedCompositeFieldContainer[_pipeline_pb2.ArtifactInformation]
    def __init__(self, replacements: _Optional[_Iterable[_Union[_pipeline_pb2.ArtifactInformation, _Mapping]]] = ...) -> None: ...

class GetArtifactRequest(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _pipeline_pb2.ArtifactInformation
    def __init__(self, artifact: _Optional[_Union[_pipeline_pb2.ArtifactInformation, _Mapping]] = ...) -> None: ...

class GetArtifactResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ArtifactRequestWrapper(_message.Message):
    __slots__ = ("resolve_artifact", "get_artifact")
    RESOLVE_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    GET_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    resolve_artifact: ResolveArtifactsRequest
    get_artifact: GetArtifactRequest
    def __init__(self, resolve_artifact: _Optional[_Union[ResolveArtifactsRequest, _Mapping]] = ..., get_artifact: _Optional[_Union[GetArtifactRequest, _Mapping]] = ...) -> None: ...

class ArtifactResponseWrapper(_message.Message):
    __slots__ = ("staging_token", "is_last", "resolve_artifact_response", "get_artifact_response")
    STAGING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    IS_LAST_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_ARTIFACT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    GET_ARTIFACT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    staging_token: str
    is_last: bool
    resolve_artifact_response: ResolveArtifactsResponse
    get_artifact_response: GetArtifactResponse
    def __init__(self, staging_token: _Optional[str] = ..., is_last: _Optional[bool] = ..., resolve_artifact_response: _Optional[_Union[ResolveArtifactsResponse, _Mapping]] = ..., get_artifact_response: _Optional[_Union[GetArtifactResponse, _Mapping]] = ...) -> None: ...
