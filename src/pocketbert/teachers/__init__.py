"""Teachers: a classifier folder or an HTTP endpoint behind one interface (teacher.py: labels,
logits for texts, weights where it has them). Imports core, data, runtime and training."""
