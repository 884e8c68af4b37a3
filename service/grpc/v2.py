"""The Open Inference Protocol V2 over gRPC (``inference.GRPCInferenceService``), as Triton
speaks it, so ``tritonclient.grpc`` (sync and asyncio) works unchanged.

Input: one tensor ``points`` ``[N, 2]``, FP32 or FP64, as typed ``contents`` or as
``raw_input_contents`` (little-endian, row-major). Outputs ``probability`` ``[N, 1]`` FP32
and ``class_id`` ``[N, 1]`` INT64, raw when the inputs came raw (as Triton answers), else
typed; ``outputs`` selects some of them.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from service.codec import to_points
from service.errors import InvalidInput, Unavailable
from service.grpc.calls import DataPlaneServicer, infer, require_name, rpc, version_of
from xor_dnn import __version__
from xor_dnn.modelstore import INPUT_NAME, OUTPUT_NAME

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE = DESCRIPTOR.full_name
CLASS_OUTPUT = "class_id"
OUTPUT_TYPES = {OUTPUT_NAME: "FP32", CLASS_OUTPUT: "INT64"}
_INPUT_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_CONTENTS_FIELD = {"FP32": "fp32_contents", "FP64": "fp64_contents"}


def _method(name: str) -> str:
    return f"/{SERVICE}/{name}"


class InferenceServicer(DataPlaneServicer, service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Liveness, readiness, metadata and inference; the other Triton RPCs (repository,
    statistics, trace, shared memory) answer UNIMPLEMENTED."""

    DESCRIPTOR = DESCRIPTOR

    @rpc(_method("ServerLive"))
    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    @rpc(_method("ServerReady"))
    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.dataplane.ready)

    @rpc(_method("ModelReady"))
    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = self.dataplane.model(require_name(request.name, "name"))
        version = version_of(request.version, "version")
        if version is not None:
            model.registry.get(version)
        return pb.ModelReadyResponse(ready=model.ready and not self.dataplane.stopping)

    @rpc(_method("ServerMetadata"))
    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(name="xor-dnn", version=__version__, extensions=[])

    @rpc(_method("ModelMetadata"))
    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = self.dataplane.model(require_name(request.name, "name"))
        version = version_of(request.version, "version")
        if version is None:
            versions = model.registry.versions
            if not versions:
                raise Unavailable(f"model '{request.name}' has no version loaded yet")
        else:
            versions = [model.registry.get(version).version]
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[str(v) for v in versions],
            platform="tensorflow_savedmodel",
            inputs=[pb.ModelMetadataResponse.TensorMetadata(
                name=INPUT_NAME, datatype="FP32", shape=[-1, 2]
            )],
            outputs=[
                pb.ModelMetadataResponse.TensorMetadata(name=name, datatype=kind, shape=[-1, 1])
                for name, kind in OUTPUT_TYPES.items()
            ],
        )  # fmt: skip

    @rpc(_method("ModelInfer"), capped=True)
    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        dataplane = self.dataplane
        model = dataplane.model(require_name(request.model_name, "model_name"))
        version = version_of(request.model_version, "model_version")
        points, raw = self._points(request)
        wanted = _requested_outputs(request)
        result = await infer(
            dataplane, points, version=version, protocol="v2", context=context, model=model
        )
        n = int(points.shape[0])
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=str(result.version), id=request.id
        )
        for name in wanted:
            out = response.outputs.add(name=name, datatype=OUTPUT_TYPES[name], shape=[n, 1])
            if name == OUTPUT_NAME:
                values: NDArray[Any] = result.probabilities.astype("<f4", copy=False)
                if not raw:
                    out.contents.fp32_contents.extend(values.tolist())
            else:
                values = result.class_ids.astype("<i8", copy=False)
                if not raw:
                    out.contents.int64_contents.extend(values.tolist())
            if raw:
                response.raw_output_contents.append(values.tobytes())
        return response

    def _points(self, request: Any) -> tuple[NDArray[np.float32], bool]:
        """The ``[N, 2]`` input and whether it came as raw bytes."""
        if len(request.inputs) != 1:
            raise InvalidInput(
                f"inputs: the model takes exactly 1 input ('{INPUT_NAME}'), "
                f"got {len(request.inputs)}",
                field="inputs",
            )
        tensor = request.inputs[0]
        if tensor.name != INPUT_NAME:
            raise InvalidInput(
                f"inputs[0].name: unknown input '{tensor.name[:60]}'; the model's input is "
                f"'{INPUT_NAME}'",
                field="inputs[0].name",
            )
        dtype = _INPUT_DTYPES.get(tensor.datatype)
        if dtype is None:
            raise InvalidInput(
                f"inputs[0].datatype: '{tensor.datatype[:20]}' not supported; use FP32 or FP64",
                field="inputs[0].datatype",
            )
        shape = list(tensor.shape)
        if len(shape) != 2 or shape[1] != 2:
            raise InvalidInput(
                f"inputs[0].shape: must be [N, 2], got {shape[:8]}", field="inputs[0].shape"
            )
        n = shape[0]
        self.dataplane.check_points(n, "inputs[0].shape[0]")
        needed = n * 2
        raw_inputs = request.raw_input_contents
        if raw_inputs:
            if len(raw_inputs) != 1:
                raise InvalidInput(
                    f"raw_input_contents: 1 entry per input (1), got {len(raw_inputs)}",
                    field="raw_input_contents",
                )
            if tensor.HasField("contents"):
                raise InvalidInput(
                    "inputs[0].contents: given together with raw_input_contents; send one",
                    field="inputs[0].contents",
                )
            data = raw_inputs[0]
            if len(data) != needed * dtype.itemsize:
                raise InvalidInput(
                    f"raw_input_contents[0]: shape {shape} {tensor.datatype} needs "
                    f"{needed * dtype.itemsize} bytes, got {len(data)}",
                    field="raw_input_contents[0]",
                )
            return to_points(np.frombuffer(data, dtype=dtype)), True
        field = _CONTENTS_FIELD[tensor.datatype]
        values = getattr(tensor.contents, field)
        if len(values) != needed:
            raise InvalidInput(
                f"inputs[0].contents.{field}: shape {shape} needs {needed} values, "
                f"got {len(values)}",
                field=f"inputs[0].contents.{field}",
            )
        return to_points(np.array(values, dtype=dtype)), False


def _requested_outputs(request: Any) -> list[str]:
    if not request.outputs:
        return list(OUTPUT_TYPES)
    wanted = []
    for i, out in enumerate(request.outputs):
        if out.name not in OUTPUT_TYPES:
            raise InvalidInput(
                f"outputs[{i}].name: unknown output '{out.name[:60]}'; outputs are "
                f"{', '.join(OUTPUT_TYPES)}",
                field=f"outputs[{i}].name",
            )
        if "classification" in out.parameters:
            raise InvalidInput(
                f"outputs[{i}].parameters.classification: not supported",
                field=f"outputs[{i}].parameters",
            )
        wanted.append(out.name)
    return wanted
