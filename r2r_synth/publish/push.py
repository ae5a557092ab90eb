"""`publish()`: check the arguments and the run, then write the dataset folder and push it to the Hub in
one commit (or, with `dry_run`, only write it)."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path

from r2r_synth import __version__
from r2r_synth.atomic import check_dir_target
from r2r_synth.config import scrub, secret_values
from r2r_synth.errors import InputError, R2RError
from r2r_synth.publish.card import source_datasets_of
from r2r_synth.publish.folder import PublishResult, build_folder
from r2r_synth.publish.provenance import select_optimize_report
from r2r_synth.publish.rows import DEFAULT_SHARD_ROWS, parse_split
from r2r_synth.rundir import RunDir

log = logging.getLogger(__name__)

LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")  # ISO 639, optionally with a region: en, en-US
# Shown when --license is missing: the license is the data owner's decision, never a default.
COMMON_LICENSES = ("cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc0-1.0", "odc-by", "mit", "apache-2.0", "other")


def _check_no_secrets(run: RunDir, secrets: list[str]) -> None:
    """Refuse to publish a run any of whose files (program snapshots included) holds a secret: altering
    the data would be wrong, and pushing it would leak the secret."""
    if not secrets:
        return
    needles = [s.encode() for s in secrets]
    for top in run.run_files():
        for p in sorted(top.rglob("*")) if top.is_dir() else [top]:
            data = p.read_bytes() if p.is_file() else b""
            if any(n in data for n in needles):
                raise R2RError(f"{p} contains the value of a secret (an API key or token); refusing to publish it",
                               hint="remove the secret from the run's files (or rotate it) and publish again")


def check_languages(codes: list[str] | tuple[str, ...]) -> list[str]:
    """`codes` as the card's `language` list: ISO 639-1/2/3 codes (`en`, `deu`), optionally with a region
    (`en-US`), or the Hub's `multilingual`; anything else is an `InputError`."""
    out = []
    for code in codes:
        c = code.strip()
        if c != "multilingual" and not LANGUAGE.match(c):
            raise InputError(f"--language {code!r} is not an ISO 639 language code",
                             hint="e.g. --language en (repeat it for several: --language en --language de)")
        out.append(c)
    if not out:
        raise InputError("--language is empty", hint="e.g. --language en")
    return list(dict.fromkeys(out))


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
    command: str = "r2r-synth publish",
    shard_rows: int = DEFAULT_SHARD_ROWS,
    language: list[str] | tuple[str, ...] = ("en",),
    source_datasets: list[str] | tuple[str, ...] = (),
) -> PublishResult:
    """Publish a run directory as one dataset repository (one config per record kind).

    With `dry_run`, nothing is pushed: the folder `out` receives exactly the files that would be (an
    existing `out/README.md` is merged like the repository's card). Without it, the files are staged
    in `out` (or a temporary folder) and pushed in one commit that also deletes the stale shards of
    the configs being replaced.

    The card's `language` is `language` (ISO 639 codes of the queries and documents: English unless
    told); its `source_datasets` are what the run's provenance names (an `irds:` input, R2R's release
    for an imported corpus) and `source_datasets`. `optimize_report` is quoted only when it belongs to
    the run's programs (`select_optimize_report`); otherwise the result says why it was left out.
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
    language = check_languages(language)
    if out is not None:
        check_dir_target(out, what="--out")  # before the Hub is asked or a file is written
    splits = parse_split(split)
    secrets = secret_values() + ([token] if token else [])
    command = scrub(command, extra=[token] if token else None)
    rundir = RunDir(run_dir)
    run = rundir.load()
    _check_no_secrets(rundir, secrets)
    prompt_texts = rundir.prompt_texts()
    optimize, optimize_note = select_optimize_report(optimize_report, run)
    if optimize is None:
        optimize_report = None
    sources = list(dict.fromkeys([*source_datasets_of(run), *(s.strip() for s in source_datasets if s.strip())]))
    card_args = {"optimize_report": optimize_report, "prompt_texts": prompt_texts, "language": language,
                 "source_datasets": sources}

    if dry_run:
        out.mkdir(parents=True, exist_ok=True)
        card_path = out / "README.md"
        existing = card_path.read_text(encoding="utf-8") if card_path.exists() else None
        result = build_folder(run, folder=out, repo_id=repo_id, license=license, splits=splits, seed=seed,
                              existing_card=existing, command=command, shard_rows=shard_rows, secrets=secrets,
                              **card_args)
        result.dry_run, result.optimize_note = True, optimize_note
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
                              existing_card=existing, command=command, shard_rows=shard_rows, secrets=secrets,
                              **card_args)
        result.optimize_note = optimize_note
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
