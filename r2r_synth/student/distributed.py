"""Training on several processes: `torchrun --nproc-per-node N` or `accelerate launch` over `train`.

Both launchers start one process per device and describe the job in the environment (`RANK`,
`LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`); the Hugging Face Trainer under every student
reads the same variables and wraps the model in DistributedDataParallel. What this module adds is what
the Trainer leaves to its caller:

- **one process group, up front** (`setup`): joined before the corpus is read, so work done before
  training can be shared; NCCL on GPUs with gloo beside it for CPU tensors (as accelerate joins it),
  gloo on the CPU. The Trainer and accelerate find it joined and use it.
- **one source of the training data** (`on_main`): rank 0 builds the examples (mining hard negatives
  with the base, scoring lists) and sends them to the others. Every rank computing its own would cost
  each GPU the mining and could diverge (GPU kernels are not bit-exact: a near tie among mined
  negatives falls another way), and the distributed sampler assumes one dataset on every rank.
- **one clock** (`from_main`): `--max-minutes` decides on rank 0's clock, so every rank stops at the
  same step and applies the same learning rate (a rank that stopped alone would hang the others).
- **one writer** (`World.is_main`): rank 0 alone writes the student directory, `r2r_config.json`,
  `calibration.jsonl` and `rejects.jsonl`; the other ranks write nothing and exit 0.

Refused with a `ConfigError` (exit 2) before anything is read: a launch environment that does not
add up, `--device` naming one GPU (each process takes the GPU of its `LOCAL_RANK`), more processes
on a machine than it has GPUs, and (in `check_global_batch`) fewer examples than one global batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from r2r_synth.errors import ConfigError, R2RError

T = TypeVar("T")

# The launch variables torchrun and `accelerate launch` (torchrun underneath on GPUs) set.
_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class World:
    """This process's place in the job: `rank` among `size` processes, `local_rank` on its machine."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """The `World` the launcher described in the environment (one process when it described none);
    a `ConfigError` when its variables do not add up."""
    raw = {name: os.environ.get(name) for name in _ENV}
    if raw["WORLD_SIZE"] in (None, ""):
        return World()
    try:
        size = int(raw["WORLD_SIZE"])
        rank = int(raw["RANK"] or 0)
        local = int(raw["LOCAL_RANK"] or rank)
    except ValueError:
        shown = ", ".join(f"{k}={v!r}" for k, v in raw.items())
        raise ConfigError(f"the launch environment is not numbers: {shown}",
                          hint="start several processes with torchrun or accelerate launch, which set "
                          "RANK, LOCAL_RANK and WORLD_SIZE; unset them for one process") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ConfigError(f"the launch environment does not add up: RANK={rank}, LOCAL_RANK={local}, "
                          f"WORLD_SIZE={size} (expected 0 <= RANK < WORLD_SIZE)",
                          hint="start several processes with torchrun or accelerate launch, which set them; "
                          "unset RANK, LOCAL_RANK and WORLD_SIZE for one process")
    return World(rank=rank, local_rank=local, size=size)


_objects: Any = None  # the gloo group that carries CPU tensors and objects (None: the default group does)


def setup(*, device: str | None) -> World:
    """Check the launch against `device` and join the process group (a no-op for one process).
    Returns this process's `World`."""
    w = world()
    if not w.distributed:
        return w
    import torch
    import torch.distributed as dist

    dev = (device or "").lower()
    if dev.startswith("mps"):
        raise ConfigError(f"--device {device} runs in one process; this is one of {w.size}",
                          hint="train on CUDA GPUs or the CPU under torchrun / accelerate launch, or drop the launcher")
    if ":" in dev:
        raise ConfigError(f"--device {device} names one device, but {w.size} processes were launched: each "
                          "takes the GPU of its LOCAL_RANK",
                          hint="drop --device (or pass --device cuda); choose the GPUs with CUDA_VISIBLE_DEVICES")
    cuda = dev == "cuda" or (not dev and torch.cuda.is_available())
    if dev == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but torch sees no GPU", hint="drop --device, or pass --device cpu")
    if cuda:
        gpus = torch.cuda.device_count()
        if w.local_rank >= gpus:
            raise ConfigError(f"process {w.rank} is number {w.local_rank} on its machine, which has {gpus} GPU"
                              f"{'s' if gpus != 1 else ''}: more processes than GPUs",
                              hint=f"launch at most {gpus} processes per machine (--nproc-per-node / "
                              "--num-processes), or --device cpu")
        torch.cuda.set_device(w.local_rank)
    global _objects, _backend
    if not dist.is_initialized():
        # accelerate's own choice on GPUs: NCCL for CUDA tensors, gloo beside it for CPU ones
        dist.init_process_group(backend="cuda:nccl,cpu:gloo" if cuda else "gloo")
        _backend = "nccl" if cuda else "gloo"
    else:  # joined by the caller (a script that calls `train` itself)
        _backend = str(dist.get_backend())
        if "gloo" not in _backend:
            _objects = dist.new_group(backend="gloo")
    return w


_backend: str | None = None


def backend() -> str | None:
    """The process group's backend (`nccl` on GPUs, `gloo` on the CPU), None for one process."""
    import torch.distributed as dist

    return _backend if dist.is_available() and dist.is_initialized() else None


def on_main(fn: Callable[[], T]) -> T:
    """`fn()` on rank 0, its result sent to every rank (a plain call for one process). An error on
    rank 0 is raised on every rank, so none waits for data that will not come."""
    w = world()
    if not w.distributed:
        return fn()
    import torch.distributed as dist

    box: list[Any] = [None]
    error: BaseException | None = None
    if w.is_main:
        try:
            box = [("ok", fn())]
        except BaseException as e:  # noqa: BLE001 - re-raised below, after the others are told
            error = e
            # Our errors travel whole (exit code, message, fix); anything else by name.
            box = [("error", e if isinstance(e, R2RError) else R2RError(f"rank 0 failed: {type(e).__name__}: {e}"))]
    dist.broadcast_object_list(box, src=0, group=_objects)
    if error is not None:
        raise error
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def from_main(value: float) -> float:
    """Rank 0's `value` on every rank (`value` itself for one process): a decision taken on one clock."""
    w = world()
    if not w.distributed:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.broadcast(t, src=0, group=_objects)
    return float(t.item())


def teardown() -> None:
    """Leave the process group (a no-op where none was joined): every rank has finished training by then."""
    import sys

    if "torch.distributed" not in sys.modules:
        return  # torch was never loaded: nothing was joined (and `--help`-fast paths stay fast)
    import torch.distributed as dist

    global _objects, _backend
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _objects = _backend = None


def check_global_batch(examples: int, *, per_device: int, accumulation: int = 1) -> None:
    """A `ConfigError` when `examples` cannot fill one global batch (processes x `per_device` x
    `accumulation`): some process would train on repeats of the others' examples, not its own."""
    w = world()
    need = w.size * per_device * accumulation
    if w.distributed and examples < need:
        raise ConfigError(
            f"the corpus gives {examples} training examples; {w.size} processes x --batch-size {per_device}"
            f"{f' x {accumulation} accumulation steps' if accumulation > 1 else ''} need at least {need} for one step",
            hint=f"lower --batch-size to {max(1, examples // w.size)} or less, launch fewer processes, or train "
            "on a larger corpus",
        )


def describe(*, per_device: int, accumulation: int = 1) -> dict[str, Any]:
    """How the student was trained, for `r2r_config.json`'s `training.distributed`."""
    w = world()
    return {"world_size": w.size, "backend": backend(), "per_device_batch": per_device,
            "gradient_accumulation": accumulation, "global_batch": w.size * per_device * accumulation}
