"""`r2r-synth publish`: a run directory -> one Hugging Face dataset repository with a dataset card.

Layout of the repository (what `--dry-run --out DIR` writes into DIR, byte for byte):

    README.md                                   the dataset card (YAML metadata + provenance)
    data/<kind>/<split>-00000-of-0000N.parquet  one config per record kind: direct, comparison, listwise

The card's YAML `configs` list names each config's files per split, so
`datasets.load_dataset(repo_or_dir, name="direct")` loads one record kind. Splits are made *by query*:
a query's records all land in one split, for every kind, so no query is on both sides. Which split a
query lands in depends only on its qid and `--seed` (a hash, not a shuffle of this run's queries), so
a second run published to the same repository with the same seed keeps every query on its side.

Publishing into a repository that already has a card updates it: the configs this run publishes are
added or replaced (their old shards deleted), other configs and their sections are kept, and text
outside the sections r2r-synth manages is left as it was.

Pushing goes through `huggingface_hub.HfApi` (`create_repo`, `create_branch`, `create_commit`); no
hand-written HTTP. The token is passed to `HfApi` and nowhere else: card, files and logs never hold it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r2r_synth import __version__
from r2r_synth.config import scrub, secret_values
from r2r_synth.errors import InputError, R2RError
from r2r_synth.rundir import KIND_ORDER, Run, RunDir
from r2r_synth.runstats import KindSummary, summarize
from r2r_synth.schemas import RECORD_FILES

log = logging.getLogger(__name__)

# Shown when --license is missing: the license is the data owner's decision, never a default.
COMMON_LICENSES = ("cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc0-1.0", "odc-by", "mit", "apache-2.0", "other")
TASK_CATEGORIES = ["text-ranking"]
TAGS = ["reranking", "reasoning", "distillation", "synthetic", "r2r-synth"]
SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
DEFAULT_SHARD_ROWS = 100_000
BEGIN, END = "<!-- r2r-synth:begin -->", "<!-- r2r-synth:end -->"
R2R_BIBTEX = """@article{ji2024reasontorank,
  title   = {Reason-to-Rank: Distilling Direct and Comparative Reasoning from Large Language Models for Document Reranking},
  author  = {Ji, Yuelyu and Li, Zhuochun and Meng, Rui and He, Daqing},
  journal = {arXiv preprint arXiv:2410.05168},
  year    = {2024}
}"""


# ----------------------------------------------------------------------------- splits


def parse_split(spec: str) -> dict[str, float]:
    """Parse `train=0.9,test=0.1` into {'train': 0.9, 'test': 0.1}; fractions must be > 0 and sum to 1."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, sep, frac = part.partition("=")
        name = name.strip()
        if not sep or not SPLIT_NAME.match(name):
            raise InputError(f"--split {spec!r}: {part!r} is not NAME=FRACTION",
                             hint="e.g. --split train=0.9,test=0.1 (names: letters, digits, underscores)")
        try:
            value = float(frac)
        except ValueError:
            raise InputError(f"--split {spec!r}: {frac!r} is not a number", hint="e.g. --split train=0.9,test=0.1") from None
        if not 0.0 < value <= 1.0:
            raise InputError(f"--split {spec!r}: fraction of {name!r} is {value}; it must be in (0, 1]",
                             hint="e.g. --split train=0.9,test=0.1")
        if name in out:
            raise InputError(f"--split {spec!r}: split {name!r} is named twice", hint="name each split once")
        out[name] = value
    if not out:
        raise InputError("--split is empty", hint="e.g. --split train=0.9,test=0.1, or train=1 for a single split")
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise InputError(f"--split {spec!r}: fractions sum to {total:g}, not 1", hint="e.g. --split train=0.9,test=0.1")
    return out


def split_of(qid: str, *, splits: dict[str, float], seed: int) -> str:
    """The split of a query: a uniform number from a hash of (seed, qid), cut by the fractions in order.
    Depends on nothing else, so every kind and every run put the same query on the same side."""
    import hashlib

    h = hashlib.sha256(f"{seed}\x00{qid}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    acc = 0.0
    names = list(splits)
    for name in names:
        acc += splits[name]
        if u < acc:
            return name
    return names[-1]


# ----------------------------------------------------------------------------- rows


def _schemas():
    import pyarrow as pa

    prov = [
        ("teacher", pa.string()), ("program", pa.string()), ("program_hash", pa.string()),
        ("prompt_hash", pa.string()), ("rollout_id", pa.int64()), ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()), ("total_tokens", pa.int64()), ("cost", pa.float64()),
        ("latency_s", pa.float64()), ("created_at", pa.timestamp("us", tz="UTC")),
        ("r2r_synth_version", pa.string()),
    ]
    doc = pa.struct([("docid", pa.string()), ("title", pa.string()), ("text", pa.string())])
    item = pa.struct([("docid", pa.string()), ("reason", pa.string()), ("comparison_reason", pa.string()),
                      ("answer_sentence", pa.string())])
    grade = pa.struct([("docid", pa.string()), ("grade", pa.int64())])
    s = pa.string
    return {
        "direct": pa.schema([
            ("key", s()), ("qid", s()), ("query", s()), ("docid", s()), ("title", s()), ("document", s()),
            ("reasoning", s()), ("relevance", pa.int64()), ("score", pa.float64()),
            ("first_stage_rank", pa.int64()), ("gold", pa.int64()), *prov,
        ]),
        "comparison": pa.schema([
            ("key", s()), ("qid", s()), ("query", s()),
            ("doc_a_id", s()), ("doc_a_title", s()), ("doc_a", s()),
            ("doc_b_id", s()), ("doc_b_title", s()), ("doc_b", s()),
            ("reasoning", s()), ("preferred", s()), ("confidence", pa.float64()),
            ("swapped_reasoning", s()), ("swapped_preferred", s()), ("swapped_confidence", pa.float64()),
            ("swap_agrees", pa.bool_()), ("gold_a", pa.int64()), ("gold_b", pa.int64()), ("pair_strategy", s()),
            *prov,
        ]),
        "listwise": pa.schema([
            ("key", s()), ("qid", s()), ("query", s()), ("documents", pa.list_(doc)), ("ranking", pa.list_(s())),
            ("items", pa.list_(item)), ("gold", pa.list_(grade)), *prov,
        ]),
    }


def _prov(p) -> dict[str, Any]:
    u = p.usage
    return {
        "teacher": p.teacher, "program": p.program, "program_hash": p.program_hash, "prompt_hash": p.prompt_hash,
        "rollout_id": p.rollout_id, "prompt_tokens": u.prompt_tokens if u else None,
        "completion_tokens": u.completion_tokens if u else None, "total_tokens": u.total_tokens if u else None,
        "cost": p.cost, "latency_s": p.latency_s, "created_at": p.created_at, "r2r_synth_version": p.r2r_synth_version,
    }


def record_row(rec) -> dict[str, Any]:
    """One record as a flat row (the Hub's viewer shows columns, not nested JSON). Listwise windows stay
    lists of structs; `gold` maps become lists of {docid, grade} so the Parquet schema is fixed."""
    if rec.kind == "direct":
        return {"key": rec.key, "qid": rec.query.qid, "query": rec.query.text, "docid": rec.document.docid,
                "title": rec.document.title, "document": rec.document.text, "reasoning": rec.reasoning,
                "relevance": rec.relevance, "score": rec.score, "first_stage_rank": rec.first_stage_rank,
                "gold": rec.gold, **_prov(rec.provenance)}
    if rec.kind == "comparison":
        sw = rec.swapped
        return {"key": rec.key, "qid": rec.query.qid, "query": rec.query.text,
                "doc_a_id": rec.doc_a.docid, "doc_a_title": rec.doc_a.title, "doc_a": rec.doc_a.text,
                "doc_b_id": rec.doc_b.docid, "doc_b_title": rec.doc_b.title, "doc_b": rec.doc_b.text,
                "reasoning": rec.reasoning, "preferred": rec.preferred, "confidence": rec.confidence,
                "swapped_reasoning": sw.reasoning if sw else None, "swapped_preferred": sw.preferred if sw else None,
                "swapped_confidence": sw.confidence if sw else None, "swap_agrees": rec.swap_agrees,
                "gold_a": rec.gold_a, "gold_b": rec.gold_b, "pair_strategy": rec.pair_strategy,
                **_prov(rec.provenance)}
    return {"key": rec.key, "qid": rec.query.qid, "query": rec.query.text,
            "documents": [{"docid": d.docid, "title": d.title, "text": d.text} for d in rec.documents],
            "ranking": list(rec.ranking),
            "items": [i.model_dump() for i in rec.items],
            "gold": [{"docid": d, "grade": g} for d, g in rec.gold.items()],
            **_prov(rec.provenance)}


# ----------------------------------------------------------------------------- the folder


@dataclass
class PublishResult:
    """What was (or, with `dry_run`, would be) pushed."""

    repo_id: str
    folder: Path
    files: list[str]
    deleted: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> split -> rows
    commit_url: str | None = None
    dry_run: bool = False


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    for bound, name in bounds:
        if n < bound:
            return name
    return "n>1T" if n >= 10**12 else "1B<n<10B"


_SIZE_RANK = ["n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
              "1B<n<10B", "n>1T"]


def _write_shards(rows: list[dict[str, Any]], *, schema, folder: Path, kind: str, split: str,
                  shard_rows: int) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = max(1, -(-len(rows) // shard_rows))
    out = []
    for i in range(n):
        chunk = rows[i * shard_rows:(i + 1) * shard_rows]
        rel = f"data/{kind}/{split}-{i:05d}-of-{n:05d}.parquet"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(chunk, schema=schema), path)
        out.append(rel)
    return out


def build_folder(
    run: Run,
    *,
    folder: Path,
    repo_id: str,
    license: str,
    splits: dict[str, float],
    seed: int,
    existing_card: str | None,
    command: str,
    optimize_report: Path | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    secrets: list[str] | None = None,
    prompt_texts: dict[str, str] | None = None,
) -> PublishResult:
    """Write the dataset folder (Parquet shards + README.md card) for `run` into `folder`.

    Existing `data/<kind>/` folders of the kinds this run publishes are replaced; other kinds are left.
    `existing_card` (the repository's current README.md, if any) is merged, not overwritten.
    """
    kinds = run.kinds
    if not kinds:
        raise InputError(f"{run.path}: every record file is empty; nothing to publish",
                         hint="generate some records first (rejects alone are not published)")
    schemas = _schemas()
    files: list[str] = []
    rows_per: dict[str, dict[str, int]] = {}
    for kind in kinds:
        by_split: dict[str, list[dict[str, Any]]] = {name: [] for name in splits}
        for rec in run.records[kind]:
            by_split[split_of(rec.query.qid, splits=splits, seed=seed)].append(record_row(rec))
        kdir = folder / "data" / kind
        if kdir.exists():
            shutil.rmtree(kdir)
        rows_per[kind] = {}
        for name, rows in by_split.items():
            if not rows:
                # An empty split is left out of the config rather than shipped as an empty file.
                log.warning("%s: split %r gets no query of this run; it is left out of the config", kind, name)
                continue
            files += _write_shards(rows, schema=schemas[kind], folder=folder, kind=kind, split=name,
                                   shard_rows=shard_rows)
            rows_per[kind][name] = len(rows)
    card = build_card(run, repo_id=repo_id, license=license, splits=splits, seed=seed, rows=rows_per,
                      existing_card=existing_card, command=command, optimize_report=optimize_report,
                      prompt_texts=prompt_texts)
    text = scrub(str(card), extra=secrets)
    (folder / "README.md").write_text(text, encoding="utf-8")
    files.append("README.md")
    return PublishResult(repo_id=repo_id, folder=folder, files=files, rows=rows_per)


# ----------------------------------------------------------------------------- the card


def _configs_entry(kind: str, split_names: list[str]) -> dict[str, Any]:
    return {"config_name": kind,
            "data_files": [{"split": s, "path": f"data/{kind}/{s}-*"} for s in split_names]}


def _section(kind: str, body: str) -> str:
    return f"<!-- r2r-synth:config {kind} -->\n{body.rstrip()}\n<!-- /r2r-synth:config {kind} -->"


_SECTION_RE = re.compile(r"<!-- r2r-synth:config (\S+) -->\n.*?\n<!-- /r2r-synth:config \1 -->", re.DOTALL)


def _fmt_cost(cost: float | None, unknown: int) -> str:
    if cost is None:
        return "unknown (the backend reported no price)"
    more = f" (+ {unknown} records with unknown cost)" if unknown else ""
    return f"${cost:.4f}{more}"


def _kind_section(kind: str, s: KindSummary, run: Run, *, rows: dict[str, int], splits: dict[str, float],
                  seed: int, command: str, optimize: dict[str, Any] | None, optimize_path: str | None,
                  prompt_texts: dict[str, str]) -> str:
    m = run.manifest
    lines = [f"### `{kind}`", ""]
    split_txt = ", ".join(f"{k}: {v}" for k, v in rows.items())
    lines.append(f"- **Records:** {s.records} from {s.queries} queries ({split_txt}); split by query "
                 f"with `--split {','.join(f'{k}={v:g}' for k, v in splits.items())} --seed {seed}`")
    lines.append(f"- **Teacher:** {', '.join(f'`{t}`' for t in s.teachers)}")
    progs = ", ".join(f"`{p}` (program hash `{h}`)" for p, h in s.programs.items())
    lines.append(f"- **Programs:** {progs}")
    if m is not None:
        for p in s.programs:
            h = m.prompts.get(p) or s.prompts.get(p)
            text = prompt_texts.get(p)
            if text is not None:
                lines += [f"- **Prompt** `{p}` (prompt hash `{h}`):", "", "  ```text",
                          *[f"  {ln}" for ln in text.strip().splitlines()], "  ```"]
            elif h:
                lines.append(f"- **Prompt** `{p}`: prompt hash `{h}` (its text was not found: no program in "
                             "--programs-dir or prompts/ has that hash)")
    lines.append(f"- **Rejects:** {s.rejects}" + (" — nothing was rejected" if not s.rejects else ""))
    for reason, n in s.reject_reasons:
        lines.append(f"  - {n} × {reason}")
    if kind == "direct":
        lab = ", ".join(f"{g}: {n}" for g, n in s.label_counts.items())
        lines.append(f"- **Teacher labels (0–3):** {lab}")
        if s.judged:
            agr = ", ".join(f"{k} {v:.3f}" for k, v in s.agreement.items())
            lines.append(f"- **Agreement with gold** ({s.judged} judged records): {agr}")
        else:
            lines.append("- **Agreement with gold:** no gold labels in this run")
    if kind == "comparison":
        pref = ", ".join(f"{g}: {n}" for g, n in s.preferred_counts.items())
        lines.append(f"- **Preferred:** {pref}")
        if s.swap_checked:
            lines.append(f"- **Swap consistency:** {s.swap_agree}/{s.swap_checked} = "
                         f"{s.swap_agree / s.swap_checked:.3f} (both orders prefer the same document)")
        else:
            lines.append("- **Swap consistency:** not measured (pairs were asked in one order only)")
        acc = {k: v for k, v in s.agreement.items() if k != "swap_consistency"}
        if s.judged and acc:
            lines.append(f"- **Agreement with gold** ({s.judged} pairs with different gold grades): "
                         + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    if kind == "listwise":
        lines.append(f"- **Gold labels:** {'present for ' + str(s.judged) + ' windows' if s.judged else 'none'}")
    lines.append(f"- **Tokens:** {s.prompt_tokens:,} prompt + {s.completion_tokens:,} completion "
                 f"= {s.total_tokens:,}; **cost:** {_fmt_cost(s.cost, s.cost_unknown)}")
    if m is not None:
        lines.append(f"- **Produced by:** r2r-synth {m.r2r_synth_version}: `{m.command}` "
                     f"(status `{m.status}`, started {m.started_at:%Y-%m-%d %H:%M} UTC)")
        if m.extra.get("provenance") == "imported":
            srcs = ", ".join(f"`{Path(x['path']).name}` (sha256 `{x['sha256'][:12]}`)" for x in m.extra.get("sources", []))
            lines.append(f"- **Imported** from {srcs}: the teacher output is someone else's, not generated here")
    lines.append(f"- **Published by:** r2r-synth {__version__}: `{command}`")
    if optimize is not None:
        lines += _optimize_lines(optimize, s.programs)
        lines += ["", f"<details><summary>Optimize report ({optimize_path})</summary>", "", "```json",
                  json.dumps(optimize, indent=2, ensure_ascii=False, default=str)[:20_000], "```", "", "</details>"]
    return "\n".join(lines)


def _fmt3(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"


def _optimize_lines(report: dict[str, Any], programs: dict[str, str]) -> list[str]:
    """What `optimize` did to the programs of this config: the primary metric before and after, and
    whether the optimized program is the one this run used (same program hash)."""
    out = []
    progs = report.get("programs") if isinstance(report.get("programs"), dict) else {}
    for name, used_hash in programs.items():
        p = progs.get(name)
        if not isinstance(p, dict):
            continue
        metric = p.get("primary_metric")
        before = (p.get("before") or {}).get(metric)
        after = (p.get("after") or {}).get(metric)
        same = used_hash in {p.get("program_hash_after"), p.get("program_hash_before")}
        out.append(
            f"- **Optimized** (`{report.get('optimizer') or 'evaluate only'}`, "
            f"{p.get('train_examples', '?')} train / {p.get('val_examples', '?')} validation examples): "
            f"{metric} {_fmt3(before)} -> {_fmt3(after)}; "
            + ("this run used that program" if same else
               f"**this run's program hash `{used_hash}` is not the one optimized** — the report may not apply")
        )
    return out


def _read_optimize_report(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e})", hint="pass the optimize_report.json that `optimize` wrote") from None


def build_card(run: Run, *, repo_id: str, license: str, splits: dict[str, float], seed: int,
               rows: dict[str, dict[str, int]], existing_card: str | None, command: str,
               optimize_report: Path | None = None, prompt_texts: dict[str, str] | None = None):
    """The dataset card for `run`, merged into `existing_card` when given (see the module docstring)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    summary = summarize(run)
    optimize = _read_optimize_report(optimize_report)
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
            if k not in {"license", "task_categories", "size_categories", "configs", "tags", "pretty_name"}}
    data = DatasetCardData(
        license=license,
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
        sections[k] = _section(k, _kind_section(
            k, summary[k], run, rows=per_split, splits=splits, seed=seed, command=command,
            optimize=optimize, optimize_path=str(optimize_report) if optimize is not None else None,
            prompt_texts=prompt_texts or {}))
    names = [c["config_name"] for c in configs]
    load = "\n".join(f'{k} = load_dataset("{repo_id}", name="{k}")' for k in names)
    table = "\n".join(["| config | what a row is |", "|---|---|"] + [
        f"| `{k}` | {_KIND_DOC.get(k, 'see its section below')} |" for k in names])
    managed = "\n\n".join([
        f"# {data.pretty_name}",
        ("Reasoning-about-relevance data for training explainable rerankers, after Reason-to-Rank "
         "(R2R, arXiv 2410.05168), made with r2r-synth. "
         "Every row carries its provenance: teacher model, program and prompt hashes, tokens and cost."),
        "## Configs\n\n" + table,
        "Splits are by query (no query is in two splits, in any config).\n\n```python\n"
        "from datasets import load_dataset\n\n" + load + "\n```",
        "## Provenance",
        *[sections[k] for k in sorted(sections, key=lambda k: order.get(k, len(order)))],
        "## Citation\n\nIf you use this data, please cite Reason-to-Rank:\n\n```bibtex\n" + R2R_BIBTEX + "\n```",
    ])
    body = f"{before.rstrip()}\n\n{BEGIN}\n{managed}\n{END}\n{after.lstrip()}".lstrip("\n")
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


_KIND_DOC = {
    "direct": "query, one document, the teacher's reasoning, a graded label 0–3 and a score in [0, 1]",
    "comparison": "query, two documents, why one beats the other (`preferred` A/B), asked in both orders",
    "listwise": "query, a window of documents, the teacher's ranking and a reason per document",
}


# ----------------------------------------------------------------------------- push


def find_prompt_texts(hashes: dict[str, str], *, programs_dir: Path | None = None) -> dict[str, str]:
    """Instruction text of each program whose prompt hash matches the run's: the optimized program in
    `programs_dir` or the fresh one from `prompts/<name>.md`. A text whose hash differs is never shown
    (it is not what the teacher saw)."""
    from r2r_synth.teacher.programs import (
        PROGRAM_NAMES,
        build_program,
        load_program,
        predictor_of,
        prompt_hash,
    )

    out: dict[str, str] = {}
    for name, h in hashes.items():
        if name not in PROGRAM_NAMES:
            continue
        candidates = []
        try:
            if programs_dir is not None:
                candidates.append(load_program(name, programs_dir=programs_dir).module)
            candidates.append(build_program(name))
        except InputError as e:
            log.warning("prompt text of %s not shown: %s", name, e.message)
            continue
        for module in candidates:
            if prompt_hash(module) == h:
                out[name] = predictor_of(module).signature.instructions
                break
    return out


def _check_no_secrets(run: Run, secrets: list[str]) -> None:
    """Refuse to publish a run whose files hold a secret: altering the data would be wrong, and
    pushing it would leak the secret."""
    if not secrets:
        return
    names = [*RECORD_FILES.values(), "manifest.json"]
    for name in names:
        p = run.path / name
        if p.exists():
            text = p.read_text(encoding="utf-8")
            if any(s in text for s in secrets):
                raise R2RError(f"{p} contains the value of a secret (an API key or token); refusing to publish it",
                               hint="remove the secret from the run's files (or rotate it) and publish again")


def publish(
    run_dir: Path,
    *,
    repo_id: str,
    license: str | None,
    split: str = "train=1",
    seed: int = 0,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    out: Path | None = None,
    optimize_report: Path | None = None,
    programs_dir: Path | None = None,
    command: str = "r2r-synth publish",
    shard_rows: int = DEFAULT_SHARD_ROWS,
) -> PublishResult:
    """Publish a run directory as one dataset repository (one config per record kind).

    With `dry_run`, nothing is pushed: the folder `out` receives exactly the files that would be (an
    existing `out/README.md` is merged like the repository's card). Without it, the files are staged
    in `out` (or a temporary folder) and pushed in one commit that also deletes the stale shards of
    the configs being replaced.
    """
    if not license:
        raise InputError(
            "--license is required: the dataset's license is yours to choose and is never assumed",
            hint=f"pass --license with a Hub license id, e.g. {', '.join(COMMON_LICENSES)} "
            "(the teacher's terms of use and the source documents' license may constrain it)",
        )
    if not re.match(r"^[\w.-]+/[\w.-]+$", repo_id or ""):
        raise InputError(f"--repo-id {repo_id!r} is not of the form user/name", hint="e.g. --repo-id alice/dl19-r2r")
    if dry_run and out is None:
        raise InputError("--dry-run needs --out DIR (the folder that receives what would be pushed)",
                         hint="e.g. --dry-run --out outputs/dl19-hub")
    if shard_rows < 1:
        raise InputError(f"shard_rows must be >= 1, got {shard_rows}", hint="e.g. 100000")
    splits = parse_split(split)
    secrets = secret_values() + ([token] if token else [])
    command = scrub(command, extra=[token] if token else None)
    run = RunDir(run_dir).load()
    _check_no_secrets(run, secrets)
    hashes = {p: h for k in summarize(run).values() for p, h in k.prompts.items()}
    prompt_texts = find_prompt_texts(hashes, programs_dir=programs_dir)

    if dry_run:
        out.mkdir(parents=True, exist_ok=True)
        card_path = out / "README.md"
        existing = card_path.read_text(encoding="utf-8") if card_path.exists() else None
        result = build_folder(run, folder=out, repo_id=repo_id, license=license, splits=splits, seed=seed,
                              existing_card=existing, command=command, optimize_report=optimize_report,
                              shard_rows=shard_rows, secrets=secrets, prompt_texts=prompt_texts)
        result.dry_run = True
        log.info("dry run: wrote %d files to %s", len(result.files), out)
        return result

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.utils import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi(token=token)
    log.info("creating (or reusing) dataset repo %s", repo_id)
    # private=None (not False) leaves an organization's default visibility alone.
    api.create_repo(repo_id, repo_type="dataset", private=True if private else None, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    try:
        remote = api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
        remote = []
    existing = None
    if "README.md" in remote:
        card_file = api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision)
        existing = Path(card_file).read_text(encoding="utf-8")

    staging = Path(tempfile.mkdtemp(prefix="r2r-publish-")) if out is None else out
    try:
        staging.mkdir(parents=True, exist_ok=True)
        result = build_folder(run, folder=staging, repo_id=repo_id, license=license, splits=splits, seed=seed,
                              existing_card=existing, command=command, optimize_report=optimize_report,
                              shard_rows=shard_rows, secrets=secrets, prompt_texts=prompt_texts)
        ours = set(result.files)
        stale = sorted(f for f in remote for k in result.rows
                       if f.startswith(f"data/{k}/") and f not in ours)
        ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(staging / f)) for f in result.files]
        ops += [CommitOperationDelete(path_in_repo=f) for f in stale]
        kinds = ", ".join(result.rows)
        info = api.create_commit(repo_id, operations=ops, repo_type="dataset", revision=revision,
                                 commit_message=f"r2r-synth {__version__}: publish {kinds} from {Path(run_dir).name}")
        result.deleted = stale
        result.commit_url = getattr(info, "commit_url", None) or str(info)
        log.info("pushed %d files (%d stale deleted) to %s", len(result.files), len(stale), repo_id)
        return result
    finally:
        if out is None:
            shutil.rmtree(staging, ignore_errors=True)
