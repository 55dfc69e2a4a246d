"""Batched inference: sort by length, pad per batch, inference_mode, automatic device."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from pocketbert.core import batching

BATCH_SIZE = 64
"sequences per forward pass when scoring; padding is per length-sorted batch"


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


def predict_logits(model, sequences: list[list[int]], pad_id: int, *,
                   batch_size: int = BATCH_SIZE, device: torch.device | None = None,
                   desc: str = "predict", progress: bool = True) -> np.ndarray:
    """Logits float32 [n, num_labels] in the input order, ``batch_size`` length-sorted
    sequences per forward pass (padding per batch: pocketbert.core.batching).

    ``progress=False`` hides the progress bar (a server answering many small requests)."""
    device = device or pick_device()
    model.to(device).eval()
    out = np.zeros((len(sequences), model.config.num_labels), dtype=np.float32)
    batches = batching.length_sorted_batches(sequences, batch_size, pad_id)
    with torch.inference_mode():
        for idx, ids, mask in tqdm(batches, desc=desc, unit="batch", mininterval=2,
                                   total=-(-len(sequences) // batch_size), disable=not progress):
            batch = {"input_ids": torch.from_numpy(ids).to(device),
                     "attention_mask": torch.from_numpy(mask).to(device)}
            out[idx] = model(**batch).logits.float().cpu().numpy()
    return out
