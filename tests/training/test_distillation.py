"""The distillation loss on known values, and the training collator."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pocketbert.training.distillation import Collator, distillation_loss


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def _softmax(x: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in x]
    return [v / sum(e) for v in e]


def test_loss_matches_hand_computed_value() -> None:
    student = torch.tensor([[1.0, 0.0, -1.0]])
    teacher = torch.tensor([[3.0, 1.0, 0.0]])
    label = torch.tensor([0])
    t, alpha = 2.0, 0.6
    kl = _kl(_softmax([3.0, 1.0, 0.0], t), _softmax([1.0, 0.0, -1.0], t))
    ce = -math.log(_softmax([1.0, 0.0, -1.0], 1.0)[0])
    expected = alpha * t * t * kl + (1 - alpha) * ce
    got = distillation_loss(student, teacher, label, t, alpha).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_mse_soft_term_matches_hand_computed_value() -> None:
    from pocketbert.training.distillation import UNLABELLED

    student = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    teacher = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, UNLABELLED])
    alpha = 0.6
    mse = ((2 ** 2 + 1 ** 2 + 1 ** 2) + (0 + 2 ** 2 + 1 ** 2)) / 2  # summed per row, mean of rows
    ce = -math.log(_softmax([1.0, 0.0, -1.0], 1.0)[0])  # the labelled row only
    got = distillation_loss(student, teacher, labels, 99.0, alpha, soft_loss="mse").item()
    assert got == pytest.approx(alpha * mse + (1 - alpha) * ce, rel=1e-6)


def test_t_squared_kl_tends_to_the_logit_error_over_twice_the_labels() -> None:
    # Hinton et al. 2015, section 2.1 (matching logits as the high-temperature limit): for
    # logit differences of mean 0 across the K labels, T^2 KL tends to ||z_s - z_t||^2 / (2 K);
    # the next term is O(|d| / T), about 1e-3 here.
    torch.manual_seed(2)
    teacher = torch.randn(6, 4, dtype=torch.float64)
    diff = torch.randn(6, 4, dtype=torch.float64)
    student = teacher + diff - diff.mean(-1, keepdim=True)
    labels = torch.zeros(6, dtype=torch.long)
    kl = distillation_loss(student, teacher, labels, 1000.0, 1.0).item()
    mse = distillation_loss(student, teacher, labels, 1000.0, 1.0, soft_loss="mse").item()
    assert kl == pytest.approx(mse / (2 * 4), rel=1e-2)


def test_unknown_soft_loss_is_refused() -> None:
    logits = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="soft_loss must be 'kl' or 'mse'"):
        distillation_loss(logits, logits, torch.tensor([0]), 2.0, 0.5, soft_loss="l2")


def test_alpha_zero_is_cross_entropy() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 4), torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 3, 1])
    assert distillation_loss(student, teacher, labels, 3.0, 0.0).item() == pytest.approx(
        F.cross_entropy(student, labels).item())


def test_soft_term_scales_with_t_squared() -> None:
    # With student = teacher / k and a large T, KL ~ O(1/T^2); the T^2 factor keeps the soft
    # term's size of the same order across temperatures instead of vanishing.
    torch.manual_seed(1)
    teacher = torch.randn(8, 4) * 3
    student = teacher * 0.5
    labels = torch.zeros(8, dtype=torch.long)
    soft = {t: distillation_loss(student, teacher, labels, t, 1.0).item()
            for t in (5.0, 10.0, 20.0)}
    raw = {t: soft[t] / (t * t) for t in soft}
    assert raw[10.0] / raw[20.0] == pytest.approx(4.0, rel=0.1)  # raw KL falls like 1/T^2
    assert soft[10.0] / soft[20.0] == pytest.approx(1.0, rel=0.1)  # scaled term does not


def test_identical_logits_have_zero_soft_loss() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
    assert distillation_loss(logits, logits.clone(), torch.tensor([0]), 2.0, 1.0).item() == (
        pytest.approx(0.0, abs=1e-7))


def test_collator_pads_per_batch_and_carries_teacher_logits() -> None:
    batch = Collator(pad_id=0)([
        {"input_ids": [2, 5, 3], "label": 1, "teacher_logits": [0.1, 0.2]},
        {"input_ids": [2, 5, 6, 7, 3], "label": 0, "teacher_logits": [0.3, 0.4]},
    ])
    assert batch["input_ids"].tolist() == [[2, 5, 3, 0, 0], [2, 5, 6, 7, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [1, 0]
    assert batch["teacher_logits"].shape == (2, 2)


def test_unlabelled_rows_enter_the_kd_term_only() -> None:
    from pocketbert.training.distillation import UNLABELLED

    torch.manual_seed(2)
    student = torch.randn(6, 4, requires_grad=True)
    teacher = torch.randn(6, 4)
    labels = torch.tensor([0, 1, UNLABELLED, 3, UNLABELLED, 2])
    t, alpha = 2.0, 0.6
    labelled = labels != UNLABELLED
    kd = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1),
                  reduction="batchmean", log_target=True) * t * t
    expected = alpha * kd + (1 - alpha) * F.cross_entropy(student[labelled], labels[labelled])
    loss = distillation_loss(student, teacher, labels, t, alpha)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # an unlabelled row's gradient is the KD term's alone, whatever label it might have had
    loss.backward()
    kd_only = torch.randn(6, 4).copy_(student.detach()).requires_grad_(True)
    (alpha * F.kl_div(F.log_softmax(kd_only / t, -1), F.log_softmax(teacher / t, -1),
                      reduction="batchmean", log_target=True) * t * t).backward()
    for row in (2, 4):
        assert torch.allclose(student.grad[row], kd_only.grad[row], atol=1e-7)
    assert not torch.allclose(student.grad[0], kd_only.grad[0], atol=1e-4)


def test_a_batch_of_unlabelled_rows_only_is_pure_kd() -> None:
    from pocketbert.training.distillation import UNLABELLED

    student, teacher = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[3.0, 1.0, 0.0]])
    labels = torch.tensor([UNLABELLED])
    got = distillation_loss(student, teacher, labels, 2.0, 0.5).item()
    kd = _kl(_softmax([3.0, 1.0, 0.0], 2.0), _softmax([1.0, 0.0, -1.0], 2.0)) * 4.0
    assert got == pytest.approx(0.5 * kd, rel=1e-5)
    assert distillation_loss(student, teacher, labels, 2.0, 0.0).item() == 0.0


def test_collator_keeps_the_unlabelled_marker() -> None:
    from pocketbert.training.distillation import UNLABELLED

    batch = Collator(pad_id=0)([
        {"input_ids": [2, 5, 3], "label": UNLABELLED, "teacher_logits": [0.1, 0.2]},
        {"input_ids": [2, 3], "label": 1, "teacher_logits": [0.3, 0.4]},
    ])
    assert batch["labels"].tolist() == [UNLABELLED, 1]


def test_class_weights_make_the_cross_entropy_a_weighted_mean() -> None:
    """Each labelled row's cross-entropy counts by its gold label's weight, divided by the sum
    of those weights (PyTorch's weighted mean); unlabelled rows stay out, the KD term is
    unweighted."""
    student = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -0.5]])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1, -100, 1])
    weights = torch.tensor([0.5, 3.0])
    ce = [-math.log(_softmax([2.0, 0.0], 1.0)[0]), -math.log(_softmax([0.0, 1.0], 1.0)[1]),
          -math.log(_softmax([0.5, -0.5], 1.0)[1])]
    hard = (0.5 * ce[0] + 3.0 * ce[1] + 3.0 * ce[2]) / (0.5 + 3.0 + 3.0)
    assert distillation_loss(student, teacher, labels, 2.0, 0.0, weights).item() == (
        pytest.approx(hard, rel=1e-6))
    t, alpha = 2.0, 0.7
    kd = sum(_kl(_softmax(z_t, t), _softmax(z_s, t))
             for z_s, z_t in zip(student.tolist(), teacher.tolist(), strict=True)) / 4
    got = distillation_loss(student, teacher, labels, t, alpha, weights).item()
    assert got == pytest.approx(alpha * t * t * kd + (1 - alpha) * hard, rel=1e-5)
    # all weights equal: the plain mean again
    assert distillation_loss(student, teacher, labels, t, alpha, torch.ones(2)).item() == (
        pytest.approx(distillation_loss(student, teacher, labels, t, alpha).item(), rel=1e-6))
