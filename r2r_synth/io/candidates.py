"""One entry point for every input: `load_candidates(source)` -> a list of `Candidates`.

`source` may be
  (a) a RankGPT-style JSON file (`[{"query", "hits": [{"qid", "docid", "content", "score"}]}]`),
      labels from `qrels=` (TREC or BEIR qrels);
  (b) a JSONL of `Candidates` records (`r2r-synth schema candidates`);
  (c) a BEIR directory (corpus.jsonl, queries*.jsonl, qrels) or a TREC collection directory
      (SGML documents and topics, a qrels file): a BM25 first stage (bm25s) makes the candidates;
  (d) `irds:<ir_datasets id>`: documents, queries, qrels and (when the dataset has them) the
      first-stage scoreddocs from ir_datasets, else BM25 over its documents;
  (e) BRIGHT: `bright:<domain>` (the Hub's xlangai/BRIGHT) or a local copy with `split=<domain>`
      (`r2r_synth.io.bright`).

`split` picks one split of a BEIR directory (default `test` where it has one, else its only one) or
the domain of a local BRIGHT copy; `describe_input` says which queries and qrels files a source
reads, for the configs, evaluations and cards that record it.

Queries keep their input order; `limit` keeps the first N and `depth` the top K candidates of each.
Every problem is an `InputError` that names the file and line (or JSON entry) and says the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from r2r_synth.errors import InputError
from r2r_synth.io.jsonl import describe_validation, iter_json_lines
from r2r_synth.io.text import first_line
from r2r_synth.io.trec import Qrels, candidates_from_run, read_qrels
from r2r_synth.plural import plural
from r2r_synth.schemas import Candidates

__all__ = ["DEFAULT_DEPTH", "apply_qrels", "candidates_from_run", "describe_input", "load_candidates", "truncate"]

log = logging.getLogger(__name__)

IRDS_PREFIX = "irds:"
BRIGHT_PREFIX = "bright:"
DEFAULT_DEPTH = 100

ACCEPTED = (
    "accepted inputs: a RankGPT JSON file ([{\"query\", \"hits\": [...]}]); a JSONL of candidate lists "
    "(see `r2r-synth schema candidates`); a BEIR directory (corpus.jsonl, queries.jsonl, qrels/*.tsv); "
    "a TREC collection directory (<DOC> documents, <top> topics, qrels); irds:<ir_datasets id>; or BRIGHT "
    "(bright:<domain>, or a local copy with --split <domain>)"
)


def load_candidates(
    source: str | Path,
    *,
    qrels: Path | None = None,
    limit: int | None = None,
    depth: int | None = None,
    split: str | None = None,
) -> list[Candidates]:
    """Load queries with their ranked candidate documents (and gold labels where known).

    Args:
        source: a file, a directory or `irds:<id>` (see the module docstring).
        qrels: TREC or BEIR qrels. When given they are the gold labels of every query, replacing
            any labels the source carries.
        limit: keep only the first N queries, in input order.
        depth: keep only the top K candidates per query. For corpus-only sources (BEIR, TREC
            collections, ir_datasets without scoreddocs) it is also how deep BM25 retrieves
            (default 100).
        split: the split of a BEIR directory (default: `test`, else its only split), or the domain
            of a local BRIGHT copy; refused for any other source.

    Raises:
        InputError: the source is missing, of an unknown kind, or malformed (naming `path:line`).
    """
    for name, value in (("limit", limit), ("depth", depth)):
        if value is not None and value < 1:
            raise InputError(f"{name} must be at least 1, got {value}", hint=f"give a positive {name}, or leave it out")
    gold = read_qrels(qrels) if qrels is not None else None

    text = str(source)
    # Corpus-only sources rank only the first `limit` queries (BM25 is the costly part), so they
    # return an already limited list; files are read whole and cut here.
    whole = limit is None
    _check_split(source, split)
    if text.startswith(BRIGHT_PREFIX):
        from r2r_synth.io.bright import load_bright

        out = load_bright(text, split=split, limit=limit, depth=depth or DEFAULT_DEPTH)
    elif text.startswith(IRDS_PREFIX):
        from r2r_synth.io.irds import load_irds

        out = load_irds(text[len(IRDS_PREFIX):], limit=limit, depth=depth or DEFAULT_DEPTH)
    else:
        path = Path(source)
        if path.is_dir():
            out = _load_dir(path, limit=limit, depth=depth or DEFAULT_DEPTH, split=split, own_qrels=gold is None)
        elif path.is_file():
            out = _load_file(path, qrels=None)
            whole = True
        else:
            raise InputError(f"{path}: no such file or directory", hint=ACCEPTED)

    if gold is not None:
        out = apply_qrels(out, gold, qrels_path=qrels, strict=whole)
    if limit is not None:
        out = out[:limit]
    if depth is not None:
        out = [truncate(c, depth) for c in out]
    empty = [c.query.qid for c in out if not c.documents]
    if empty:
        # Kept, not dropped: an evaluation must count these queries (they score zero), and generate
        # simply has nothing to ask about them.
        log.warning("%d of %d queries have no candidates (qids %s)", len(empty), len(out), ", ".join(empty[:10]))
    return out


def _check_split(source: str | Path, split: str | None) -> None:
    if split is None or str(source).startswith(BRIGHT_PREFIX):
        return
    from r2r_synth.io import beir, bright

    path = Path(source)
    if not (path.is_dir() and (beir.is_beir_dir(path) or bright.is_bright_dir(path))):
        raise InputError(f"--split {split}: {source} is not a BEIR directory or a BRIGHT copy, so it has no splits",
                         hint="leave --split out (a file, a TREC collection or an irds: id names its queries itself)")


def describe_input(source: str | Path, *, qrels: Path | None = None, split: str | None = None) -> dict[str, Any]:
    """Which split, queries and qrels files `load_candidates(source, qrels=, split=)` reads:
    ``{"split", "queries": [...], "qrels": [...]}``, paths as given (a card makes them portable).
    Reads file names only, not the files."""
    from r2r_synth.io import beir, bright

    text = str(source)
    out: dict[str, Any] = {"split": None, "queries": [text], "qrels": []}
    if text.startswith(BRIGHT_PREFIX):
        out = bright.describe(text, split=split)
    elif text.startswith(IRDS_PREFIX):
        out["qrels"] = [text]
    else:
        path = Path(source)
        if path.is_dir() and beir.is_beir_dir(path):
            if qrels is None or split is not None:
                files = beir.beir_files(path, split=split)
                out = {"split": files.split, "queries": [str(p) for p in files.queries],
                       "qrels": [str(p) for p in files.qrels]}
            else:  # --qrels gives the labels: every query of the directory is read
                out["queries"] = [str(p) for p in beir.beir_query_files(path)]
        elif path.is_dir() and bright.is_bright_dir(path):
            out = bright.describe(path, split=split)
        elif path.is_dir():
            files = beir.trec_collection_files(path)
            out["queries"], out["qrels"] = [str(files["topics"])], [str(files["qrels"])]
    if qrels is not None:
        out["qrels"] = [str(qrels)]  # --qrels replaces whatever labels the source carries
    return out


def truncate(c: Candidates, depth: int) -> Candidates:
    """The top `depth` candidates of `c` (scores cut alongside)."""
    if len(c.documents) <= depth:
        return c
    return c.model_copy(
        update={"documents": c.documents[:depth], "scores": c.scores[:depth] if c.scores is not None else None}
    )


def apply_qrels(
    cands: list[Candidates], qrels: Qrels, *, qrels_path: Path | str | None = None, strict: bool = True
) -> list[Candidates]:
    """Set each query's gold labels from `qrels` (replacing any it had).

    Qrels that judge none of the queries are almost surely for another collection: with `strict`
    (the queries are the whole input) that is an error rather than a silent run without labels;
    without it (a first slice, which may hold only unjudged queries) it is a logged warning.
    """
    if cands and not any(c.query.qid in qrels for c in cands):
        sample = ", ".join(c.query.qid for c in cands[:3])
        message = (
            f"{qrels_path or 'qrels'}: judges none of the {plural(len(cands), 'query')} (their qids start {sample}; "
            f"the qrels' start {', '.join(list(qrels)[:3])})"
        )
        if strict:
            raise InputError(message, hint="give the qrels of the same collection as the input")
        log.warning("%s", message)
    return [c.model_copy(update={"qrels": dict(qrels.get(c.query.qid, {}))}) for c in cands]


# --------------------------------------------------------------------------- files


def _load_file(path: Path, *, qrels: Qrels | None) -> list[Candidates]:
    first = first_line(path)[:1]
    if not first:
        raise InputError(f"{path}: the file is empty", hint=ACCEPTED)
    if first == "[":
        from r2r_synth.io.rankgpt import read_rankgpt

        return read_rankgpt(path, qrels=qrels)
    if first == "{":
        if path.name.endswith((".json", ".json.gz")):
            from r2r_synth.io.rankgpt import refuse_single_entry

            refuse_single_entry(path)
        return _load_jsonl(path, qrels=qrels)
    raise InputError(
        f"{path}: not a JSON or JSONL candidates file (it starts with {first!r}). If it is a TREC run, "
        "give it with its corpus and queries (`candidates_from_run`, `--corpus`)",
        hint=ACCEPTED,
    )


def _load_jsonl(path: Path, *, qrels: Qrels | None) -> list[Candidates]:
    lineno, obj = next(iter_json_lines(path), (1, {}))
    if "hits" in obj and "query" in obj:
        return _load_rankgpt_lines(path, qrels=qrels)
    if "re_rank_id" in obj and "unsorted_docs" in obj:
        raise InputError(
            f"{path}:{lineno}: this is an R2R listwise corpus (teacher output), not candidate lists",
            hint="bring it in with `r2r-synth import`",
        )
    if "_id" in obj and "documents" not in obj:
        raise InputError(
            f"{path}:{lineno}: this looks like a BEIR corpus or queries file (it has `_id`), not candidate lists",
            hint="give the BEIR directory that holds it (corpus.jsonl, queries.jsonl, qrels) as the input",
        )
    out: list[Candidates] = []
    seen: dict[str, int] = {}
    for i, row in iter_json_lines(path):
        try:
            c = Candidates.model_validate(row)
        except ValidationError as e:
            raise InputError(f"{path}:{i}: not a valid Candidates record: {describe_validation(e)}",
                             hint="see `r2r-synth schema candidates` for the fields a candidate list takes") from None
        if c.query.qid in seen:
            raise InputError(
                f"{path}:{i}: qid {c.query.qid} already appeared on line {seen[c.query.qid]}",
                hint="give each query one candidate list (merge their documents)",
            )
        seen[c.query.qid] = i
        out.append(c)
    return out


def _load_rankgpt_lines(path: Path, *, qrels: Qrels | None) -> list[Candidates]:
    """RankGPT entries one per line (JSONL) rather than in one array."""
    from r2r_synth.io.rankgpt import parse_entry

    out: list[Candidates] = []
    seen: dict[str, int] = {}
    for i, obj in iter_json_lines(path):
        c = parse_entry(obj, where=f"{path}:{i}", qrels=qrels)
        if c.query.qid in seen:
            raise InputError(f"{path}:{i}: qid {c.query.qid} already appeared on line {seen[c.query.qid]}",
                             hint="give each query one entry (merge their hits)")
        seen[c.query.qid] = i
        out.append(c)
    return out


# --------------------------------------------------------------------------- directories


def _load_dir(path: Path, *, limit: int | None, depth: int, split: str | None, own_qrels: bool
              ) -> list[Candidates]:
    from r2r_synth.io import beir, bright

    if beir.is_beir_dir(path):
        return beir.load_beir(path, limit=limit, depth=depth, split=split, own_qrels=own_qrels)
    if bright.is_bright_dir(path):
        return bright.load_bright(path, split=split, limit=limit, depth=depth)
    if beir.is_trec_collection_dir(path):
        return beir.load_trec_collection(path, limit=limit, depth=depth)
    listing = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
    raise InputError(f"{path}: a directory that is neither a BEIR nor a TREC collection (it holds {listing})",
                     hint=ACCEPTED)
