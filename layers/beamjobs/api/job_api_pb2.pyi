import datetime

from beamjobs.api import endpoints_pb2 as _endpoints_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PrepareJobRequest(_message.Message):
    __slots__ = ("pipeline", "pipeline_options", "job_name")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    pipeline: bytes
    pipeline_options: _struct_pb2.Struct
    job_name: str
    def __init__(self, pipeline: _Optional[bytes] = ..., pipeline_options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., job_name: _Optional[str] = ...) -> None: ...

class PrepareJobResponse(_message.Message):
    __slots__ = ("preparation_id", "artifact_staging_endpoint", "staging_session_token")
    PREPARATION_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_STAGING_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    STAGING_SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    preparation_id: str
    artifact_staging_endpoint: _endpoints_pb2.ApiServiceDescriptor
    staging_session_token: str
    def __init__(self, preparation_id: _Optional[str] = ..., artifact_staging_endpoint: _Optional[_Union[_endpoints_pb2.ApiServiceDescriptor, _Mapping]] = ..., staging_session_token: _Optional[str] = ...) -> None: ...

class RunJobRequest(_message.Message):
    __slots__ = ("preparation_id", "retrieval_token")
    PREPARATION_ID_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    preparation_id: str
    retrieval_token: str
    def __init__(self, preparation_id: _Optional[str] = ..., retrieval_token: _Optional[str] = ...) -> None: ...

class RunJobResponse(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: JobState.Enum
    def __init__(self, state: _Optional[_Union[JobState.Enum, str]] = ...) -> None: ...

class DrainJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DrainJobResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: JobState.Enum
    def __init__(self, state: _Optional[_Union[JobState.Enum, str]] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "job_name", "pipeline_options", "state")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    job_name: str
    pipeline_options: _struct_pb2.Struct
    state: JobState.Enum
    def __init__(self, job_id: _Optional[str] = ..., job_name: _Optional[str] = ..., pipeline_options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., state: _Optional[_Union[JobState.Enum, str]] = ...) -> None: ...

class GetJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetJobsResponse(_message.Message):
    __slots__ = ("job_info",)
    JOB_INFO_FIELD_NUMBER: _ClassVar[int]
    job_info: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, job_info: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class GetJobStateRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobStateEvent(_message.Message):
    __slots__ = ("state", "timestamp")
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    state: JobState.Enum
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[JobState.Enum, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetJobPipelineRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobPipelineResponse(_message.Message):
    __slots__ = ("pipeline",)
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    pipeline: bytes
    def __init__(self, pipeline: _Optional[bytes] = ...) -> None: ...

class JobMessagesRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobMessage(_message.Message):
    __slots__ = ("message_id", "time", "importance", "message_text")
    class MessageImportance(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MESSAGE_IMPORTANCE_UNSPECIFIED: _ClassVar[JobMessage.MessageImportance]
        JOB_MESSAGE_DEBUG: _ClassVar[JobMessage.MessageImportance]
        JOB_MESSAGE_DETAILED: _ClassVar[JobMessage.MessageImportance]
        JOB_MESSAGE_BASIC: _ClassVar[JobMessage.MessageImportance]
        JOB_MESSAGE_WARNING: _ClassVar[JobMessage.MessageImportance]
        JOB_MESSAGE_ERROR: _ClassVar[JobMessage.MessageImportance]
    MESSAGE_IMPORTANCE_UNSPECIFIED: JobMessage.MessageImportance
    JOB_MESSAGE_DEBUG: JobMessage.MessageImportance
    JOB_MESSAGE_DETAILED: JobMessage.MessageImportance
    JOB_MESSAGE_BASIC: JobMessage.MessageImportance
    JOB_MESSAGE_WARNING: JobMessage.MessageImportance
    JOB_MESSAGE_ERROR: JobMessage.MessageImportance
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TEXT_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    time: str
    importance: JobMessage.MessageImportance
    message_text: str
    def __init__(self, message_id: _Optional[str] = ..., time: _Optional[str] = ..., importance: _Optional[_Union[JobMessage.MessageImportance, str]] = ..., message_text: _Optional[str] = ...) -> None: ...

class JobMessagesResponse(_message.Message):
    __slots__ = ("message_response", "state_response")
    MESSAGE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    STATE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    message_response: JobMessage
    state_response: JobStateEvent
    def __init__(self, message_response: _Optional[_Union[JobMessage, _Mapping]] = ..., state_response: _Optional[_Union[JobStateEvent, _Mapping]] = ...) -> None: ...

class JobState(_message.Message):
    __slots__ = ()
    class Enum(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSPECIFIED: _ClassVar[JobState.Enum]
        STOPPED: _ClassVar[JobState.Enum]
        RUNNING: _ClassVar[JobState.Enum]
        DONE: _ClassVar[JobState.Enum]
        FAILED: _ClassVar[JobState.Enum]
        CANCELLED: _ClassVar[JobState.Enum]
        UPDATED: _ClassVar[JobState.Enum]
        DRAINING: _ClassVar[JobState.Enum]
        DRAINED: _ClassVar[JobState.Enum]
        STARTING: _ClassVar[JobState.Enum]
        CANCELLING: _ClassVar[JobState.Enum]
        UPDATING: _ClassVar[JobState.Enum]
    UNSPECIFIED: JobState.Enum
    STOPPED: JobState.Enum
    RUNNING: JobState.Enum
    DONE: JobState.Enum
    FAILED: JobState.Enum
    CANCELLED: JobState.Enum
    UPDATED: JobState.Enum
    DRAINING: JobState.Enum
    DRAINED: JobState.Enum
    STARTING: JobState.Enum
    CANCELLING: JobState.Enum
    UPDATING: JobState.Enum
    def __init__(self) -> None: ...

class GetJobMetricsRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobMetricsResponse(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: MetricResults
    def __init__(self, metrics: _Optional[_Union[MetricResults, _Mapping]] = ...) -> None: ...

class MetricResults(_message.Message):
    __slots__ = ("attempted", "committed")
    ATTEMPTED_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    attempted: _containers.RepeatedScalarFieldContainer[bytes]
    committed: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, attempted: _Optional[_Iterable[bytes]] = ..., committed: _Optional[_Iterable[bytes]] = ...) -> None: ...

class DescribePipelineOptionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PipelineOptionType(_message.Message):
    __slots__ = ()
    class Enum(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STRING: _ClassVar[PipelineOptionType.Enum]
        BOOLEAN: _ClassVar[PipelineOptionType.Enum]
        INTEGER: _ClassVar[PipelineOptionType.Enum]
        NUMBER: _ClassVar[PipelineOptionType.Enum]
        ARRAY: _ClassVar[PipelineOptionType.Enum]
        OBJECT: _ClassVar[PipelineOptionType.Enum]
    STRING: PipelineOptionType.Enum
    BOOLEAN: PipelineOptionType.Enum
    INTEGER: PipelineOptionType.Enum
    NUMBER: PipelineOptionType.Enum
    ARRAY: PipelineOptionType.Enum
    OBJECT: PipelineOptionType.Enum
    def __init__(self) -> None: ...

class PipelineOptionDescriptor(_message.Message):
    __slots__ = ("name", "type", "description", "default_value", "group")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: PipelineOptionType.Enum
    description: str
    default_value: str
    group: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[PipelineOptionType.Enum, str]] = ..., description: _Optional[str] = ..., default_value: _Optional[str] = ..., group: _Optional[str] = ...) -> None: ...

class DescribePipelineOptionsResponse(_message.Message):
    __slots__ = ("options",)
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    options: _containers.RepeatedCompositeFieldContainer[PipelineOptionDescriptor]
    def __init__(self, options: _Optional[_Iterable[_Union[PipelineOptionDescriptor, _Mapping]]] = ...) -> None: ...
