"""Batched inference: sort by length, pad per batch, inference_mode, automatic device."""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pad_batch(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask, both [batch, longest sequence in the batch]."""
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def predict_logits(model, sequences: list[list[int]], batch_size: int, pad_id: int,
                   device: torch.device | None = None, desc: str = "predict",
                   ) -> tuple[np.ndarray, float]:
    """Logits [n, num_labels] in the input order, and the throughput in examples/s."""
    device = device or pick_device()
    model.to(device).eval()
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out = np.zeros((len(sequences), model.config.num_labels), dtype=np.float32)
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch",
                       mininterval=2):
            idx = order[lo : lo + batch_size]
            batch = {k: v.to(device) for k, v in pad_batch([sequences[i] for i in idx],
                                                            pad_id).items()}
            out[idx] = model(**batch).logits.float().cpu().numpy()
    elapsed = time.perf_counter() - start
    return out, len(sequences) / max(elapsed, 1e-9)
