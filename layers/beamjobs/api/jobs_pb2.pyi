import datetime

from beamjobs.api import job_api_pb2 as _job_api_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "name_prefix", "created_after", "created_before", "owner", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[_job_api_pb2.JobState.Enum]
    name_prefix: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    owner: str
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[_job_api_pb2.JobState.Enum, str]]] = ..., name_prefix: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., owner: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobSummary]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class JobSummary(_message.Message):
    __slots__ = ("job_id", "job_name", "state", "state_time", "created_at", "started_at", "ended_at", "owner", "engine", "upstream_job_id", "failure")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    job_name: str
    state: _job_api_pb2.JobState.Enum
    state_time: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    owner: str
    engine: str
    upstream_job_id: str
    failure: str
    def __init__(self, job_id: _Optional[str] = ..., job_name: _Optional[str] = ..., state: _Optional[_Union[_job_api_pb2.JobState.Enum, str]] = ..., state_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., owner: _Optional[str] = ..., engine: _Optional[str] = ..., upstream_job_id: _Optional[str] = ..., failure: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobDetail(_message.Message):
    __slots__ = ("summary", "run_duration", "history", "environments", "artifacts", "worker", "bounded", "unstaged", "failure", "failed_step")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    RUN_DURATION_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    BOUNDED_FIELD_NUMBER: _ClassVar[int]
    UNSTAGED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    FAILED_STEP_FIELD_NUMBER: _ClassVar[int]
    summary: JobSummary
    run_duration: _duration_pb2.Duration
    history: _containers.RepeatedCompositeFieldContainer[_job_api_pb2.JobStateEvent]
    environments: _containers.RepeatedCompositeFieldContainer[Environment]
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    worker: WorkerSize
    bounded: bool
    unstaged: _containers.RepeatedScalarFieldContainer[str]
    failure: str
    failed_step: str
    def __init__(self, summary: _Optional[_Union[JobSummary, _Mapping]] = ..., run_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., history: _Optional[_Iterable[_Union[_job_api_pb2.JobStateEvent, _Mapping]]] = ..., environments: _Optional[_Iterable[_Union[Environment, _Mapping]]] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., worker: _Optional[_Union[WorkerSize, _Mapping]] = ..., bounded: _Optional[bool] = ..., unstaged: _Optional[_Iterable[str]] = ..., failure: _Optional[str] = ..., failed_step: _Optional[str] = ...) -> None: ...

class Environment(_message.Message):
    __slots__ = ("id", "urn", "container_image")
    ID_FIELD_NUMBER: _ClassVar[int]
    URN_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    urn: str
    container_image: str
    def __init__(self, id: _Optional[str] = ..., urn: _Optional[str] = ..., container_image: _Optional[str] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("environment_id", "staged_name", "sha256", "staged")
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STAGED_NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    STAGED_FIELD_NUMBER: _ClassVar[int]
    environment_id: str
    staged_name: str
    sha256: str
    staged: bool
    def __init__(self, environment_id: _Optional[str] = ..., staged_name: _Optional[str] = ..., sha256: _Optional[str] = ..., staged: _Optional[bool] = ...) -> None: ...

class WorkerSize(_message.Message):
    __slots__ = ("vcpu", "memory_mb")
    VCPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    vcpu: float
    memory_mb: int
    def __init__(self, vcpu: _Optional[float] = ..., memory_mb: _Optional[int] = ...) -> None: ...

class ListMessagesRequest(_message.Message):
    __slots__ = ("job_id", "minimum_importance", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    minimum_importance: _job_api_pb2.JobMessage.MessageImportance
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., minimum_importance: _Optional[_Union[_job_api_pb2.JobMessage.MessageImportance, str]] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMessagesResponse(_message.Message):
    __slots__ = ("messages", "next_page_token", "ended")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_job_api_pb2.JobMessage]
    next_page_token: str
    ended: bool
    def __init__(self, messages: _Optional[_Iterable[_Union[_job_api_pb2.JobMessage, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., ended: _Optional[bool] = ...) -> None: ...
