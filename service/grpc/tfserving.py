"""TensorFlow Serving's gRPC API: ``PredictionService`` (``Predict``, ``GetModelMetadata``)
and ``ModelService/GetModelStatus``, so the ``tensorflow-serving-api`` stubs work unchanged.

``Predict`` takes input ``points`` as a float tensor ``[N, 2]`` (``DT_FLOAT`` or
``DT_DOUBLE``, in ``tensor_content`` or ``float_val``/``double_val``) and answers
``probability`` ``[N, 1]`` in ``float_val``, as TensorFlow Serving itself does (clients read
``outputs["probability"].float_val`` or ``tf.make_ndarray``). The signature is
``serving_default`` (an empty name means it too).
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray
from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from service.codec import to_points
from service.errors import InvalidInput, NotFound
from service.grpc.calls import DataPlaneServicer, infer, require_name, rpc
from service.repository import ServedModel
from xor_dnn.modelstore import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME

PREDICTION = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
MODEL = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
PREDICTION_SERVICE = PREDICTION.full_name
MODEL_SERVICE = MODEL.full_name
_DTYPES: dict[int, tuple[np.dtype[Any], str]] = {
    types_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
}


class _Servicer(DataPlaneServicer):
    def _version(self, spec: Any) -> tuple[ServedModel, int | None]:
        """The model spec checked: the model of that name, version (or none), no label."""
        model = self.dataplane.model(require_name(spec.name, "model_spec.name"))
        if spec.version_label:
            raise NotFound(
                f"model_spec.version_label: '{spec.version_label[:40]}' not found: this server "
                "has no version labels; pin model_spec.version instead",
                field="model_spec.version_label",
            )
        if spec.HasField("version"):
            version = int(spec.version.value)
            model.registry.get(version)
            return model, version
        return model, None


def _check_signature(spec: Any) -> None:
    if spec.signature_name not in ("", SIGNATURE_NAME):
        raise InvalidInput(
            f"model_spec.signature_name: unknown signature '{spec.signature_name[:40]}'; the "
            f"model's signature is '{SIGNATURE_NAME}'",
            field="model_spec.signature_name",
        )


def _shape(*dims: int) -> Any:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )


class PredictionServicer(_Servicer, prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    """``Predict`` and ``GetModelMetadata``; Classify, Regress and MultiInference answer
    UNIMPLEMENTED (the model has a predict signature only)."""

    DESCRIPTOR = PREDICTION

    @rpc(f"/{PREDICTION_SERVICE}/Predict", capped=True)
    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        spec = request.model_spec
        model, version = self._version(spec)
        _check_signature(spec)
        for i, name in enumerate(request.output_filter):
            if name != OUTPUT_NAME:
                raise InvalidInput(
                    f"output_filter[{i}]: unknown output '{name[:60]}'; the output is "
                    f"'{OUTPUT_NAME}'",
                    field=f"output_filter[{i}]",
                )
        points = self._points(request)
        result = await infer(
            self.dataplane,
            points,
            version=version,
            protocol="tfserving",
            context=context,
            model=model,
        )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = result.version
        response.model_spec.signature_name = SIGNATURE_NAME
        out = response.outputs[OUTPUT_NAME]
        out.dtype = types_pb2.DT_FLOAT
        out.tensor_shape.CopyFrom(_shape(len(result.probabilities), 1))
        out.float_val.extend(result.probabilities.tolist())
        return response

    def _points(self, request: Any) -> NDArray[np.float32]:
        names = list(request.inputs)
        if names != [INPUT_NAME]:
            shown = ", ".join(f"'{n[:40]}'" for n in names[:4]) or "none"
            raise InvalidInput(
                f"inputs: the model takes exactly 1 input ('{INPUT_NAME}'), got {shown}",
                field="inputs",
            )
        field = f"inputs['{INPUT_NAME}']"
        tensor = request.inputs[INPUT_NAME]
        kind = _DTYPES.get(tensor.dtype)
        if kind is None:
            known = tensor.dtype in types_pb2.DataType.values()
            shown = types_pb2.DataType.Name(tensor.dtype) if known else str(tensor.dtype)
            raise InvalidInput(
                f"{field}.dtype: {shown} not supported; use DT_FLOAT or DT_DOUBLE",
                field=f"{field}.dtype",
            )
        dtype, values_field = kind
        dims = [d.size for d in tensor.tensor_shape.dim]
        if tensor.tensor_shape.unknown_rank or len(dims) != 2 or dims[1] != 2:
            raise InvalidInput(
                f"{field}.tensor_shape: must be [N, 2], got {dims[:8]}",
                field=f"{field}.tensor_shape",
            )
        n = dims[0]
        self.dataplane.check_points(n, f"{field}.tensor_shape.dim[0]")
        needed = n * 2
        if tensor.tensor_content:
            if len(tensor.tensor_content) != needed * dtype.itemsize:
                raise InvalidInput(
                    f"{field}.tensor_content: shape {dims} needs {needed * dtype.itemsize} "
                    f"bytes, got {len(tensor.tensor_content)}",
                    field=f"{field}.tensor_content",
                )
            return to_points(np.frombuffer(tensor.tensor_content, dtype=dtype))
        values = getattr(tensor, values_field)
        if len(values) != needed:
            raise InvalidInput(
                f"{field}.{values_field}: shape {dims} needs {needed} values, got {len(values)}",
                field=f"{field}.{values_field}",
            )
        return to_points(np.array(values, dtype=dtype))

    @rpc(f"/{PREDICTION_SERVICE}/GetModelMetadata")
    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        spec = request.model_spec
        model, version = self._version(spec)
        if list(request.metadata_field) != ["signature_def"]:
            raise InvalidInput(
                "metadata_field: must be ['signature_def'] (the only metadata served), got "
                f"{list(request.metadata_field)[:4]}",
                field="metadata_field",
            )
        served = model.registry.get(version)
        signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
        signature.inputs[INPUT_NAME].CopyFrom(
            meta_graph_pb2.TensorInfo(
                name=f"serving_default_{INPUT_NAME}:0",
                dtype=types_pb2.DT_FLOAT,
                tensor_shape=_shape(-1, 2),
            )
        )
        signature.outputs[OUTPUT_NAME].CopyFrom(meta_graph_pb2.TensorInfo(
            name="StatefulPartitionedCall:0", dtype=types_pb2.DT_FLOAT,
            tensor_shape=_shape(-1, 1),
        ))  # fmt: skip
        signatures = get_model_metadata_pb2.SignatureDefMap()
        signatures.signature_def[SIGNATURE_NAME].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = served.version
        response.metadata["signature_def"].Pack(signatures)
        return response


class ModelServicer(_Servicer, model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    """``GetModelStatus``; ``HandleReloadConfigRequest`` answers UNIMPLEMENTED (versions come
    from the model folder, not from a pushed config)."""

    DESCRIPTOR = MODEL

    @rpc(f"/{MODEL_SERVICE}/GetModelStatus")
    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model, version = self._version(request.model_spec)
        versions = model.registry.versions if version is None else [version]
        available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return get_model_status_pb2.GetModelStatusResponse(
            model_version_status=[
                get_model_status_pb2.ModelVersionStatus(version=v, state=available)
                for v in sorted(versions, reverse=True)
            ]
        )
