"""BRIGHT (Su et al., 2024, reasoning-intensive retrieval; https://huggingface.co/datasets/xlangai/BRIGHT)
as an input, read by `datasets` in its Hugging Face layout.

The dataset has one config per part and one split per domain (biology, economics, leetcode, ...):
  - `examples/<domain>-*.parquet`: `id`, `query`, `gold_ids` (the relevant documents), `excluded_ids`
    (documents BRIGHT leaves out of that query's ranking), plus columns r2r-synth does not read
    (`reasoning`, `gold_ids_long`, `gold_answer`);
  - `documents/<domain>-*.parquet`: `id`, `content`.

`bright:<domain>` loads the Hub's copy (`load_dataset("xlangai/BRIGHT", "examples", split=domain)`,
cached under ~/.cache/huggingface after the first download); a directory holding `examples/` and
`documents/` (a local copy, e.g. `hf download xlangai/BRIGHT --repo-type dataset --local-dir BRIGHT`)
is read with `--split <domain>`. BM25 ranks the domain's documents for each query, as for any corpus;
a query's `excluded_ids` never become its candidates, and its `gold_ids` are its qrels (grade 1).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from r2r_synth.errors import InputError
from r2r_synth.schemas import Candidates, Document

log = logging.getLogger(__name__)

BRIGHT_PREFIX = "bright:"
HUB_ID = "xlangai/BRIGHT"
EXAMPLE_FIELDS = ("id", "query", "gold_ids")
DOCUMENT_FIELDS = ("id", "content")
HINT = (f"BRIGHT is read in its Hugging Face layout: bright:<domain> (the Hub's {HUB_ID}), or a local copy "
        "holding examples/<domain>-*.parquet and documents/<domain>-*.parquet given with --split <domain>")


def is_bright_dir(path: Path) -> bool:
    """A local copy of BRIGHT: `examples/` and `documents/` folders of per-domain files."""
    return (path / "examples").is_dir() and (path / "documents").is_dir()


def _files(path: Path, config: str, domain: str) -> list[Path]:
    folder = path / config
    for pattern in (f"{domain}-*.parquet", f"{domain}.parquet", f"{domain}-*.jsonl", f"{domain}.jsonl",
                    f"{domain}.json"):
        found = sorted(folder.glob(pattern))
        if found:
            return found
    return []


def domains(path: Path) -> list[str]:
    """The domains a local copy holds (from the names of its examples files)."""
    names = {f.name.split("-", 1)[0].split(".", 1)[0] for f in (path / "examples").iterdir() if f.is_file()}
    return sorted(n for n in names if n and not n.startswith("."))


def source_files(path: Path, domain: str | None) -> tuple[str, list[Path], list[Path]]:
    """(domain, examples files, documents files) of a local copy; refuses a domain it lacks."""
    names = domains(path)
    if domain is None:
        raise InputError(f"{path}: a BRIGHT copy needs --split <domain> (it holds {', '.join(names) or 'none'})",
                         hint=f"pass --split {names[0] if names else 'biology'}")
    examples, documents = _files(path, "examples", domain), _files(path, "documents", domain)
    if not examples or not documents:
        missing = "examples" if not examples else "documents"
        raise InputError(f"{path}: no {missing} files for domain {domain!r} (domains here: {', '.join(names)})",
                         hint=f"choose one of them with --split, or add {missing}/{domain}-00000-of-00001.parquet")
    return domain, examples, documents


def _load(files: list[Path] | None, config: str, domain: str) -> Any:
    import datasets

    try:
        if files is None:
            return datasets.load_dataset(HUB_ID, config, split=domain)
        builder = "parquet" if files[0].suffix == ".parquet" else "json"
        return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:  # offline, unknown split, bad file
        where = HUB_ID if files is None else ", ".join(str(f) for f in files)
        raise InputError(f"{where}: cannot read BRIGHT's {config} of domain {domain!r}: {str(e).splitlines()[0]}",
                         hint=f"{HINT}; without the Hub, download it once where the Hub is reachable") from None


def _rows(ds: Any, fields: tuple[str, ...], where: str) -> list[dict[str, Any]]:
    missing = [f for f in fields if f not in ds.column_names]
    if missing:
        raise InputError(f"{where}: not BRIGHT's layout: no column {', '.join(missing)} "
                         f"(its columns: {', '.join(ds.column_names)})", hint=HINT)
    return list(ds.select_columns([*fields, *(["excluded_ids"] if "excluded_ids" in ds.column_names else [])]))


def load_bright(source: str | Path, *, split: str | None = None, limit: int | None = None,
                depth: int = 100) -> list[Candidates]:
    """Candidates of one BRIGHT domain: `source` is `bright:<domain>` or a local copy with `split`
    naming the domain. BM25 top-`depth` over the domain's documents, `excluded_ids` left out."""
    from r2r_synth.io.beir import rank_collection

    if isinstance(source, str) and source.startswith(BRIGHT_PREFIX):
        domain = source[len(BRIGHT_PREFIX):] or None
        if domain is None or (split is not None and split != domain):
            raise InputError(f"{source}: name one domain, e.g. bright:biology (and no other --split)", hint=HINT)
        ex_files = doc_files = None
        where_ex = where_doc = f"{HUB_ID} ({domain})"
    else:
        domain, ex_files, doc_files = source_files(Path(source), split)
        where_ex, where_doc = str(ex_files[0]), str(doc_files[0])
    examples = _rows(_load(ex_files, "examples", domain), EXAMPLE_FIELDS, where_ex)
    documents = _rows(_load(doc_files, "documents", domain), DOCUMENT_FIELDS, where_doc)
    docs: dict[str, Document] = {}
    for i, row in enumerate(documents, start=1):
        if not isinstance(row["id"], str) or not isinstance(row["content"], str):
            raise InputError(f"{where_doc}: row {i}: id and content must be strings", hint=HINT)
        docs[row["id"]] = Document(docid=row["id"], text=row["content"])
    if not docs:
        raise InputError(f"{where_doc}: no documents for domain {domain!r}", hint=HINT)
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    excluded: dict[str, set[str]] = {}
    for i, row in enumerate(examples, start=1):
        qid, gold = row["id"], row["gold_ids"]
        if not isinstance(qid, str) or not isinstance(row["query"], str) or not isinstance(gold, list):
            raise InputError(f"{where_ex}: row {i}: id and query must be strings and gold_ids a list", hint=HINT)
        if qid in queries:
            raise InputError(f"{where_ex}: row {i}: query {qid} appears twice", hint="each id must be unique")
        queries[qid] = row["query"]
        qrels[qid] = {str(g): 1 for g in gold}
        excluded[qid] = {str(d) for d in row.get("excluded_ids") or [] if str(d) != "N/A"}
    if not queries:
        raise InputError(f"{where_ex}: no examples for domain {domain!r}", hint=HINT)
    # Rank deeper by the most a query excludes, so each keeps `depth` candidates once they are out.
    extra = max((len(e) for e in excluded.values()), default=0)
    out = []
    for c in rank_collection(docs, queries, qrels, limit=limit, depth=depth + extra):
        drop = excluded.get(c.query.qid, set())
        keep = [i for i, d in enumerate(c.documents) if d.docid not in drop][:depth]
        out.append(c.model_copy(update={"documents": [c.documents[i] for i in keep],
                                        "scores": [c.scores[i] for i in keep] if c.scores is not None else None}))
    return out


def describe(source: str | Path, *, split: str | None) -> dict[str, Any]:
    """What a BRIGHT input reads: the domain (its split) and the examples and documents files."""
    if isinstance(source, str) and source.startswith(BRIGHT_PREFIX):
        domain = source[len(BRIGHT_PREFIX):]
        where = f"{HUB_ID}:examples/{domain}"
        return {"split": domain, "queries": [where], "qrels": [f"{where} (gold_ids)"]}
    domain, ex_files, _ = source_files(Path(source), split)
    return {"split": domain, "queries": [str(f) for f in ex_files], "qrels": [f"{f} (gold_ids)" for f in ex_files]}
