"""The students' losses, one at a time on tiny tensors: a value worked out by hand, and each
precondition refused with a message that says what was expected and what was given."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from r2r_synth.student.losses import GenerationLoss, ListNetLoss, RankNetLoss, WeightedLoss

# ----------------------------------------------------------------------------- RankNetLoss


def test_ranknet_matches_hand_computation_and_checks_inputs():
    loss = RankNetLoss()
    scores = torch.tensor([[2.0, 0.0, 1.0]])
    prefer = torch.zeros(1, 3, 3, dtype=torch.bool)
    prefer[0, 0, 1] = prefer[0, 2, 1] = True  # doc0 > doc1, doc2 > doc1
    mask = torch.ones(1, 3, dtype=torch.bool)
    want = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert loss(scores, prefer, mask).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match=r"scores must be \(lists, documents\), one row per query; got shape \(3,\)"):
        loss(scores[0], prefer, mask[0])
    with pytest.raises(ValueError, match=r"prefer must be a bool tensor of shape \(1, 3, 3\); got torch.float32"):
        loss(scores, prefer.float(), mask)
    with pytest.raises(ValueError, match="no teacher preference in the batch"):
        loss(scores, torch.zeros_like(prefer), mask)
    mask[0, 2] = False
    with pytest.raises(ValueError, match="names a padded document slot"):
        loss(scores, prefer, mask)


def test_ranknet_gradient_pushes_the_preferred_document_up():
    scores = torch.zeros(1, 2, requires_grad=True)
    prefer = torch.tensor([[[False, True], [False, False]]])
    RankNetLoss()(scores, prefer, torch.ones(1, 2, dtype=torch.bool)).backward()
    assert scores.grad[0, 0] < 0 < scores.grad[0, 1]


# ----------------------------------------------------------------------------- ListNetLoss


def test_listnet_is_cross_entropy_against_the_teacher_softmax_and_ignores_padding():
    loss = ListNetLoss(temperature=0.5)
    scores = torch.tensor([[1.0, 0.0, 5.0]])
    teacher = torch.tensor([[1.0, 0.0, 99.0]])
    mask = torch.tensor([[True, True, False]])
    target = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    logp = torch.log_softmax(torch.tensor([1.0, 0.0]), 0)
    assert loss(scores, teacher, mask).item() == pytest.approx(float(-(target * logp).sum()), rel=1e-6)
    with pytest.raises(ValueError, match="list 0 has 1 document"):
        loss(scores, teacher, torch.tensor([[True, False, False]]))
    with pytest.raises(ValueError, match=r"teacher must have the shape of scores \(1, 3\); got \(1, 2\)"):
        loss(scores, teacher[:, :2], mask)
    with pytest.raises(ValueError, match="teacher values must be finite"):
        loss(scores, torch.tensor([[1.0, float("nan"), 0.0]]), mask)
    with pytest.raises(ValueError, match=r"mask must be a bool tensor \(True = a real document\); got torch.int64"):
        loss(scores, teacher, mask.long())
    with pytest.raises(ValueError, match="temperature must be > 0; got 0"):
        ListNetLoss(temperature=0)


# ----------------------------------------------------------------------------- GenerationLoss


def test_generation_loss_is_token_cross_entropy_and_checks_its_inputs():
    loss = GenerationLoss()
    logits = torch.zeros(3, 7)
    assert loss(logits, torch.tensor([1, 2, 3])).item() == pytest.approx(math.log(7))
    with pytest.raises(ValueError, match=r"logits must be \(T, vocab\) and targets \(T,\); got \(3, 7\) and \(2,\)"):
        loss(logits, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="no target tokens in the batch"):
        loss(torch.zeros(0, 7), torch.zeros(0, dtype=torch.long))


# ----------------------------------------------------------------------------- WeightedLoss


def test_weighted_loss_scales_a_sentence_transformers_loss(tiny_bert):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers.cross_encoder import CrossEncoder, losses

    torch.manual_seed(0)
    model = CrossEncoder(str(tiny_bert), num_labels=1, max_length=32)
    inner = losses.BinaryCrossEntropyLoss(model)
    weighted = WeightedLoss(inner, weight=0.25)
    assert weighted.model is model  # the trainer swaps the model in through the loss
    inputs = [["what is tea", "what is tea"], ["tea is a drink", "a guitar has strings"]]
    labels = torch.tensor([1.0, 0.0])
    model.eval()
    with torch.no_grad():
        assert weighted(inputs, labels).item() == pytest.approx(0.25 * inner(inputs, labels).item(), rel=1e-6)
    assert weighted.get_config_dict()["weight"] == 0.25


def test_weighted_loss_checks_what_it_wraps_and_its_weight(tiny_bert):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers.cross_encoder import CrossEncoder, losses

    with pytest.raises(ValueError, match="wraps a sentence-transformers cross-encoder loss .*; got MSELoss"):
        WeightedLoss(torch.nn.MSELoss(), weight=1.0)
    inner = losses.BinaryCrossEntropyLoss(CrossEncoder(str(tiny_bert), num_labels=1, max_length=32))
    with pytest.raises(ValueError, match="a loss weight must be > 0, got 0; leave the objective out instead"):
        WeightedLoss(inner, weight=0)
