"""Export and verification: ONNX export and int8, Core ML conversion and the reference executor
that runs Core ML programs off-device. Imports core, data, runtime and training."""
