"""The FastAPI inference service for xor-dnn SavedModels."""
