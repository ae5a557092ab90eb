"""`r2r-synth publish <student dir>`: a trained student -> one Hugging Face model repository.

What `--dry-run --out DIR` writes into DIR (and a push commits):

    the model files as `train` saved them   loads with plain `SentenceTransformer(DIR)` / `CrossEncoder(DIR)`
    r2r_config.json                         the student's config, local paths made portable (see below)
    README.md                               the model card

**The card** is sentence-transformers' own (`generate_model_card` over the model's
`SentenceTransformerModelCardData` / `CrossEncoderModelCardData`: YAML metadata, usage snippet,
architecture), filled with the repository id, the license, the base model, the datasets and the tags,
and followed by r2r-synth's section: the base model, the corpus it learned from (each source, and for
a run directory its manifest's teacher, program hashes and record counts), the labels, the options
training resolved to, what training measured, and the evaluation table (`evaluation.json` of
`r2r-synth evaluate`, passed with `--evaluation`).

**No local paths.** A local absolute path (a base directory, a corpus file) is written by the one
rule of `r2r_synth.paths` (`/data/scifact` -> `.../scifact`; inside the current directory, relative
to it), in the card and in the published `r2r_config.json`; Hub ids and relative paths stay as given. Secrets (the token, secret-looking environment values) are scrubbed
from every text file written.

The reasoning student (a transformers causal LM) has no sentence-transformers card and is refused.
Pushing goes through `huggingface_hub.HfApi` (`create_repo`, `create_branch`, `create_commit`).
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
from r2r_synth.artifacts import R2R_CONFIG_FILE, EvaluationReport, R2RConfig, read_evaluation, read_r2r_config
from r2r_synth.atomic import check_dir_target, write_text_atomic
from r2r_synth.config import scrub, secret_values
from r2r_synth.errors import InputError
from r2r_synth.paths import portable

log = logging.getLogger(__name__)

CARD_KINDS = {"bi-encoder": "SentenceTransformer", "cross-encoder": "CrossEncoder"}
# the int8 files are rebuilt on load; calibration.jsonl holds training passages, never published with the model
SKIPPED = ("checkpoints", "onnx", "openvino", "calibration.jsonl", "rejects.jsonl", "README.md", R2R_CONFIG_FILE)
TAGS = ["r2r-synth", "reranking", "distillation"]


@dataclass
class ModelPublishResult:
    """What was (or, with `dry_run`, would be) pushed."""

    repo_id: str
    folder: Path
    files: list[str]
    kind: str
    base_model: str
    commit_url: str | None = None
    dry_run: bool = False
    evaluation: dict[str, dict[str, float]] = field(default_factory=dict)


def is_student_dir(path: Path) -> bool:
    """Whether `path` is a directory `r2r-synth train` wrote (it holds `r2r_config.json`)."""
    return (Path(path) / R2R_CONFIG_FILE).is_file()


def _manifest_facts(source: str) -> list[str]:
    """Lines about a corpus source: a run directory's teacher, programs and counts, from its manifest."""
    manifest = Path(source) / "manifest.json"
    if not manifest.is_file():
        return []
    try:
        m = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    lines = [f"  - teacher: `{m.get('teacher')}`"] if m.get("teacher") else []
    for name, h in (m.get("programs") or {}).items():
        lines.append(f"  - program `{name}`: hash `{h}`" + (f", prompt `{m['prompts'][name]}`"
                                                           if name in (m.get("prompts") or {}) else ""))
    counts = {k: (v.get("records") if isinstance(v, dict) else v) for k, v in (m.get("counts") or {}).items()}
    if counts:
        lines.append("  - records: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return lines


def _evaluation_table(ev: EvaluationReport) -> str:
    measures = list(ev.measures)
    head = "| system | " + " | ".join(measures) + " |\n|---|" + "---|" * len(measures) + "\n"
    rows = "".join(f"| {name} | " + " | ".join(f"{row.get(m, float('nan')):.4f}" for m in measures) + " |\n"
                   for name, row in ev.table().items())
    split = f", split `{ev.split}`" if ev.split else ""
    qrels = f", qrels `{portable(ev.qrels)}`" if ev.qrels else ""
    where = (f"{ev.judged_queries if ev.judged_queries is not None else '?'} judged queries of "
             f"`{portable(ev.input)}`{split}{qrels}, top {ev.depth} reranked")
    return f"Measured with `r2r-synth evaluate` ({where}):\n\n{head}{rows}"


def r2r_section(meta: R2RConfig, *, evaluation: EvaluationReport | None, datasets: list[str]) -> str:
    """The card's r2r-synth section (markdown) for a student's `r2r_config.json` `meta`."""
    corpus, options, config = meta.corpus, meta.options, meta.config
    labels = "human labels (qrels)" if options.get("labels") == "gold" else "a teacher LLM's labels"
    intro = (f"A **{meta.student}** student trained by r2r-synth {meta.r2r_synth_version} (after "
             f"[Reason-to-Rank](https://arxiv.org/abs/2410.05168)) from the base model `{portable(meta.base)}`, "
             f"on {labels}.")
    lines = ["## Trained with r2r-synth", "", intro, "", "### Corpus", ""]
    for src in corpus.get("sources", []):
        lines.append(f"- `{portable(src)}`")
        lines += _manifest_facts(src)
    if config.get("split"):
        lines.append(f"- split: `{config['split']}`")
    if config.get("qrels"):
        lines.append(f"- qrels: `{portable(config['qrels'])}`")
    lines += [f"- dataset on the Hub: [{d}](https://huggingface.co/datasets/{d})" for d in datasets]
    summary = {k: v for k, v in corpus.items() if k != "sources"}
    if summary:
        lines.append("- " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in summary.items()))
    lines += ["", "### Training options", "", "| option | value |", "|---|---|"]
    lines += [f"| {k} | `{json.dumps(portable(v))}` |" for k, v in options.items()]
    training = {k: v for k, v in meta.training.items() if k != "log"}
    if training:
        lines += ["", "### What training measured", "", "| | |", "|---|---|"]
        lines += [f"| {k} | `{json.dumps(v)}` |" for k, v in training.items()]
    lines += _hybrid_lines(meta)
    lines += ["", "### Evaluation", ""]
    lines.append(_evaluation_table(evaluation) if evaluation else "No evaluation was passed to `publish` "
                 "(`--evaluation outputs/eval/evaluation.json` adds the table).")
    lines += ["", ("The model's `r2r_config.json` holds all of the above; `r2r-synth evaluate --system DIR` and "
                   "`r2r-synth rerank --model DIR` use the downloaded folder as it is."), ""]
    return "\n".join(lines)


def _hybrid_lines(meta: R2RConfig) -> list[str]:
    """The card's "Ranking with BM25" part: the fusion `r2r-synth evaluate` and `rerank` apply, and the
    held-out training queries that chose it and the epoch."""
    hybrid, heldout = meta.hybrid, meta.heldout
    if hybrid is None:
        return []
    lines = ["", "### Ranking with BM25 (hybrid)", ""]
    if hybrid.weight > 0:
        how = ("`w * minmax(BM25) + (1 - w) * minmax(student)` per query" if hybrid.method == "minmax" else
               "`w / (60 + rank_BM25) + (1 - w) / (60 + rank_student)` (weighted reciprocal rank fusion)")
        lines.append(f"`r2r-synth evaluate` and `rerank` rank with the student fused with the first stage's BM25 "
                     f"scores: {how}, w = {hybrid.weight:g}; `--no-hybrid` ranks by the student alone. With "
                     "plain sentence-transformers, fuse the scores the same way.")
    else:
        lines.append("The student ranks alone (no fusion with BM25).")
    if hybrid.reason:
        lines += ["", f"Why: {hybrid.reason}."]
    if heldout is not None and heldout.chosen is not None:
        epochs = ", ".join(f"{e.epoch:g}: {e.ndcg_at_10:.4f}" for e in heldout.epochs)
        lines += ["", (f"Chosen on {len(heldout.qids)} training queries held out from training (share "
                       f"{heldout.fraction}, seed {heldout.seed}): nDCG@10 after each epoch {epochs}; "
                       f"the weights of epoch {heldout.chosen.epoch:g} are the ones published.")]
    return lines


def _load(kind: str, path: Path) -> Any:
    if kind == "bi-encoder":
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(path), device="cpu", local_files_only=True)
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(path), device="cpu", local_files_only=True)


def build_model_folder(student_dir: Path, *, folder: Path, repo_id: str, license: str,
                       evaluation: EvaluationReport | None, datasets: list[str], secrets: list[str]
                       ) -> ModelPublishResult:
    """Write the model repository's files for `student_dir` into `folder`."""
    meta = read_r2r_config(student_dir)
    kind = meta.student
    if kind not in CARD_KINDS:
        raise InputError(
            f"{student_dir}: a {kind!r} student; publish writes sentence-transformers model cards, for the "
            f"{' and '.join(CARD_KINDS)} students",
            hint="push a reasoning student's folder with `hf upload` (it loads with transformers' "
                 "AutoModelForCausalLM)",
        )
    model = _load(kind, Path(student_dir))
    base = portable(meta.base)
    card_data = model.model_card_data
    card_data.local_files_only = True  # never ask the Hub while writing the card
    card_data.set_model_id(repo_id)
    card_data.set_license(license)
    card_data.add_tags(TAGS + [kind])
    card_data.model_name = f"{kind} reranker trained with r2r-synth from {base}"
    if not meta.base.startswith(("/", ".")) and "/" in meta.base:
        card_data.base_model = meta.base  # a Hub id: the card's `base_model`
    if datasets:
        card_data.datasets = list(datasets)

    folder.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    for src in sorted(Path(student_dir).rglob("*")):
        rel = src.relative_to(student_dir)
        if rel.parts[0] in SKIPPED or not src.is_file():
            continue
        dst = folder / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        files.append(rel.as_posix())
    published = json.dumps(portable(meta.model_dump(mode="json")), indent=2) + "\n"
    write_text_atomic(folder / R2R_CONFIG_FILE, scrub(published, extra=secrets))
    from sentence_transformers.base.model_card import generate_model_card

    card_data.save_dir = str(folder)
    card = generate_model_card(model).rstrip() + "\n\n" + r2r_section(meta, evaluation=evaluation, datasets=datasets)
    write_text_atomic(folder / "README.md", scrub(card, extra=secrets))
    files += [R2R_CONFIG_FILE, "README.md"]
    table = evaluation.table() if evaluation else {}
    return ModelPublishResult(repo_id=repo_id, folder=folder, files=sorted(set(files)), kind=kind,
                              base_model=base, evaluation=table)


def publish_model(
    student_dir: Path,
    *,
    repo_id: str,
    license: str | None,
    evaluation: Path | None = None,
    datasets: list[str] | None = None,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    out: Path | None = None,
) -> ModelPublishResult:
    """Publish a student directory as one model repository (see the module docstring); with
    `dry_run`, only write the folder `out`."""
    if not license:
        raise InputError("--license is required: the model's license is yours to choose and is never assumed",
                         hint="pass --license with a Hub license id, e.g. apache-2.0 (the base's and the training "
                              "data's terms may constrain it)")
    if not re.match(r"^[\w.-]+/[\w.-]+$", repo_id or ""):
        raise InputError(f"--repo-id {repo_id!r} is not of the form user/name", hint="e.g. --repo-id alice/scifact-reranker")
    if dry_run and out is None:
        raise InputError("--dry-run needs --out DIR (the folder that receives what would be pushed)",
                         hint="e.g. --dry-run --out outputs/model-hub")
    if not is_student_dir(student_dir):
        raise InputError(f"{student_dir}: no {R2R_CONFIG_FILE}; not a directory `r2r-synth train` wrote",
                         hint="pass the --out directory of `r2r-synth train`")
    if out is not None:
        check_dir_target(out, what="--out")
    ev = read_evaluation(evaluation) if evaluation is not None else None
    for d in datasets or []:
        if not re.match(r"^[\w.-]+/[\w.-]+$", d):
            raise InputError(f"--dataset {d!r} is not a Hub dataset id of the form user/name",
                             hint="name the repository `r2r-synth publish RUN --repo-id` pushed the corpus to")
    secrets = secret_values() + ([token] if token else [])
    if dry_run:
        res = build_model_folder(student_dir, folder=out, repo_id=repo_id, license=license, evaluation=ev,
                                 datasets=list(datasets or []), secrets=secrets)
        res.dry_run = True
        return res

    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=True if private else None, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="r2r-publish-model-")) if out is None else out
    try:
        res = build_model_folder(student_dir, folder=staging, repo_id=repo_id, license=license, evaluation=ev,
                                 datasets=list(datasets or []), secrets=secrets)
        ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(staging / f)) for f in res.files]
        info = api.create_commit(repo_id, operations=ops, repo_type="model", revision=revision,
                                 commit_message=f"r2r-synth {__version__}: publish the {res.kind} student "
                                                f"{Path(student_dir).name}")
        res.commit_url = getattr(info, "commit_url", None) or str(info)
        log.info("pushed %d files to %s", len(res.files), repo_id)
        return res
    finally:
        if out is None:
            shutil.rmtree(staging, ignore_errors=True)
