"""Teachers reached otherwise than as a model folder: the HTTP endpoint client (teacher.mode api).
Imports core and data."""
