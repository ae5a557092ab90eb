"""`--max-minutes` (r2r_synth.student.budget) inside a real transformers `Trainer`: the stop, and the
learning-rate schedule that follows the clock when the budget binds (and only then)."""

from __future__ import annotations

import time
from itertools import pairwise

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from r2r_synth.student.budget import time_budget

PEAK = 1e-2


class Slow(torch.nn.Module):
    """A one-weight regression whose forward takes ~20 ms, so a budget of seconds holds many steps."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(4, 1)

    def forward(self, x, labels):
        time.sleep(0.02)
        return {"loss": torch.nn.functional.mse_loss(self.w(x).squeeze(-1), labels)}


def _train(tmp_path, *, max_steps: int, budget_minutes: float | None):
    torch.manual_seed(0)
    data = [{"x": torch.randn(4), "labels": torch.randn(())} for _ in range(64)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "t"), max_steps=max_steps, learning_rate=PEAK, warmup_steps=0.1,
        lr_scheduler_type="linear", per_device_train_batch_size=4, logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
    )
    callbacks = [time_budget(budget_minutes)] if budget_minutes else []
    trainer = transformers.Trainer(model=Slow(), args=args, train_dataset=data, callbacks=callbacks)
    trainer.train()
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    return lrs, (callbacks[0] if callbacks else None)


def test_a_binding_budget_warms_up_and_decays_to_zero_by_the_deadline(tmp_path):
    # 6 s (the Trainer's set-up counts too): a few hundred of the 100,000 planned steps
    lrs, budget = _train(tmp_path, max_steps=100_000, budget_minutes=0.1)
    assert budget.stopped_at_step is not None and 5 < budget.stopped_at_step < 100_000
    assert budget.annealed_from_step == 0
    top = max(lrs)
    assert top > 0.6 * PEAK  # it reached (close to) the peak after the warm-up ...
    assert lrs[-1] < 0.15 * PEAK  # ... and ended near 0, not at the 99.9 % of the step schedule
    after = lrs[lrs.index(top):]
    assert all(a >= b for a, b in pairwise(after))  # a monotone decay in between


def test_a_budget_that_does_not_bind_leaves_the_trainers_schedule_alone(tmp_path):
    plain, _ = _train(tmp_path / "a", max_steps=12, budget_minutes=None)
    budgeted, budget = _train(tmp_path / "b", max_steps=12, budget_minutes=10.0)
    assert budgeted == plain and len(plain) == 12
    assert budget.stopped_at_step is None and budget.annealed_from_step is None
