"""Data: labelled CSVs and splits, augmentation, tokenization and the student vocabulary.
Imports core only."""
