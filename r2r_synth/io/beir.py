"""Corpus-only collections: BEIR directories and TREC collection directories, ranked by BM25.

A BEIR directory (https://github.com/beir-cellar/beir) holds
  - `corpus.jsonl`: `{"_id", "title", "text"}` per line;
  - `queries.jsonl` (or one or more `queries.<split>.jsonl`): `{"_id", "text"}` per line;
  - qrels: `qrels/<split>.tsv` or `qrels.<split>.tsv`, `query-id<TAB>corpus-id<TAB>score` with a header.
One split is read at a time (`--split`; default `test` where the directory has it, else its only
split), so training and test queries are never scored together.
A TREC collection directory (e.g. Vaswani/NPL) holds SGML documents (`<DOC><DOCNO>`), SGML or TSV
topics (`<top><num><title>`) and a TREC qrels file; the files are recognised by their content.

Queries keep the order of the queries file(s); all of them are kept, judged or not (a query without
qrels is still a query to generate reasoning for). BM25 (`r2r_synth.io.first_stage`) ranks the
corpus for each query.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from r2r_synth.errors import InputError
from r2r_synth.io.jsonl import iter_json_lines
from r2r_synth.io.text import first_line
from r2r_synth.io.trec import Qrels, read_qrels, read_topics, read_trec_docs
from r2r_synth.schemas import Candidates, Document, Query

log = logging.getLogger(__name__)

CORPUS_HINT = 'each corpus line is {"_id": str, "title": str, "text": str} (BEIR)'
QUERIES_HINT = 'each queries line is {"_id": str, "text": str} (BEIR)'


# --------------------------------------------------------------------------- BEIR files


def _text_field(obj: dict, key: str, path: Path, lineno: int, hint: str, *, required: bool) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise InputError(f"{path}:{lineno}: missing \"{key}\"", hint=hint)
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "_id":
        return str(value)  # numeric ids are common; ids are strings here
    if not isinstance(value, str):
        raise InputError(f"{path}:{lineno}: \"{key}\" must be a string, got {type(value).__name__}", hint=hint)
    return value


def read_corpus(path: Path | str) -> dict[str, Document]:
    """A BEIR `corpus.jsonl` as `{docid: Document}` in file order (an empty title becomes None)."""
    path = Path(path)
    docs: dict[str, Document] = {}
    for lineno, obj in iter_json_lines(path):
        docid = _text_field(obj, "_id", path, lineno, CORPUS_HINT, required=True)
        text = _text_field(obj, "text", path, lineno, CORPUS_HINT, required=True)
        title = _text_field(obj, "title", path, lineno, CORPUS_HINT, required=False)
        if not docid:
            raise InputError(f"{path}:{lineno}: empty \"_id\"", hint=CORPUS_HINT)
        if docid in docs:
            raise InputError(f"{path}:{lineno}: document {docid} appears twice", hint="each _id must be unique")
        docs[docid] = Document(docid=docid, text=text, title=title or None)
    if not docs:
        raise InputError(f"{path}: the corpus is empty", hint=CORPUS_HINT)
    return docs


def read_queries(path: Path | str) -> dict[str, str]:
    """A BEIR `queries.jsonl` as `{qid: text}` in file order."""
    path = Path(path)
    queries: dict[str, str] = {}
    for lineno, obj in iter_json_lines(path):
        qid = _text_field(obj, "_id", path, lineno, QUERIES_HINT, required=True)
        text = _text_field(obj, "text", path, lineno, QUERIES_HINT, required=True)
        if not qid or not text.strip():
            raise InputError(f"{path}:{lineno}: empty \"_id\" or \"text\"", hint=QUERIES_HINT)
        if qid in queries:
            raise InputError(f"{path}:{lineno}: query {qid} appears twice", hint="each _id must be unique")
        queries[qid] = text
    if not queries:
        raise InputError(f"{path}: no queries found (the file is empty)", hint=QUERIES_HINT)
    return queries


def _first_line(path: Path) -> str:
    """The first non-blank line, or "" for a file that is not readable text: a directory is sniffed
    file by file, and a stray binary file in it (a PDF, an archive) is simply not one of ours."""
    try:
        return first_line(path)
    except InputError:
        return ""


def read_any_corpus(path: Path) -> dict[str, Document]:
    """Documents from a BEIR corpus.jsonl, a TREC SGML file, or a BEIR/TREC collection directory."""
    if path.is_dir():
        if is_beir_dir(path):
            return read_corpus(_corpus_file(path))
        files = _trec_files(path)
        return _read_trec_doc_files(files["docs"])
    if _first_line(path).lower().startswith("<doc>"):
        return read_trec_docs(path)
    return read_corpus(path)


def read_any_queries(path: Path) -> dict[str, str]:
    """Queries from a BEIR queries.jsonl, a topics file (TSV or TREC SGML), or a collection directory."""
    if path.is_dir():
        if is_beir_dir(path):
            return _read_beir_queries(_query_files(path))  # every split's queries: a run picks its own
        return read_topics(_trec_files(path)["topics"])
    if _first_line(path).startswith("{"):
        return read_queries(path)
    return read_topics(path)


# --------------------------------------------------------------------------- BEIR directories


def is_beir_dir(path: Path) -> bool:
    return (path / "corpus.jsonl").is_file() or (path / "corpus.jsonl.gz").is_file()


DEFAULT_SPLIT = "test"


@dataclass(frozen=True)
class BeirFiles:
    """The files of a BEIR directory that one split reads: the corpus, the queries file(s) and the
    split's qrels (what a run, an evaluation and a card record as read). `split` is None for a
    directory whose qrels name no split (`qrels.tsv`) or that has no qrels."""

    corpus: Path
    queries: list[Path]
    qrels: list[Path]
    split: str | None
    splits: list[str]


def _split_qrels(path: Path) -> dict[str, Path]:
    """{split: qrels file} from `qrels/<split>.tsv` and `qrels.<split>.tsv`."""
    found: dict[str, Path] = {}
    candidates = sorted((path / "qrels").glob("*.tsv")) if (path / "qrels").is_dir() else []
    candidates += sorted(path.glob("qrels.*.tsv"))
    for f in candidates:
        name = f.stem if f.parent.name == "qrels" else f.name[len("qrels."):-len(".tsv")]
        if name in found:
            raise InputError(f"{path}: two qrels files for split {name!r} ({found[name]}, {f})",
                             hint="keep one qrels file per split")
        found[name] = f
    return found


def _corpus_file(path: Path) -> Path:
    return path / "corpus.jsonl" if (path / "corpus.jsonl").is_file() else path / "corpus.jsonl.gz"


def _query_files(path: Path) -> list[Path]:
    queries = [p for p in (path / "queries.jsonl", path / "queries.jsonl.gz") if p.is_file()]
    if not queries:
        queries = sorted(path.glob("queries.*.jsonl")) + sorted(path.glob("queries.*.jsonl.gz"))
    if not queries:
        raise InputError(f"{path}: a BEIR directory without queries.jsonl or queries.<split>.jsonl",
                         hint="add the queries file beside corpus.jsonl")
    return queries


def beir_query_files(path: Path) -> list[Path]:
    """Every queries file of a BEIR directory (`queries.jsonl`, else each `queries.<split>.jsonl`)."""
    return _query_files(path)


def beir_files(path: Path, *, split: str | None = None) -> BeirFiles:
    """The files of `split` in the BEIR directory `path`. Without `split`: `test` where the directory
    has it, else its only split; several splits and none named is an `InputError` naming them (a
    BEIR download holds train and test qrels, and mixing them would score training queries)."""
    corpus = _corpus_file(path)
    _query_files(path)  # refuses a directory without any
    queries = [p for p in (path / "queries.jsonl", path / "queries.jsonl.gz") if p.is_file()]
    per_split = sorted(path.glob("queries.*.jsonl")) + sorted(path.glob("queries.*.jsonl.gz"))
    splits = _split_qrels(path)
    names = sorted(splits)
    if split is not None and split not in splits:
        raise InputError(f"{path}: no qrels for split {split!r} (it holds {', '.join(names) or 'no split qrels'})",
                         hint=f"choose --split {' or --split '.join(names)}" if names else
                         "put the split's qrels in qrels/<split>.tsv, or leave --split out")
    if split is None and splits:
        if DEFAULT_SPLIT in splits:
            split = DEFAULT_SPLIT
        elif len(splits) == 1:
            split = names[0]
        else:
            raise InputError(f"{path}: the directory holds the splits {', '.join(names)} and no --split chose one",
                             hint=f"pass --split {names[0]} (or another of {', '.join(names)}): qrels of "
                             "different splits are never mixed")
    if split is None:
        qrels = [p for p in (path / "qrels.tsv",) if p.is_file()]
    else:
        qrels = [splits[split]]
        own = [p for p in per_split if p.name in (f"queries.{split}.jsonl", f"queries.{split}.jsonl.gz")]
        queries = own or queries or per_split
    if not queries:
        queries = per_split
    return BeirFiles(corpus=corpus, queries=queries, qrels=qrels, split=split, splits=names)


def _read_beir_queries(files: list[Path]) -> dict[str, str]:
    queries: dict[str, str] = {}
    for f in files:
        for qid, text in read_queries(f).items():
            if qid in queries and queries[qid] != text:
                raise InputError(f"{f}: query {qid} has a different text in another queries file",
                                 hint="qids must be unique across the queries files of one collection")
            queries[qid] = text
    return queries


def _merge_qrels(files: list[Path]) -> Qrels:
    merged: Qrels = {}
    for f in files:
        for qid, judged in read_qrels(f).items():
            target = merged.setdefault(qid, {})
            for docid, grade in judged.items():
                if target.get(docid, grade) != grade:
                    raise InputError(f"{f}: qid {qid} docid {docid} has grade {grade} here and {target[docid]} in "
                                     "another qrels file", hint="keep one judgment per (qid, docid)")
                target[docid] = grade
    return merged


def load_beir(path: Path, *, limit: int | None = None, depth: int = 100, split: str | None = None,
              own_qrels: bool = True) -> list[Candidates]:
    """Candidates for the queries of one split of a BEIR directory (see `beir_files`): BM25
    top-`depth` over its corpus, gold labels from the split's qrels. With a split, its queries are
    the ones its qrels judge (BEIR keeps every split's queries in one queries.jsonl). With
    `own_qrels=False` (the labels come from a `--qrels` file) and no `split`, every query is kept and
    the directory's qrels are not read."""
    files = (BeirFiles(corpus=_corpus_file(path), queries=_query_files(path), qrels=[], split=None, splits=[])
             if not own_qrels and split is None else beir_files(path, split=split))
    queries = _read_beir_queries(files.queries)
    qrels = _merge_qrels(files.qrels)
    if files.split is not None:
        queries = {q: t for q, t in queries.items() if q in qrels}
        if not queries:
            raise InputError(f"{files.qrels[0]}: judges none of the queries in "
                             f"{', '.join(str(q) for q in files.queries)}",
                             hint="give the queries and qrels of the same collection")
        if split is None and len(files.splits) > 1:
            log.warning("%s: no --split given: reading split %r (%s; queries %s) of %s", path, files.split,
                        files.qrels[0], ", ".join(str(q) for q in files.queries), ", ".join(files.splits))
    elif not files.qrels and own_qrels:
        log.warning("%s: no qrels files (qrels/*.tsv or qrels.*.tsv); the candidates carry no gold labels", path)
    return rank_collection(read_corpus(files.corpus), queries, qrels, limit=limit, depth=depth)


# --------------------------------------------------------------------------- TREC collection directories


def _trec_files(path: Path) -> dict[str, list[Path] | Path]:
    """Recognise the files of a TREC collection directory by their first line."""
    docs: list[Path] = []
    topics: list[Path] = []
    qrels: list[Path] = []
    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        head = _first_line(f)
        low = head.lower()
        if low.startswith("<doc>"):
            docs.append(f)
        elif low.startswith("<top>") or (f.name.startswith(("topics", "queries")) and "\t" in head):
            topics.append(f)
        elif f.name.startswith("qrels") and len(head.split()) == 4:
            qrels.append(f)
    found = {"documents (<DOC>)": docs, "topics (<top>)": topics, "qrels": qrels}
    missing = [k for k, v in found.items() if not v]
    if missing:
        raise InputError(
            f"{path}: a TREC collection directory needs documents, topics and qrels; found no {', '.join(missing)}",
            hint="put the SGML documents (<DOC><DOCNO>), the topics (<top> or qid<TAB>text, named topics*) "
            "and the qrels (named qrels*) in the directory",
        )
    if len(topics) > 1 or len(qrels) > 1:
        raise InputError(
            f"{path}: more than one topics or qrels file ({', '.join(p.name for p in topics + qrels)})",
            hint="keep one topics file and one qrels file per collection directory",
        )
    return {"docs": docs, "topics": topics[0], "qrels": qrels[0]}


def trec_collection_files(path: Path) -> dict[str, list[Path] | Path]:
    """The documents, topics and qrels files of a TREC collection directory (see `_trec_files`)."""
    return _trec_files(path)


def is_trec_collection_dir(path: Path) -> bool:
    return any(_first_line(p).lower().startswith("<doc>") for p in path.iterdir() if p.is_file())


def _read_trec_doc_files(files: list[Path]) -> dict[str, Document]:
    docs: dict[str, Document] = {}
    for f in files:
        for docid, doc in read_trec_docs(f).items():
            if docid in docs:
                raise InputError(f"{f}: DOCNO {docid} also appears in another document file",
                                 hint="each DOCNO must be unique across the collection")
            docs[docid] = doc
    return docs


def load_trec_collection(path: Path, *, limit: int | None = None, depth: int = 100) -> list[Candidates]:
    """Candidates for every topic of a TREC collection directory, BM25 top-`depth` over its documents."""
    files = _trec_files(path)
    return rank_collection(
        _read_trec_doc_files(files["docs"]),
        read_topics(files["topics"]),
        read_qrels(files["qrels"]),
        limit=limit,
        depth=depth,
    )


# --------------------------------------------------------------------------- ranking


def rank_collection(
    docs: dict[str, Document], queries: dict[str, str], qrels: Qrels, *, limit: int | None, depth: int
) -> list[Candidates]:
    """BM25 top-`depth` candidates for the first `limit` queries (all when None), labels from `qrels`."""
    from r2r_synth.io.first_stage import BM25Index

    items = list(queries.items())[:limit] if limit else list(queries.items())
    index = BM25Index.build(docs)
    ranked = index.search([text for _, text in items], k=depth)
    out = []
    for (qid, text), hits in zip(items, ranked):
        try:
            out.append(
                Candidates(
                    query=Query(qid=qid, text=text),
                    documents=[docs[d] for d, _ in hits],
                    scores=[s for _, s in hits],
                    qrels=dict(qrels.get(qid, {})),
                )
            )
        except ValidationError as e:  # pragma: no cover - BM25 returns each docid once
            raise InputError(f"query {qid}: {e}") from None
    return out
