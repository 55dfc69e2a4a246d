"""Knowledge distillation on transformers' Trainer.

Loss = alpha * T^2 * KL(softmax(teacher_logits / T) || softmax(student_logits / T))
     + (1 - alpha) * cross-entropy(student_logits, gold label)

or, with the soft term ``mse``, alpha * ||student_logits - teacher_logits||^2 (squared error
summed over labels, averaged over rows; T unused) in place of the KL term: logit matching, the
form of Tang et al. 2019 ("Distilling Task-Specific Knowledge from BERT into Simple Neural
Networks", arXiv:1903.12136), which Kim et al. 2021 ("Comparing Kullback-Leibler
Divergence and Mean Squared Error Loss in Knowledge Distillation", IJCAI) found closer to the
teacher than KL; up to a factor 1 / (2 x labels) it is the limit of the T^2-scaled KL as T grows,
for logits of mean 0 (Hinton et al. 2015, section 2.1).

Unlabelled transfer texts (label UNLABELLED) enter the distillation term only. With class
weights (the ``class_weight: balanced`` params), the cross-entropy is PyTorch's weighted mean:
each labelled row counts by its gold label's weight, n / (labels x that label's train rows), the
rule of scikit-learn's ``compute_class_weight("balanced")`` (King and Zeng 2001), so every label
weighs the same in total; the distillation term stays unweighted, the teacher's output being the
target.

With a hidden-state weight beta > 0 (a student whose layers are copies of teacher layers), the
training loss adds

     + beta * mean over the (embeddings, copied layers) pairs of MSE(student, teacher states)

over the real (unpadded) tokens, the teacher running alongside without gradients. The form is
TinyBERT's (Jiao et al. 2020, "TinyBERT", eq. 8 for the layers and eq. 9 for the embeddings),
with no projection since both share the width; unlike TinyBERT, whose per-pair losses are summed
and learnt in a stage of their own before the logits, the pairs are averaged and trained jointly
with the logit terms. Validation losses leave that term out; the training loss includes it.

With a relation weight gamma > 0 it adds

     + gamma * mean over query, key and value of KL(R_teacher || R_student)

where R = softmax(A A^T / sqrt(d)) per attention head, A being one head's query (key, value)
projections [length, d] in the student's last layer and in the teacher layer it copies: the
self-attention relations of MiniLMv2 (Wang et al. 2021, "MiniLMv2: Multi-Head Self-Attention
Relation Distillation for Compressing Pretrained Transformers", arXiv:2012.15828), with the
model's own heads as relation heads, averaged over heads and real query tokens, padded keys left
out, and trained jointly with the logit terms rather than in a task-agnostic stage of its own.

The T^2 factor keeps the gradient scale of the soft term independent of T (Hinton et al. 2015).
alpha = 0 is plain fine-tuning on gold labels (the no-distillation baseline); the teacher stage
trains with exactly that. Runs unchanged under ``torchrun --nproc_per_node N`` (DDP): Trainer
reads the launcher's environment, and only the main process writes files.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments

from pocketbert.core import evaluation
from pocketbert.runtime.torch_runner import pad_batch
from pocketbert.training import modeling

UNLABELLED = -100
"label id of a transfer text without a gold label: it is learnt through the KD term only"


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                      labels: torch.Tensor, temperature: float, alpha: float,
                      class_weights: torch.Tensor | None = None,
                      soft_loss: str = "kl") -> torch.Tensor:
    """Hinton-style KD loss; logits are [batch, num_labels], labels [batch].

    ``soft_loss``: ``kl`` (the T^2-scaled KL divergence) or ``mse`` (the squared logit error
    summed over labels, averaged over rows; ``temperature`` unused); ValueError otherwise.

    Rows labelled UNLABELLED take part in the KD term only: the cross-entropy averages over the
    labelled rows (0 when a batch has none), the KD term over every row. ``class_weights``
    [num_labels] (None: all 1) makes the cross-entropy the weighted mean, sum of w[y] x loss
    over sum of w[y] (``torch.nn.functional.cross_entropy``'s ``weight``)."""
    labelled = labels != UNLABELLED  # [batch]
    hard = (F.cross_entropy(student_logits[labelled], labels[labelled], weight=class_weights)
            if labelled.any()
            else student_logits.sum() * 0.0)  # keeps the graph for a batch of transfer texts
    if soft_loss not in ("kl", "mse"):
        raise ValueError(f"soft_loss must be 'kl' or 'mse', got {soft_loss!r}")
    if alpha == 0 or teacher_logits is None:
        return hard
    if soft_loss == "mse":
        soft = (student_logits - teacher_logits).pow(2).sum(-1).mean()
        return alpha * soft + (1 - alpha) * hard
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    return alpha * soft + (1 - alpha) * hard


def hidden_state_loss(student_states: tuple[torch.Tensor, ...],
                      teacher_states: tuple[torch.Tensor, ...],
                      layer_map: tuple[tuple[int, int], ...],
                      attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over ``layer_map``'s (student index, teacher index) pairs of the mean squared error
    between those hidden states, over the tokens where ``attention_mask`` [batch, length] is 1.

    The states are transformers' ``hidden_states`` tuples (index 0: the embeddings' output,
    i: layer i - 1's), each [batch, length, hidden] of the same hidden size."""
    mask = attention_mask.to(student_states[0].dtype)  # [batch, length]
    tokens = mask.sum().clamp(min=1.0)
    errors = [((student_states[s] - teacher_states[t]) ** 2).mean(dim=-1).mul(mask).sum() / tokens
              for s, t in layer_map]
    return torch.stack(errors).mean()


def attention_relation_loss(student_qkv: tuple[torch.Tensor, ...],
                            teacher_qkv: tuple[torch.Tensor, ...], attention_mask: torch.Tensor,
                            heads: int) -> torch.Tensor:
    """MiniLMv2's self-attention relation term: the mean over the (student, teacher) pairs of
    ``student_qkv`` / ``teacher_qkv`` (the query, key and value projections of one layer each,
    [batch, length, hidden], the same hidden size, split into ``heads`` heads of hidden / heads)
    of KL(R_teacher || R_student), R = softmax(A A^T / sqrt(hidden / heads)) per head over the
    keys where ``attention_mask`` [batch, length] is 1, averaged over heads and those query
    tokens (Wang et al. 2021, arXiv:2012.15828, with the model's heads as its relation heads).
    0 when the relations match."""
    real = attention_mask.bool()  # [batch, length]
    padded_key = ~real[:, None, None, :]  # [batch, 1, 1, length]
    queries = real[:, None, :].to(student_qkv[0].dtype)  # [batch, 1, length]
    terms = []
    for s, t in zip(student_qkv, teacher_qkv, strict=True):
        log_s, log_t = _log_relations(s, heads, padded_key), _log_relations(t, heads, padded_key)
        kl = (log_t.exp() * (log_t - log_s)).masked_fill(padded_key, 0.0).sum(-1)  # [b, h, len]
        terms.append((kl * queries).sum() / (queries.sum() * heads).clamp(min=1.0))
    return torch.stack(terms).mean()


def _log_relations(a: torch.Tensor, heads: int, padded_key: torch.Tensor) -> torch.Tensor:
    """log softmax(A A^T / sqrt(d)) per head, [batch, heads, length, length], for ``a``
    [batch, length, hidden]; padded keys get a finite -1e4 (not -inf, whose differences in the
    KL would be NaN) and so a probability of 0 to float32 precision."""
    batch, length, hidden = a.shape
    d = hidden // heads
    per_head = a.view(batch, length, heads, d).transpose(1, 2)  # [batch, heads, length, d]
    scores = per_head @ per_head.transpose(-1, -2) / d ** 0.5
    return scores.masked_fill(padded_key, -1e4).log_softmax(dim=-1)


@dataclass
class Collator:
    """Pads input_ids per batch; carries labels and (when present) teacher_logits."""

    pad_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_batch([f["input_ids"] for f in features], self.pad_id)
        batch["labels"] = torch.tensor([f["label"] for f in features], dtype=torch.long)
        if "teacher_logits" in features[0]:
            batch["teacher_logits"] = torch.tensor(
                np.array([f["teacher_logits"] for f in features]), dtype=torch.float32)
        return batch


@dataclass(frozen=True)
class TrainConfig:
    """The training knobs shared by the teacher and train_student params sections."""

    epochs: int
    learning_rate: float
    batch_size: int
    weight_decay: float
    warmup_ratio: float
    early_stopping_patience: int
    seed: int
    temperature: float = 1.0
    alpha: float = 0.0
    soft_loss: str = "kl"
    select_by: str = "macro_f1"
    average_last: int = 1
    hidden_weight: float = 0.0
    relation_weight: float = 0.0
    class_weight: str = "none"

    @classmethod
    def of(cls, p: Any) -> TrainConfig:
        names = [f for f in cls.__dataclass_fields__ if hasattr(p, f)]
        return cls(**{n: getattr(p, n) for n in names})


@dataclass(frozen=True)
class HiddenTeacher:
    """The teacher the hidden-state and relation terms compare the student with: its model (run
    without gradients), the (student, teacher) hidden_states index pairs
    (``hidden_state_loss``) and the (student, teacher) layer indices whose attention relations
    are compared (``attention_relation_loss``)."""

    model: Any
    layer_map: tuple[tuple[int, int], ...]
    relation_layers: tuple[int, int] = (-1, -1)


class DistillationTrainer(Trainer):
    """transformers' Trainer with ``distillation_loss`` as its loss (``class_weights``
    [num_labels] or None for its cross-entropy), plus ``hidden_weight`` times
    ``hidden_state_loss`` and ``relation_weight`` times ``attention_relation_loss`` against
    ``hidden_teacher`` while training (ValueError when a weight is > 0 without one)."""

    def __init__(self, *args: Any, temperature: float, alpha: float, soft_loss: str = "kl",
                 hidden_weight: float = 0.0, relation_weight: float = 0.0,
                 hidden_teacher: HiddenTeacher | None = None,
                 class_weights: torch.Tensor | None = None, **kwargs: Any):
        if (hidden_weight or relation_weight) and hidden_teacher is None:
            raise ValueError("hidden_weight or relation_weight > 0 needs a hidden_teacher to "
                             "compare with")
        super().__init__(*args, **kwargs)
        self.temperature, self.alpha, self.soft_loss = temperature, alpha, soft_loss
        self.class_weights = (None if class_weights is None
                              else class_weights.to(self.args.device))
        self.hidden_weight, self.relation_weight = hidden_weight, relation_weight
        self.hidden_teacher = hidden_teacher
        if hidden_weight or relation_weight:
            hidden_teacher.model.to(self.args.device).eval()
        if relation_weight:
            if self.args.n_gpu > 1:  # nn.DataParallel replicas would each fire the hooks
                raise ValueError("relation_weight > 0 needs one device per process; run "
                                 "train_student under torchrun (DDP)")
            s, t = hidden_teacher.relation_layers
            self._projections = (modeling.attention_projections(self.model, s),
                                 modeling.attention_projections(hidden_teacher.model, t))
            self._heads = self.model.config.num_attention_heads

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_logits = inputs.pop("teacher_logits", None)
        labels = inputs.pop("labels")
        hidden = bool(self.hidden_weight) and model.training
        relate = bool(self.relation_weight) and model.training
        student_qkv, teacher_qkv = self._projections if relate else ((), ())
        with modeling.recorded_outputs(student_qkv) as student_relations:
            outputs = model(**inputs, output_hidden_states=hidden)
        loss = distillation_loss(outputs.logits, teacher_logits, labels,
                                 self.temperature, self.alpha, self.class_weights,
                                 self.soft_loss)
        if hidden or relate:
            with torch.no_grad(), modeling.recorded_outputs(teacher_qkv) as teacher_relations:
                teacher = self.hidden_teacher.model(**inputs, output_hidden_states=hidden)
        if hidden:
            loss = loss + self.hidden_weight * hidden_state_loss(
                outputs.hidden_states, teacher.hidden_states, self.hidden_teacher.layer_map,
                inputs["attention_mask"])
        if relate:
            loss = loss + self.relation_weight * attention_relation_loss(
                tuple(student_relations), tuple(teacher_relations), inputs["attention_mask"],
                self._heads)
        return (loss, outputs) if return_outputs else loss


class LiveCallback(TrainerCallback):
    """Training curves for dvc plots in ``live_dir`` (None: none): train loss, validation loss
    and macro-F1 per epoch (and agreement with the teacher and KL to it when the validation
    rows carry its logits)."""

    def __init__(self, live_dir: str | None) -> None:
        self.live_dir = live_dir
        self.live = None
        self.train_loss: float | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.train_loss = float(logs["loss"])

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or self.live_dir is None or not metrics:
            return
        if self.live is None:
            from dvclive import Live

            self.live = Live(self.live_dir, save_dvc_exp=False, dvcyaml=None, report=None)
        self.live.step = int(round(state.epoch or 0))
        if self.train_loss is not None:
            self.live.log_metric("train/loss", self.train_loss)
        self.live.log_metric("validation/loss", float(metrics["eval_loss"]))
        self.live.log_metric("validation/macro_f1", float(metrics["eval_macro_f1"]))
        for name in ("agreement", "kl"):
            if f"eval_{name}" in metrics:
                self.live.log_metric(f"validation/{name}", float(metrics[f"eval_{name}"]))
        self.live.next_step()

    def on_train_end(self, args, state, control, **kwargs):
        if self.live is not None:
            self.live.end()


class TailAverage(TrainerCallback):
    """Mean of the model's weights at the end of each of the last ``last`` of ``epochs``
    epochs, put into the model when training ends (tail averaging of iterates: Polyak and
    Juditsky 1992; Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima")."""

    def __init__(self, epochs: int, last: int) -> None:
        self.epochs, self.last = epochs, last
        self.sum: dict[str, torch.Tensor] | None = None
        self.count = 0

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if round(state.epoch or 0) <= self.epochs - self.last:
            return
        weights = {k: v.detach().double().clone() for k, v in model.state_dict().items()
                   if v.is_floating_point()}
        if self.sum is None:
            self.sum = weights
        else:
            for k, v in weights.items():
                self.sum[k] += v
        self.count += 1

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not self.count:
            return
        state_dict = model.state_dict()
        with torch.no_grad():
            for k, total in self.sum.items():
                state_dict[k].copy_((total / self.count).to(state_dict[k].dtype))


def teacher_kl(student_logits: np.ndarray, teacher_logits: np.ndarray) -> float:
    """Mean KL(softmax(teacher) || softmax(student)) at T = 1, in nats; logits [n, labels]."""
    log_p, log_q = (torch.log_softmax(torch.as_tensor(x, dtype=torch.float64), dim=-1)
                    for x in (teacher_logits, student_logits))
    return float((log_p.exp() * (log_p - log_q)).sum(dim=-1).mean())


def balanced_class_weights(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Per-label weights [n_labels] for a weighted cross-entropy: n / (n_labels x count of the
    label) over ``labels`` [rows] (gold label ids; UNLABELLED rows are left out), scikit-learn's
    ``compute_class_weight("balanced")``. Raises ValueError naming the label ids without a
    row (the split stage gives every label train rows, so only a direct call can)."""
    from sklearn.utils.class_weight import compute_class_weight

    gold = np.asarray(labels)
    gold = gold[gold != UNLABELLED]
    missing = sorted(set(range(n_labels)) - set(gold.tolist()))
    if missing:
        raise ValueError(f"class_weight balanced: label ids {missing} have no training row")
    return compute_class_weight("balanced", classes=np.arange(n_labels), y=gold)


def class_weight_metrics(result: dict, labels: tuple[str, ...]) -> dict[str, float]:
    """``train``'s class weights as ``{"class_weight.<label>": weight}``; {} when unweighted."""
    weights = result.get("class_weights")
    return {} if weights is None else {
        f"class_weight.{label}": w for label, w in zip(labels, weights, strict=True)}


def train(model, train_ds, eval_ds, config: TrainConfig, pad_id: int, scratch: str | Path,
          live_dir: str | None = None,
          hidden_teacher: HiddenTeacher | None = None) -> dict[str, Any]:
    """Train and leave the kept weights in ``model``.

    ``config.select_by``: ``macro_f1``, ``agreement`` or ``kl`` keep the epoch with the best
    validation score (macro-F1; top-1 agreement with the teacher; lowest teacher_kl), with early
    stopping after ``early_stopping_patience`` epochs without a better one; ``average`` trains
    every epoch (the linear schedule decays to 0) and keeps the mean weights of the last
    ``average_last`` epochs. When ``eval_ds`` has a ``teacher_logits`` column, every evaluation
    reports agreement and teacher_kl (needed by select_by agreement/kl: ValueError otherwise).
    ``scratch`` holds checkpoints (shared by all DDP processes) and is removed. With
    ``config.hidden_weight`` > 0 the hidden-state term, and with ``config.relation_weight`` > 0
    the attention relation term, against ``hidden_teacher`` join the training loss
    (``DistillationTrainer``; ValueError without a ``hidden_teacher``). With
    ``config.class_weight`` balanced, the cross-entropy weighs labels by
    ``balanced_class_weights`` of ``train_ds``'s labels.
    Returns the log history, the kept epoch's validation score (None with average), the
    epochs run and the class weights ([num_labels] list, or None)."""
    n_labels = model.config.num_labels
    weights = (balanced_class_weights(np.asarray(train_ds["label"]), n_labels)
               if config.class_weight == "balanced" else None)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # validation rows are evaluated in order (no shuffling), so they line up with these logits
    eval_teacher = (np.asarray(eval_ds["teacher_logits"])
                    if "teacher_logits" in eval_ds.column_names else None)
    average = config.select_by == "average"
    if config.select_by in ("agreement", "kl") and eval_teacher is None:
        raise ValueError(f"select_by {config.select_by} needs the teacher's validation logits")
    selection = [] if average else [
        EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience)]
    if average:
        selection.append(TailAverage(config.epochs, min(config.average_last, config.epochs)))

    def compute_metrics(pred) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        out = {"macro_f1": evaluation.macro_f1(pred.label_ids, logits.argmax(-1), n_labels)}
        if eval_teacher is not None:
            out["agreement"] = evaluation.accuracy(eval_teacher.argmax(-1), logits.argmax(-1))
            out["kl"] = teacher_kl(logits, eval_teacher)
        return out

    try:
        args = TrainingArguments(
            output_dir=str(scratch),
            num_train_epochs=config.epochs,
            learning_rate=config.learning_rate,
            per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=max(64, config.batch_size),
            weight_decay=config.weight_decay,
            warmup_steps=config.warmup_ratio,  # a float < 1 is read as a share of all steps
            lr_scheduler_type="linear",
            eval_strategy="epoch",
            save_strategy="no" if average else "epoch",
            logging_strategy="epoch",
            save_total_limit=1,
            save_only_model=True,
            load_best_model_at_end=not average,
            metric_for_best_model=None if average else config.select_by,
            greater_is_better=config.select_by != "kl",
            seed=config.seed,
            data_seed=config.seed,
            report_to="none",
            remove_unused_columns=False,
            dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(),
            # under torchrun on CPU, gloo (NCCL needs GPUs); a single process sets none
            ddp_backend="gloo" if distributed and not torch.cuda.is_available() else None,
            disable_tqdm=False,
        )
        trainer = DistillationTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            data_collator=Collator(pad_id),
            compute_metrics=compute_metrics,
            callbacks=[*selection, LiveCallback(live_dir)],
            temperature=config.temperature,
            alpha=config.alpha,
            soft_loss=config.soft_loss,
            hidden_weight=config.hidden_weight,
            relation_weight=config.relation_weight,
            hidden_teacher=hidden_teacher,
            class_weights=None if weights is None else torch.tensor(weights, dtype=torch.float32),
        )
        trainer.train()
        trainer.accelerator.wait_for_everyone()
        return {
            "history": trainer.state.log_history,
            "best_metric": trainer.state.best_metric,
            "epochs_run": trainer.state.epoch,
            "world_size": trainer.args.world_size,
            "class_weights": None if weights is None else weights.tolist(),
        }
    finally:
        if int(os.environ.get("RANK", "0")) == 0:
            shutil.rmtree(scratch, ignore_errors=True)
