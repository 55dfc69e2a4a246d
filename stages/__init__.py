"""DVC stage entry points, run as ``python -m stages.<name>``."""
