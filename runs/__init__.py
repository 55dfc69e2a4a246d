"""Long-running drivers outside the library: no stage imports them, so editing one never re-runs a
stage. Run from the repository root: python -m runs.recipe_check, runs.scale_check,
runs.public_data."""
