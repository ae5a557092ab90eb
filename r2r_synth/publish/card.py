"""The dataset card: YAML metadata (license, task, size, one `configs` entry per record kind) and a body
whose r2r-synth part sits between markers, so a card edited by people on the Hub is merged, not replaced.
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path, PurePath
from typing import Any

from r2r_synth.publish.provenance import kind_section, read_optimize_report
from r2r_synth.publish.rows import COLUMN_DOCS, columns_markdown
from r2r_synth.rundir import KIND_ORDER, Run
from r2r_synth.runstats import summarize

log = logging.getLogger(__name__)

TASK_CATEGORIES = ["text-ranking"]
TAGS = ["reranking", "reasoning", "distillation", "synthetic", "r2r-synth"]
BEGIN, END = "<!-- r2r-synth:begin -->", "<!-- r2r-synth:end -->"
R2R_BIBTEX = """@article{ji2024reasontorank,
  title   = {Reason-to-Rank: Distilling Direct and Comparative Reasoning from Large Language Models for Document Reranking},
  author  = {Ji, Yuelyu and Li, Zhuochun and Meng, Rui and He, Daqing},
  journal = {arXiv preprint arXiv:2410.05168},
  year    = {2024}
}"""
_KIND_DOC = {
    "direct": "query, one document, the teacher's reasoning, a graded label 0–3 and a score in [0, 1]",
    "comparison": "query, two documents, why one beats the other (`preferred` A/B), asked in both orders",
    "listwise": "query, a window of documents, the teacher's ranking and a reason per document",
}
_SIZE_RANK = ["n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
              "1B<n<10B", "n>1T"]
_SECTION_RE = re.compile(r"<!-- r2r-synth:config (\S+) -->\n.*?\n<!-- /r2r-synth:config \1 -->", re.DOTALL)


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    for bound, name in bounds:
        if n < bound:
            return name
    return "n>1T" if n >= 10**12 else "1B<n<10B"


def _input_of(config: dict[str, Any], extra: dict[str, Any]) -> str | None:
    """The `--input` a run was generated from: its config's, or, for a run `filter` wrote, its parent's
    (read from the parent's command, as the manifest keeps it)."""
    if isinstance(config.get("input"), str):
        return config["input"]
    parent = (extra.get("filter") or {}).get("parent") or {}
    try:
        words = shlex.split(parent.get("command") or "")
    except ValueError:
        return None
    for i, w in enumerate(words):
        if w in ("--input", "-i") and i + 1 < len(words):
            return words[i + 1]
        if w.startswith("--input="):
            return w.partition("=")[2]
    return None


def source_datasets_of(run: Run) -> list[str]:
    """What the run's own provenance says its data came from: an ir_datasets id (`irds:...`) it was
    generated from, or R2R's release for an imported corpus. Local files name no dataset: nothing."""
    m = run.manifest
    if m is None:
        return []
    out = []
    if m.extra.get("provenance") == "imported":
        names = ", ".join(PurePath(x["path"]).name for x in m.extra.get("sources", []))
        out.append(f"Reason-to-Rank (R2R) release{f': {names}' if names else ''}")
    source = _input_of(m.config, m.extra)
    if source and source.startswith("irds:"):
        out.append(source)
    return out


def _configs_entry(kind: str, split_names: list[str]) -> dict[str, Any]:
    return {"config_name": kind,
            "data_files": [{"split": s, "path": f"data/{kind}/{s}-*"} for s in split_names]}


def _section(kind: str, body: str) -> str:
    return f"<!-- r2r-synth:config {kind} -->\n{body.rstrip()}\n<!-- /r2r-synth:config {kind} -->"


def build_card(run: Run, *, repo_id: str, license: str, splits: dict[str, float], seed: int,
               rows: dict[str, dict[str, int]], existing_card: str | None, command: str,
               optimize_report: Path | None = None, prompt_texts: dict[tuple[str, str], str] | None = None,
               language: list[str] | None = None, source_datasets: list[str] | None = None):
    """The dataset card for `run`, merged into `existing_card` when given: the configs this run publishes
    are added or replaced, other configs and their sections are kept, and text outside the markers is
    left as it was. `language` and `source_datasets` are added to the card's own (a repository that
    holds several runs names them all); `optimize_report` is quoted as given (`publish` checks that it
    belongs to the run first)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    summary = summarize(run)
    optimize = read_optimize_report(optimize_report)
    old = DatasetCard(existing_card) if existing_card else None
    old_meta = old.data.to_dict() if old is not None else {}
    old_body = old.text if old is not None else ""

    # configs: ours replace same-named ones; the others stay as they were.
    ours = {k: _configs_entry(k, list(rows[k])) for k in rows}
    configs = [c for c in (old_meta.get("configs") or []) if c.get("config_name") not in ours]
    configs += [ours[k] for k in KIND_ORDER if k in ours]
    order = {k: i for i, k in enumerate(KIND_ORDER)}
    configs.sort(key=lambda c: order.get(c.get("config_name"), len(order)))
    if not any(c.get("default") for c in configs):
        configs[0] = {**configs[0], "default": True}

    if old_meta.get("license") and old_meta["license"] != license:
        log.warning("the card's license changes from %s to %s (--license)", old_meta["license"], license)
    total = sum(n for per in rows.values() for n in per.values())
    sizes = [_size_category(total)] + [s for s in (old_meta.get("size_categories") or []) if s in _SIZE_RANK]
    keep = {k: v for k, v in old_meta.items()
            if k not in {"license", "task_categories", "size_categories", "configs", "tags", "pretty_name",
                         "language", "source_datasets", "annotations_creators", "multilinguality"}}
    langs = list(dict.fromkeys([*_as_list(old_meta.get("language")), *(language or [])]))
    sources = list(dict.fromkeys([*_as_list(old_meta.get("source_datasets")), *(source_datasets or [])]))
    data = DatasetCardData(
        license=license,
        language=langs or None,
        multilinguality=("monolingual" if len(langs) == 1 else "multilingual") if langs else None,
        # The reasoning and labels are written by a model; the queries and documents come from the input.
        annotations_creators=["machine-generated"],
        source_datasets=sources or None,
        task_categories=sorted(set(TASK_CATEGORIES) | set(old_meta.get("task_categories") or [])),
        size_categories=[max(sizes, key=_SIZE_RANK.index)],
        tags=list(dict.fromkeys([*(old_meta.get("tags") or []), *TAGS])),
        pretty_name=old_meta.get("pretty_name") or repo_id.split("/")[-1],
        configs=configs,
        **keep,
    )

    # Body: keep text outside our markers; keep sections of configs we do not publish now.
    sections: dict[str, str] = {}
    before, after = old_body, ""
    if BEGIN in old_body and END in old_body:
        before, rest = old_body.split(BEGIN, 1)
        managed, after = rest.split(END, 1)
        sections = {m.group(1): m.group(0) for m in _SECTION_RE.finditer(managed)}
    for k, per_split in rows.items():
        sections[k] = _section(k, kind_section(
            k, summary[k], run, rows=per_split, splits=splits, seed=seed, command=command,
            optimize=optimize, optimize_name=optimize_report.name if optimize is not None else None,
            prompt_texts=prompt_texts or {}))
    names = [c["config_name"] for c in configs]
    load = "\n".join(f'{k} = load_dataset("{repo_id}", name="{k}")' for k in names)
    table = "\n".join(["| config | what a row is |", "|---|---|"] + [
        f"| `{k}` | {_KIND_DOC.get(k, 'see its section below')} |" for k in names])
    columns = "\n\n".join(f"### Columns of `{k}`\n\n{columns_markdown(k)}" for k in names if k in COLUMN_DOCS)
    about = (f"**Language:** {', '.join(f'`{x}`' for x in langs) if langs else 'not given'}. **Source datasets:** "
             + (", ".join(f"`{x}`" for x in sources) if sources else "not known from the run's provenance "
                "(`publish --source-dataset NAME` names one)") + ".")
    managed = "\n\n".join([
        f"# {data.pretty_name}",
        ("Reasoning-about-relevance data for training explainable rerankers, after Reason-to-Rank "
         "(R2R, arXiv 2410.05168), made with r2r-synth. "
         "Every row carries its provenance: teacher model, program and prompt hashes, tokens and cost."),
        "## Configs\n\n" + table,
        about,
        "Splits are by query (no query is in two splits, in any config).\n\n```python\n"
        "from datasets import load_dataset\n\n" + load + "\n```",
        ("## Columns\n\nEach config's Parquet files hold these columns (the record schema flattened: provenance "
         "fields become columns, a listwise window stays a list of structs)."),
        columns,
        "## Provenance",
        *[sections[k] for k in sorted(sections, key=lambda k: order.get(k, len(order)))],
        "## Citation\n\nIf you use this data, please cite Reason-to-Rank:\n\n```bibtex\n" + R2R_BIBTEX + "\n```",
    ])
    body = f"{before.rstrip()}\n\n{BEGIN}\n{managed}\n{END}\n{after.lstrip()}".lstrip("\n")
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _as_list(v: Any) -> list[str]:
    return [v] if isinstance(v, str) else [str(x) for x in v] if isinstance(v, list) else []
