"""Batched inference: sort by length, pad per batch, inference_mode, automatic device."""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from pocketbert.core import batching


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pad_batch(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask as int64 tensors, both [batch, longest sequence in the
    batch] (pocketbert.core.batching.pad)."""
    ids, mask = batching.pad(sequences, pad_id)
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


def predict_logits(model, sequences: list[list[int]], batch_size: int, pad_id: int, *,
                   device: torch.device | None = None, desc: str = "predict",
                   progress: bool = True) -> tuple[np.ndarray, float]:
    """Logits [n, num_labels] in the input order, and the throughput in examples/s.

    ``progress=False`` hides the progress bar (a server answering many small requests)."""
    device = device or pick_device()
    model.to(device).eval()
    out = np.zeros((len(sequences), model.config.num_labels), dtype=np.float32)
    batches = batching.length_sorted_batches(sequences, batch_size, pad_id)
    start = time.perf_counter()
    with torch.inference_mode():
        for idx, ids, mask in tqdm(batches, desc=desc, unit="batch", mininterval=2,
                                   total=-(-len(sequences) // batch_size), disable=not progress):
            batch = {"input_ids": torch.from_numpy(ids).to(device),
                     "attention_mask": torch.from_numpy(mask).to(device)}
            out[idx] = model(**batch).logits.float().cpu().numpy()
    elapsed = time.perf_counter() - start
    return out, len(sequences) / max(elapsed, 1e-9)
