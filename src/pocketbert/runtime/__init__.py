"""Runtimes that run a classifier: ONNX Runtime sessions and PyTorch batches. Imports core."""
