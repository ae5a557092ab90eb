"""The reasoning student's training data: one group per query (its documents with the teacher's
values, verdicts and reasoning), a dataset that adds other queries' passages as negatives, and the
collator that batches whole queries so the ranking losses see complete lists."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from r2r_synth.errors import InputError
from r2r_synth.student.corpus import TrainingView, ViewQuery
from r2r_synth.student.reasoning.options import ReasoningOptions
from r2r_synth.student.reasoning.template import Encoder


@dataclass
class Item:
    """One document of a training list: text, teacher value, verdict target, reasoning."""

    text: str
    value: float | None  # for ranking losses; higher = better; None = not ordered by the teacher
    verdict: bool | None  # None = no verdict target
    reasoning: str | None


@dataclass
class Group:
    """One query's training list: its documents and the teacher's pairwise preferences between them."""

    query: str
    items: list[Item]
    prefs: list[tuple[int, int]] = field(default_factory=list)  # (winner index, loser index)


def groups_from_view(view: TrainingView, opts: ReasoningOptions) -> list[Group]:
    """One `Group` per query with a label the student can learn (`opts.labels`: the teacher's or
    gold); `InputError` when no query has one."""
    groups: list[Group] = []
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


def _group(q: ViewQuery, opts: ReasoningOptions) -> Group | None:
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
    items = [Item(text=d.text, value=v, verdict=y, reasoning=r) for d, v, y, r in zip(docs, values, verdicts, reasons)]
    if not any(it.value is not None or it.verdict is not None for it in items) and not prefs:
        return None
    return Group(query=q.text, items=items, prefs=prefs)


class GroupDataset(torch.utils.data.Dataset):
    """One element per query; `negatives` passages of other queries join each list as "no",
    ranked below all of the query's own documents (the teacher's own five are too alike to teach
    what an off-topic passage looks like; BM25 top-100 is full of those)."""

    def __init__(self, groups: list[Group], *, negatives: int, seed: int):
        self.groups = groups
        self.negatives = negatives if len(groups) > 1 else 0
        self.seed = seed

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> Group:
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
            extra.append(Item(text=other[rng.randrange(len(other))].text, value=low, verdict=False, reasoning=None))
        n = len(g.items)
        prefs = list(g.prefs) + [(a, n + k) for a in range(n) for k in range(len(extra)) if g.items[a].value is None]
        return Group(query=g.query, items=g.items + extra, prefs=prefs)


class GroupCollator:
    """Batches whole queries: every document of a query lands in the same batch, so the ranking
    losses see complete lists. Emits flat (documents x tokens) tensors for the model plus the list
    structure (`slot`, `teacher`, `list_mask`, `prefer`) that only `compute_loss` reads."""

    def __init__(self, encoder: Encoder, *, pad_id: int):
        self.encoder = encoder
        self.pad_id = pad_id

    def __call__(self, groups: list[Group]) -> dict[str, torch.Tensor]:
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
