from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Pipeline(_message.Message):
    __slots__ = ("components", "root_transform_ids", "requirements")
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    ROOT_TRANSFORM_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    components: Components
    root_transform_ids: _containers.RepeatedScalarFieldContainer[str]
    requirements: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, components: _Optional[_Union[Components, _Mapping]] = ..., root_transform_ids: _Optional[_Iterable[str]] = ..., requirements: _Optional[_Iterable[str]] = ...) -> None: ...

class Components(_message.Message):
    __slots__ = ("transforms", "pcollections", "environments")
    class TransformsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: PTransform
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[PTransform, _Mapping]] = ...) -> None: ...
    class PcollectionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: PCollection
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[PCollection, _Mapping]] = ...) -> None: ...
    class EnvironmentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Environment
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Environment, _Mapping]] = ...) -> None: ...
    TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    PCOLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    transforms: _containers.MessageMap[str, PTransform]
    pcollections: _containers.MessageMap[str, PCollection]
    environments: _containers.MessageMap[str, Environment]
    def __init__(self, transforms: _Optional[_Mapping[str, PTransform]] = ..., pcollections: _Optional[_Mapping[str, PCollection]] = ..., environments: _Optional[_Mapping[str, Environment]] = ...) -> None: ...

class IsBounded(_message.Message):
    __slots__ = ()
    class Enum(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSPECIFIED: _ClassVar[IsBounded.Enum]
        UNBOUNDED: _ClassVar[IsBounded.Enum]
        BOUNDED: _ClassVar[IsBounded.Enum]
    UNSPECIFIED: IsBounded.Enum
    UNBOUNDED: IsBounded.Enum
    BOUNDED: IsBounded.Enum
    def __init__(self) -> None: ...

class PTransform(_message.Message):
    __slots__ = ("spec", "subtransforms", "inputs", "outputs", "unique_name", "environment_id")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SUBTRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_NAME_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    spec: FunctionSpec
    subtransforms: _containers.RepeatedScalarFieldContainer[str]
    inputs: _containers.ScalarMap[str, str]
    outputs: _containers.ScalarMap[str, str]
    unique_name: str
    environment_id: str
    def __init__(self, spec: _Optional[_Union[FunctionSpec, _Mapping]] = ..., subtransforms: _Optional[_Iterable[str]] = ..., inputs: _Optional[_Mapping[str, str]] = ..., outputs: _Optional[_Mapping[str, str]] = ..., unique_name: _Optional[str] = ..., environment_id: _Optional[str] = ...) -> None: ...

class FunctionSpec(_message.Message):
    __slots__ = ("urn", "payload")
    URN_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    urn: str
    payload: bytes
    def __init__(self, urn: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class PCollection(_message.Message):
    __slots__ = ("unique_name", "is_bounded")
    UNIQUE_NAME_FIELD_NUMBER: _ClassVar[int]
    IS_BOUNDED_FIELD_NUMBER: _ClassVar[int]
    unique_name: str
    is_bounded: IsBounded.Enum
    def __init__(self, unique_name: _Optional[str] = ..., is_bounded: _Optional[_Union[IsBounded.Enum, str]] = ...) -> None: ...

class Environment(_message.Message):
    __slots__ = ("urn", "payload", "capabilities", "dependencies")
    URN_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    urn: str
    payload: bytes
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    dependencies: _containers.RepeatedCompositeFieldContainer[ArtifactInformation]
    def __init__(self, urn: _Optional[str] = ..., payload: _Optional[bytes] = ..., capabilities: _Optional[_Iterable[str]] = ..., dependencies: _Optional[_Iterable[_Union[ArtifactInformation, _Mapping]]] = ...) -> None: ...

class ArtifactInformation(_message.Message):
    __slots__ = ("type_urn", "type_payload", "role_urn", "role_payload")
    TYPE_URN_FIELD_NUMBER: _ClassVar[int]
    TYPE_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ROLE_URN_FIELD_NUMBER: _ClassVar[int]
    ROLE_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    type_urn: str
    type_payload: bytes
    role_urn: str
    role_payload: bytes
    def __init__(self, type_urn: _Optional[str] = ..., type_payload: _Optional[bytes] = ..., role_urn: _Optional[str] = ..., role_payload: _Optional[bytes] = ...) -> None: ...

class ArtifactFilePayload(_message.Message):
    __slots__ = ("path", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    sha256: str
    def __init__(self, path: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class ArtifactUrlPayload(_message.Message):
    __slots__ = ("url", "sha256")
    URL_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    url: str
    sha256: str
    def __init__(self, url: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class EmbeddedFilePayload(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ArtifactStagingToRolePayload(_message.Message):
    __slots__ = ("staged_name",)
    STAGED_NAME_FIELD_NUMBER: _ClassVar[int]
    staged_name: str
    def __init__(self, staged_name: _Optional[str] = ...) -> None: ...

class DockerPayload(_message.Message):
    __slots__ = ("container_image",)
    CONTAINER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    container_image: str
    def __init__(self, container_image: _Optional[str] = ...) -> None: ...

class ProcessPayload(_message.Message):
    __slots__ = ("os", "arch", "command", "env")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    os: str
    arch: str
    command: str
    env: _containers.ScalarMap[str, str]
    def __init__(self, os: _Optional[str] = ..., arch: _Optional[str] = ..., command: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ...) -> None: ...
