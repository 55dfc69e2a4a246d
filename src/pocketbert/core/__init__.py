"""The bottom layer, torch-free: the device contract, errors, atomic artifacts, params, the stage
runner, batching, metrics and where model folders are. Imports nothing else of pocketbert."""
