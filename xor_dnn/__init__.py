"""xor-dnn: train, serve and batch-score the XOR lesson's dropout DNN."""

__version__ = "0.1.0"
