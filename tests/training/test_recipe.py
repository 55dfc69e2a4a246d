"""Per-epoch validation agreement with the teacher and KL to it: the curves that show whether
the student's chosen epoch is a lucky swing (docs/guide/own-data.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pocketbert.training import distillation
from pocketbert.training.distillation import teacher_kl


def test_teacher_kl_by_hand() -> None:
    teacher = np.array([[math.log(0.7), math.log(0.3)]])
    student = np.array([[math.log(0.4), math.log(0.6)]])
    expected = 0.7 * math.log(0.7 / 0.4) + 0.3 * math.log(0.3 / 0.6)
    assert teacher_kl(student, teacher) == pytest.approx(expected, rel=1e-9)
    assert teacher_kl(teacher + 5.0, teacher) == pytest.approx(0.0, abs=1e-12)  # shift-free


def _tiny_model():
    from transformers import BertConfig, BertForSequenceClassification, set_seed

    set_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=3, max_position_embeddings=16))


def _rows(n: int, seed: int = 0, teacher: bool = True):
    """n tiny labelled rows whose second token gives the label; teacher logits [n, 3]."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    ids = [[1, 5 + 3 * int(y), *rng.integers(20, 40, 3).tolist(), 2] for y in labels]
    columns = {"input_ids": ids, "label": labels.tolist()}
    if teacher:
        columns["teacher_logits"] = (np.eye(3)[labels] * 4.0 + rng.normal(0, 1, (n, 3))).tolist()
    return Dataset.from_dict(columns)


def _config(**changes) -> distillation.TrainConfig:
    settings = dict(epochs=3, learning_rate=5e-3, batch_size=8, weight_decay=0.0,
                    warmup_ratio=0.0, early_stopping_patience=3, seed=0, temperature=2.0,
                    alpha=0.7)
    return distillation.TrainConfig(**{**settings, **changes})


def test_training_logs_agreement_and_kl_per_epoch(tmp_path) -> None:
    model = _tiny_model()
    rows = lambda n: _rows(n, seed=n)  # noqa: E731
    config = _config()
    eval_ds = rows(24)
    live = tmp_path / "curves"
    result = distillation.train(model, rows(48), eval_ds, config, pad_id=0,
                                scratch=tmp_path / "scratch", live_dir=str(live))
    evals = [h for h in result["history"] if "eval_kl" in h]
    assert len(evals) == 3
    assert all(0.0 <= h["eval_agreement"] <= 1.0 and h["eval_kl"] >= 0.0 for h in evals)
    for name in ("agreement", "kl"):
        curve = (live / f"plots/metrics/validation/{name}.tsv").read_text().splitlines()
        assert len(curve) == 1 + 3  # header + one row per epoch
        logged = [float(line.split("\t")[1]) for line in curve[1:]]
        assert logged == pytest.approx([h[f"eval_{name}"] for h in evals])


def test_average_keeps_the_mean_of_the_last_epochs_weights(tmp_path, monkeypatch) -> None:
    """select_by average: the kept weights are the mean of the weights at the end of the last
    average_last epochs (recorded here by a callback that runs beside it), not any one epoch."""
    import torch
    from transformers import TrainerCallback

    seen: list[dict[str, torch.Tensor]] = []

    class Record(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    # the curves callback is replaced by one that records the weights at every epoch's end
    monkeypatch.setattr(distillation, "LiveCallback", lambda live_dir: Record())
    model = _tiny_model()
    result = distillation.train(model, _rows(48, 1), _rows(24, 2),
                                _config(epochs=4, select_by="average", average_last=2),
                                pad_id=0, scratch=tmp_path / "scratch")
    assert result["epochs_run"] == 4 and result["best_metric"] is None
    assert len(seen) == 4
    key = "bert.encoder.layer.0.attention.self.query.weight"
    expected = (seen[2][key] + seen[3][key]) / 2
    kept = model.state_dict()[key]
    assert torch.allclose(kept, expected, atol=1e-6)
    assert not torch.allclose(kept, seen[3][key], atol=1e-6)  # not simply the last epoch


@pytest.mark.parametrize(("select_by", "best"), [("kl", min), ("agreement", max),
                                                 ("macro_f1", max)])
def test_select_by_keeps_the_best_epoch_of_that_score(tmp_path, select_by, best) -> None:
    model = _tiny_model()
    result = distillation.train(model, _rows(48, 1), _rows(24, 2),
                                _config(epochs=4, select_by=select_by, learning_rate=2e-2),
                                pad_id=0, scratch=tmp_path / "scratch")
    scores = [h[f"eval_{select_by}"] for h in result["history"] if f"eval_{select_by}" in h]
    assert result["best_metric"] == pytest.approx(best(scores))


def test_select_by_the_teacher_needs_its_validation_logits(tmp_path) -> None:
    with pytest.raises(ValueError, match="select_by kl needs the teacher"):
        distillation.train(_tiny_model(), _rows(16, 1), _rows(8, 2, teacher=False),
                           _config(select_by="kl"), pad_id=0, scratch=tmp_path / "s")


# --- hidden-state distillation (train_student.hidden_weight) ----------------------------------

def test_hidden_state_loss_by_hand() -> None:
    """Mean squared error per real token, averaged over the mapped layers; padding is ignored."""
    import torch

    teacher = (torch.zeros(2, 3, 2), torch.zeros(2, 3, 2))
    student = (torch.zeros(2, 3, 2), torch.zeros(2, 3, 2))
    student[1][0, 0] = torch.tensor([1.0, 3.0])  # squared errors 1, 9: mean 5 on that token
    student[1][1, 2] = 100.0  # a padding position
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    layers = ((0, 0), (1, 1))
    # layer (1, 1): 5 over 5 real tokens = 1; layer (0, 0): 0; mean over the two layers: 0.5
    got = distillation.hidden_state_loss(student, teacher, layers, mask)
    assert got.item() == pytest.approx(0.5)
    assert distillation.hidden_state_loss(student, teacher, ((1, 1),), mask).item() == \
        pytest.approx(1.0)


def test_hidden_layer_map_pairs_each_student_layer_with_the_layer_it_copies() -> None:
    from pocketbert.training.student import hidden_layer_map

    assert hidden_layer_map((0, 5)) == ((0, 0), (1, 1), (2, 6))
    assert hidden_layer_map((2,)) == ((0, 0), (1, 3))


def _hidden_error(student, teacher, layer_map, rows) -> float:
    import torch

    from pocketbert.runtime.torch_runner import pad_batch

    batch = pad_batch(rows["input_ids"], 0)
    with torch.no_grad():
        s = student.eval()(**batch, output_hidden_states=True).hidden_states
        t = teacher.eval()(**batch, output_hidden_states=True).hidden_states
    return distillation.hidden_state_loss(s, t, layer_map, batch["attention_mask"]).item()


def _term_error(term: str, student, teacher, rows) -> float:
    """The hidden-state or relation term (``term``: the TrainConfig field) between a student
    copying teacher layer 1 alone and that teacher, on ``rows``."""
    from pocketbert.training.student import hidden_layer_map

    if term == "hidden_weight":
        return _hidden_error(student, teacher, hidden_layer_map((1,)), rows)
    return _relation_error(student, teacher, rows)


@pytest.mark.parametrize("term", ["hidden_weight", "relation_weight"])
def test_layer_terms_pull_the_copied_layer_toward_the_teacher_s(tmp_path, term) -> None:
    """A student copying teacher layer 1 alone (its input is now the embeddings, not layer 0's
    output) is trained with and without the term: with it, that layer's output (hidden_weight)
    or its attention relations (relation_weight) end nearer the teacher layer 1's on held-out
    rows, and the teacher's weights are untouched."""
    from transformers import BertConfig, BertForSequenceClassification, set_seed

    from pocketbert.training import modeling
    from pocketbert.training.student import hidden_layer_map, relation_layers

    set_seed(0)
    teacher = BertForSequenceClassification(BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=3, max_position_embeddings=16)).eval()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    held_out = _rows(32, 3)
    errors = {}
    for weight in (0.0, 10.0):
        student = modeling.student_from_layers(teacher, (1,))
        distillation.train(student, _rows(48, 1), _rows(24, 2),
                           _config(epochs=3, select_by="average", average_last=1,
                                   **{term: weight}),
                           pad_id=0, scratch=tmp_path / f"scratch{weight}",
                           hidden_teacher=distillation.HiddenTeacher(
                               teacher, hidden_layer_map((1,)), relation_layers((1,))))
        errors[weight] = _term_error(term, student, teacher, held_out)
    assert errors[10.0] < 0.5 * errors[0.0]
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


@pytest.mark.parametrize(("term", "perturb", "margin"), [
    ("hidden_weight", lambda layer: [w.add_(0.5) for w in layer.parameters()], 0.1),
    ("relation_weight", lambda layer: [w.mul_(3.0) for w in layer.attention.self.parameters()],
     0.01),
])
def test_validation_loss_leaves_the_layer_terms_out(tmp_path, term, perturb, margin) -> None:
    """The hidden-state and relation terms are part of the training loss only; a weight
    without a teacher to compare with is refused."""
    from transformers import TrainingArguments

    from pocketbert.training import modeling
    from pocketbert.training.student import hidden_layer_map, relation_layers

    teacher = _tiny_model().eval()
    student = modeling.student_from_layers(teacher, (0,))
    with torch.no_grad():  # make the student's layer differ from the teacher's
        perturb(student.bert.encoder.layer[0])
    rows = _rows(8, 4)
    batch = distillation.Collator(0)([rows[i] for i in range(8)])
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    losses = {}
    for weight in (0.0, 10.0):
        trainer = distillation.DistillationTrainer(
            model=student, args=args, temperature=2.0, alpha=0.7, **{term: weight},
            hidden_teacher=distillation.HiddenTeacher(teacher, hidden_layer_map((0,)),
                                                      relation_layers((0,))))
        for mode in ("train", "eval"):
            getattr(student, mode)()
            torch.manual_seed(0)  # the same dropout masks for both weights
            with torch.no_grad():
                losses[weight, mode] = trainer.compute_loss(student, dict(batch)).item()
    assert losses[10.0, "eval"] == pytest.approx(losses[0.0, "eval"])
    assert losses[10.0, "train"] > losses[0.0, "train"] + margin
    with pytest.raises(ValueError, match="needs a hidden_teacher"):
        distillation.DistillationTrainer(model=student, args=args, temperature=2.0,
                                         alpha=0.7, **{term: 1.0})


def test_the_trainer_and_train_config_carry_the_soft_loss(tmp_path) -> None:
    from transformers import TrainingArguments

    from pocketbert.core.params import TrainStudentParams

    assert distillation.TrainConfig.of(TrainStudentParams(soft_loss="mse")).soft_loss == "mse"
    model = _tiny_model().eval()
    batch = distillation.Collator(0)([_rows(4, 3)[i] for i in range(4)])
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    for soft_loss in ("kl", "mse"):
        trainer = distillation.DistillationTrainer(model=model, args=args, temperature=2.0,
                                                   alpha=0.7, soft_loss=soft_loss)
        inputs = dict(batch)
        teacher, labels = inputs["teacher_logits"], inputs["labels"]
        with torch.no_grad():
            got = trainer.compute_loss(model, dict(batch)).item()
            logits = model(input_ids=inputs["input_ids"],
                           attention_mask=inputs["attention_mask"]).logits
        assert got == pytest.approx(distillation.distillation_loss(
            logits, teacher, labels, 2.0, 0.7, soft_loss=soft_loss).item(), rel=1e-6)


# --- attention relation distillation (train_student.relation_weight) ---------------------------

def test_attention_relation_loss_by_hand() -> None:
    """One head of width 2: the student's relations are uniform over the 2 real keys, the
    teacher's row i puts softmax([1/sqrt 2, 0]) on (key i, the other key); the loss is KL(p || u)
    for each query, the same for query, key and value, and the padded position is ignored."""
    import math

    import torch

    teacher = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])  # [batch 1, length 3, 2]
    student = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]]])
    mask = torch.tensor([[1, 1, 0]])
    p = 1 / (1 + math.exp(-1 / math.sqrt(2)))
    expected = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    got = distillation.attention_relation_loss((student,) * 3, (teacher,) * 3, mask, heads=1)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    moved = student.clone()
    moved[0, 2] = -7.0  # the padded token: neither a key nor a query that counts
    assert distillation.attention_relation_loss((moved,) * 3, (teacher,) * 3, mask,
                                                heads=1).item() == pytest.approx(expected,
                                                                                 rel=1e-6)
    assert distillation.attention_relation_loss((teacher,) * 3, (teacher,) * 3, mask,
                                                heads=1).item() == pytest.approx(0.0, abs=1e-7)


def test_attention_relation_loss_averages_the_heads() -> None:
    """Two heads of width 1 are the mean of the two one-head losses on each column."""
    import torch

    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 4, 2, generator=gen), torch.randn(2, 4, 2, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    both = distillation.attention_relation_loss((s,), (t,), mask, heads=2)
    each = [distillation.attention_relation_loss((s[..., [c]],), (t[..., [c]],), mask, heads=1)
            for c in (0, 1)]
    assert both.item() == pytest.approx((each[0].item() + each[1].item()) / 2, rel=1e-6)


def test_attention_relation_loss_matches_a_loop_over_heads_and_real_tokens() -> None:
    """Against a plain loop: heads are contiguous slices of width 2 of hidden 4, and the second
    row's padded position is neither a key nor a counted query (its values differ between the
    two models, so counting it would change the result)."""
    gen = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 3, 4, generator=gen), torch.randn(2, 3, 4, generator=gen)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    heads, d = 2, 2
    terms = []
    for b in range(2):
        real = [j for j in range(3) if mask[b, j]]
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            for i in real:
                p_t = torch.softmax(torch.stack([t[b, i, cols] @ t[b, j, cols] for j in real])
                                    / d ** 0.5, dim=0)
                p_s = torch.softmax(torch.stack([s[b, i, cols] @ s[b, j, cols] for j in real])
                                    / d ** 0.5, dim=0)
                terms.append((p_t * (p_t / p_s).log()).sum())
    expected = torch.stack(terms).mean().item()  # the same for query, key and value
    got = distillation.attention_relation_loss((s,) * 3, (t,) * 3, mask, heads=heads)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_relations_of_a_deberta_layer_are_read_once_per_forward() -> None:
    """DeBERTa-v2 runs query_proj and key_proj again on its relative positions: only the call
    on the tokens is recorded, so the relation term gets [batch, length, hidden] each."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    from pocketbert.training import modeling

    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(DebertaV2Config(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=3, max_position_embeddings=16,
        relative_attention=True, position_buckets=8, share_att_key=True,
        pos_att_type=["p2c", "c2p"])).eval()
    found = modeling.attention_projections(model, 0)
    ids = torch.tensor([[1, 5, 6, 7], [1, 8, 2, 0]])
    with torch.no_grad(), modeling.recorded_outputs(found) as seen:
        model(input_ids=ids, attention_mask=(ids != 0).long())
    assert [tuple(o.shape) for o in seen] == [(2, 4, 16)] * 3
    zero = distillation.attention_relation_loss(tuple(seen), tuple(seen), ids != 0, heads=2)
    assert zero.item() == pytest.approx(0.0, abs=1e-6)


def test_relation_layers_pair_the_student_s_last_layer_with_the_layer_it_copies() -> None:
    from pocketbert.training.student import relation_layers

    assert relation_layers((0, 5)) == (1, 5)
    assert relation_layers((2,)) == (0, 2)


def test_attention_projections_are_the_layer_s_query_key_value() -> None:
    from pocketbert.core.errors import ModelError
    from pocketbert.training import modeling

    model = _tiny_model()
    found = modeling.attention_projections(model, -1)
    attention = model.bert.encoder.layer[0].attention.self
    assert found == (attention.query, attention.key, attention.value)
    with modeling.recorded_outputs(found) as seen:
        model.eval()(input_ids=torch.tensor([[1, 5, 3]]))
    assert [o.shape for o in seen] == [torch.Size([1, 3, 16])] * 3
    assert all(not m._forward_hooks for m in found)  # removed on leaving the block
    attention.query, attention.key = torch.nn.Identity(), torch.nn.Identity()
    with pytest.raises(ModelError, match="relation_weight to 0"):
        modeling.attention_projections(model, 0)


def _relation_error(student, teacher, rows) -> float:
    from pocketbert.runtime.torch_runner import pad_batch
    from pocketbert.training import modeling

    batch = pad_batch(rows["input_ids"], 0)
    with torch.no_grad(), modeling.recorded_outputs(
            modeling.attention_projections(student, -1)) as s, modeling.recorded_outputs(
            modeling.attention_projections(teacher, -1)) as t:
        student.eval()(**batch)
        teacher.eval()(**batch)
    return distillation.attention_relation_loss(tuple(s), tuple(t), batch["attention_mask"],
                                                heads=2).item()


def test_balanced_class_weights_follow_sklearn_s_rule() -> None:
    # 6 labelled rows: 4, 1, 1 -> 6 / (3 x count); the unlabelled row is left out
    labels = np.array([0, 0, 0, 0, 1, 2, distillation.UNLABELLED])
    assert distillation.balanced_class_weights(labels, 3) == pytest.approx([0.5, 2.0, 2.0])
    with pytest.raises(ValueError, match=r"label ids \[2\] have no training row"):
        distillation.balanced_class_weights(np.array([0, 1, 1]), 3)


def test_class_weight_metrics_name_each_label_s_weight() -> None:
    assert distillation.class_weight_metrics({"class_weights": None}, ("a", "b")) == {}
    assert distillation.class_weight_metrics({"class_weights": [0.5, 2.0]}, ("a", "b")) == {
        "class_weight.a": 0.5, "class_weight.b": 2.0}
    with pytest.raises(ValueError):  # one weight per label, no silent truncation
        distillation.class_weight_metrics({"class_weights": [1.0]}, ("a", "b"))


def test_balanced_class_weight_moves_an_ambiguous_input_toward_the_rare_label(tmp_path) -> None:
    """One input, seen 80 times as label 0 and 10 times as label 1: the cross-entropy's optimum
    gives label 1 a probability of 10 / 90 = 0.11; weighed by n / (labels x count) (0.42 and
    3.33), it is 10 x 3.33 / (10 x 3.33 + 80 x 0.42) = 0.5. The trained model lands on each
    side of 0.3 accordingly, and reports the weights it used."""
    from datasets import Dataset

    ids = [[1, 7, 2]] * 90 + [[1, 9, 2]] * 10
    rows = Dataset.from_dict({"input_ids": ids, "label": [0] * 80 + [1] * 10 + [2] * 10})
    rare = {}
    for weighting in ("none", "balanced"):
        model = _tiny_model()
        result = distillation.train(
            model, rows, rows,
            _config(alpha=0.0, epochs=20, learning_rate=2e-2, select_by="average",
                    average_last=1, class_weight=weighting),
            pad_id=0, scratch=tmp_path / weighting)
        with torch.no_grad():
            probs = model.eval()(torch.tensor([[1, 7, 2]])).logits.softmax(-1)[0]
        rare[weighting] = probs[1].item()
        if weighting == "balanced":
            assert result["class_weights"] == pytest.approx([100 / 240, 100 / 30, 100 / 30])
        else:
            assert result["class_weights"] is None
    assert rare["none"] < 0.3 < rare["balanced"]
