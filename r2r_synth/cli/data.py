"""`r2r-synth publish`, `import`, `export` and `report`: what happens to a run directory after `generate`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from r2r_synth.cli.app import _command_line, app
from r2r_synth.cli.options import JsonOpt, OutOpt, ProgramsDirOpt, RunDirArg, SeedOpt
from r2r_synth.cli.output import reports
from r2r_synth.config import DEFAULT_PROGRAMS_DIR
from r2r_synth.plural import plural


@app.command()
@reports
def publish(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `generate` or `import`, or a student "
                                            "directory written by `train`.", exists=True, file_okay=False)],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Repository, user/name: a dataset for a run, a model for "
                                         "a student directory.")],
    license: Annotated[
        str | None,
        typer.Option("--license", help="Hub license id of the dataset, e.g. cc-by-4.0, mit, other. Required: "
                     "never assumed."),
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="Splits by query, NAME=FRACTION,... e.g. train=0.9,test=0.1.")
    ] = "train=1",
    seed: SeedOpt = 0,
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch to push to (created if missing).")] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Hugging Face token (default: HF_TOKEN or the `hf auth login` cache). "
                     "Never written anywhere."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Push nothing: write exactly what would be pushed into --out.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the dataset files (required with --dry-run).")
    ] = None,
    optimize_report: Annotated[
        Path | None,
        typer.Option("--optimize-report", help="Optimize report to quote in the card when it belongs to the run's "
                     "programs (default: <programs-dir>/optimize_report.json when it exists).", exists=True,
                     dir_okay=False),
    ] = None,
    programs_dir: ProgramsDirOpt = DEFAULT_PROGRAMS_DIR,
    evaluation: Annotated[
        Path | None,
        typer.Option("--evaluation", exists=True, dir_okay=False,
                     help="Student directory: the evaluation.json of `r2r-synth evaluate` for the model card's table."),
    ] = None,
    dataset: Annotated[
        list[str] | None,
        typer.Option("--dataset", metavar="REPO", show_default=False,
                     help="Student directory: the Hub dataset its corpus was published to, for the card; repeatable."),
    ] = None,
    language: Annotated[
        list[str] | None,
        typer.Option("--language", metavar="CODE", show_default=False,
                     help="ISO 639 code of the queries' and documents' language, for the card (default: en; "
                     "repeat for several)."),
    ] = None,
    source_dataset: Annotated[
        list[str] | None,
        typer.Option("--source-dataset", metavar="NAME", show_default=False,
                     help="A dataset the inputs came from, for the card, beside what the run names itself (an "
                     "irds: input, R2R's release); repeatable."),
    ] = None,
    json_out: JsonOpt = False,
) -> object:
    """Publish a run as a Hugging Face dataset (one config per record kind, Parquet shards, a dataset card), or a
    student directory of `train` as a model repository (the model, a sentence-transformers model card)."""
    from r2r_synth.publish.model import is_student_dir

    if is_student_dir(run_dir):
        return _publish_student(run_dir, repo_id=repo_id, license=license, evaluation=evaluation,
                                datasets=dataset or [], private=private, revision=revision, token=token,
                                dry_run=dry_run, out=out)
    from r2r_synth.config import PublishConfig
    from r2r_synth.publish import publish as do_publish

    if optimize_report is None and (programs_dir / "optimize_report.json").is_file():
        optimize_report = programs_dir / "optimize_report.json"
    cfg = PublishConfig(run_dir=run_dir, repo_id=repo_id, license=license, split=split, seed=seed, private=private,
                        revision=revision, token=token, dry_run=dry_run, out=out, optimize_report=optimize_report,
                        programs_dir=programs_dir, **({"language": language} if language else {}),
                        source_datasets=source_dataset or [])
    res = do_publish(cfg.run_dir, repo_id=cfg.repo_id, license=cfg.license, split=cfg.split, seed=cfg.seed,
                     private=cfg.private, revision=cfg.revision, token=cfg.token, dry_run=cfg.dry_run, out=cfg.out,
                     optimize_report=cfg.optimize_report, command=_command_line(token), language=cfg.language,
                     source_datasets=cfg.source_datasets)
    for kind, per in res.rows.items():
        typer.echo(f"{kind}: " + ", ".join(f"{s} {n} rows" for s, n in per.items()))
    typer.echo(f"language: {', '.join(res.language)}" + ("" if language else " (the default; --language sets it)"))
    typer.echo("source datasets: " + (", ".join(res.source_datasets) if res.source_datasets else
                                      "none known (the run's input names none; --source-dataset adds one)"))
    if res.optimize_report is not None:
        typer.echo(f"optimize report: {res.optimize_report} (it scored this run's programs)")
    if res.optimize_note:
        typer.echo(f"optimize report left out of the card: {res.optimize_note}", err=True)
    if res.dry_run:
        typer.echo(f"dry run: {len(res.files)} files written to {res.folder} (nothing pushed)")
    else:
        typer.echo(f"pushed {len(res.files)} files ({len(res.deleted)} stale deleted): {res.commit_url}")
    return res


def _publish_student(student_dir: Path, *, repo_id: str, license: str | None, evaluation: Path | None,
                     datasets: list[str], private: bool, revision: str | None, token: str | None, dry_run: bool,
                     out: Path | None) -> object:
    from r2r_synth.publish.model import publish_model

    res = publish_model(student_dir, repo_id=repo_id, license=license, evaluation=evaluation, datasets=datasets,
                        private=private, revision=revision, token=token, dry_run=dry_run, out=out)
    typer.echo(f"{res.kind} student, base model {res.base_model}; evaluation table: "
               + (", ".join(res.evaluation) if res.evaluation else "none (--evaluation adds it)"))
    if res.dry_run:
        typer.echo(f"dry run: {len(res.files)} files written to {res.folder} (nothing pushed)")
    else:
        typer.echo(f"pushed {len(res.files)} files: {res.commit_url}")
    return res


@app.command("import")
@reports
def import_cmd(
    paths: Annotated[
        list[Path], typer.Argument(help="R2R listwise .jsonl files (e.g. msmarco_500.jsonl).", exists=True,
                                   dir_okay=False)
    ],
    out: OutOpt,
    name: Annotated[
        str, typer.Option("--name", help="Provenance teacher string of the records; starts with 'imported:'.")
    ] = "imported:r2r-gpt4",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in --out.")] = False,
    json_out: JsonOpt = False,
) -> object:
    """Import corpora released in R2R's listwise format into a run directory (listwise records)."""
    from r2r_synth.config import ImportConfig
    from r2r_synth.importer import import_r2r

    cfg = ImportConfig(paths=paths, out=out, name=name, overwrite=overwrite)
    res = import_r2r(cfg.paths, out=cfg.out, name=cfg.name, overwrite=cfg.overwrite, command=_command_line(),
                     config=cfg.public_dict())
    typer.echo(f"{plural(res.records, 'listwise record')} from {plural(res.queries, 'query')}, "
               f"{plural(res.rejects, 'reject')} -> {res.out}")
    for reason, n in res.reject_reasons.items():
        typer.echo(f"  rejected {n}: {reason} (see {res.out / 'rejects.jsonl'})")
    return res


class ExportFormat(str, Enum):
    r2r = "r2r"


@app.command()
@reports
def export(
    run_dir: RunDirArg,
    out: Annotated[Path, typer.Option("--out", "-o", dir_okay=False, help="The file to write.")],
    format: Annotated[ExportFormat, typer.Option("--format", help="r2r: R2R's training format (the shape of its "
                                                 "msmarco_500.jsonl), one line per listwise window.")] = ExportFormat.r2r,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    json_out: JsonOpt = False,
) -> object:
    """Export a run's listwise records in R2R's format, for R2R's own trainer; `import` reads them back."""
    from r2r_synth.config import ExportConfig
    from r2r_synth.export import export_run

    cfg = ExportConfig(run_dir=run_dir, out=out, format=format.value, overwrite=overwrite)
    res = export_run(cfg.run_dir, out=cfg.out, fmt=cfg.format, overwrite=cfg.overwrite)
    typer.echo(f"{plural(res.rows, 'listwise row')} from {plural(res.queries, 'query')} ({res.repaired} with a "
               f"repaired permutation) -> {res.out}")
    return res


@app.command()
@reports
def report(
    run_dir: RunDirArg,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: RUN_DIR/report).")] = None,
    evaluation: Annotated[
        Path | None,
        typer.Option("--evaluation", "-e", help="JSON written by `r2r-synth evaluate`, for the nDCG@10 bars.",
                     exists=True, dir_okay=False),
    ] = None,
    samples: Annotated[
        int, typer.Option("--samples", min=0, metavar="N",
                          help="Example records shown per kind, those that disagree with gold first (0: none).")
    ] = 5,
    json_out: JsonOpt = False,
) -> object:
    """Write a self-contained HTML report about a run directory: the problems its data shows, example
    records with the teacher's reasoning, plots (embedded)."""
    from r2r_synth.config import ReportConfig
    from r2r_synth.report import build_report

    cfg = ReportConfig(run_dir=run_dir, out=out, evaluation=evaluation, samples=samples)
    res = build_report(cfg.run_dir, out=cfg.out, evaluation=cfg.evaluation, samples=cfg.samples)
    typer.echo(f"{res.html} ({len(res.plots)} plots)")
    for name, why in res.missing.items():
        typer.echo(f"  no {name} plot: {why}")
    for p in res.problems:
        typer.echo(f"  problem ({p.kind}): {p.check}")
    return res



@app.command("filter")
@reports
def filter_cmd(
    run_dir: RunDirArg,
    out: OutOpt,
    swap_consistent: Annotated[
        bool, typer.Option("--swap-consistent", help="Keep only comparisons whose two orders prefer the same "
                           "document (one asked in one order only is dropped too).")
    ] = False,
    max_gold_distance: Annotated[
        int | None, typer.Option("--max-gold-distance", min=0, max=2, help="Drop direct records whose grade is "
                                 "more than this from the gold grade (judged records only).")
    ] = None,
    min_confidence: Annotated[
        float | None, typer.Option("--min-confidence", min=0.0, max=1.0, help="Drop records under this confidence: "
                                   "comparison `confidence` (the lower of both orders); direct max(score, 1 - score).")
    ] = None,
    min_words: Annotated[
        int | None, typer.Option("--min-words", min=0, help="Drop records with a reasoning text of fewer words.")
    ] = None,
    max_words: Annotated[
        int | None, typer.Option("--max-words", min=0, help="Drop records with a reasoning text of more words.")
    ] = None,
    min_ndcg: Annotated[
        float | None, typer.Option("--min-ndcg", min=0.0, max=1.0, help="Drop listwise rankings whose nDCG@10 "
                                   "against the window's gold grades is under this.")
    ] = None,
    exact_duplicates: Annotated[
        bool, typer.Option("--exact-duplicates", help="Drop a record whose reasoning (normalized) equals that of a "
                           "record kept before it.")
    ] = False,
    near_duplicates: Annotated[
        float | None, typer.Option("--near-duplicates", min=0.0, max=1.0, help="Drop a record whose reasoning has "
                                   "at least this Jaccard similarity (word 5-shingles, MinHash LSH) with one kept "
                                   "before it, e.g. 0.8.")
    ] = None,
    self_consistency: Annotated[
        int | None, typer.Option("--self-consistency", min=1, help="Keep a request's majority answer when at least "
                                 "this many of its rollouts agree; drop the other rollouts.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in --out.")] = False,
    json_out: JsonOpt = False,
) -> dict:
    """Curate a run: the records every named rule keeps go to a new run directory, the others to its
    filtered.jsonl with the rule that dropped them."""
    from r2r_synth.config import FilterConfig
    from r2r_synth.filter import filter_run

    cfg = FilterConfig(run_dir=run_dir, out=out, swap_consistent=swap_consistent, max_gold_distance=max_gold_distance,
                       min_confidence=min_confidence, min_words=min_words, max_words=max_words, min_ndcg=min_ndcg,
                       exact_duplicates=exact_duplicates, near_duplicates=near_duplicates,
                       self_consistency=self_consistency, overwrite=overwrite)
    res = filter_run(cfg, command=_command_line())
    kinds = res.funnel["kinds"]
    typer.echo(f"{run_dir}: " + ", ".join(f"{k} {v['input']}" for k, v in kinds.items()) + " records")
    typer.echo(f"{'kind':<11} {'rule':<17} {'applies':>8} {'dropped':>8} {'flagged':>8}")
    for kind, v in kinds.items():
        for rule, c in v["rules"].items():
            typer.echo(f"{kind:<11} {rule:<17} {c['applies']:>8} {c['dropped']:>8} {c['flagged']:>8}")
    kept = sum(v["kept"] for v in kinds.values())
    total = sum(v["input"] for v in kinds.values())
    typer.echo(f"kept {kept} of {total} (" + ", ".join(f"{k} {v['kept']}" for k, v in kinds.items())
               + f"); {total - kept} filtered -> {res.out / 'filtered.jsonl'}")
    typer.echo("  (dropped: by the first rule, in this order, to drop the record; flagged: by the rule alone)")
    if res.manifest.status != "complete":
        typer.echo(f"note: {run_dir} is {res.manifest.status!r}; the filtered run says so too")
    return {"out": res.out, "status": res.manifest.status, "kept": kept, "filtered": total - kept, **res.funnel}
