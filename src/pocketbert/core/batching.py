"""Length-sorted batches padded per batch: the one batching path of every runtime.

Sorting by length before batching keeps padding small; each batch is padded to its own longest
row. Torch-free (numpy), so ONNX Runtime callers and ``pocketbert predict`` share it with the
PyTorch path (pocketbert.runtime.torch_runner converts the arrays to tensors).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask``, both int64 [batch, longest row], rows padded at
    the end with ``pad_id`` (mask 0). Raises ValueError on an empty batch."""
    if not sequences:
        raise ValueError("pad: empty batch")
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)  # [batch, seq]
    mask = np.zeros((len(sequences), longest), dtype=np.int64)  # [batch, seq]
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def length_sorted_batches(sequences: Sequence[Sequence[int]], batch_size: int, pad_id: int,
                          ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
    """Batches of ``batch_size`` rows in order of length: ``(indices, input_ids, mask)``.

    ``indices`` are the rows' positions in ``sequences`` (write results to ``out[indices]`` to
    restore input order); ``input_ids`` and ``mask`` are int64 [len(indices), longest]. The
    sort is stable, so equal lengths keep their input order."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        ids, mask = pad([sequences[i] for i in idx], pad_id)
        yield idx, ids, mask
