"""Training: the classifier models, the student's initialisation, distillation and the classical
baseline. Imports core, data and runtime."""
