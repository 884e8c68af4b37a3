"""gRPC adapters over the data plane: Open Inference Protocol V2, TensorFlow Serving, health.

One ``grpc.aio`` server runs on uvicorn's event loop (started and drained by the app's
lifespan), so a gRPC call and an HTTP request meet in the same batcher. The generated stubs
come from maintained packages, never from this repository: ``tritonclient`` (the V2
``inference.GRPCInferenceService``), ``tensorflow-serving-api`` (``PredictionService``,
``ModelService``), ``grpcio-health-checking`` and ``grpcio-reflection``.
"""
