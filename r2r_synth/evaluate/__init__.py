"""`r2r-synth evaluate` and `r2r-synth rerank`: measure rerankers as IR does, and rank a user's own
documents.

`evaluate` reranks the top `--depth` candidates of each query with each system and keeps the rest in
first-stage order (every run holds every candidate), scores each judged query with ir-measures,
tests each system against the first with paired tests over queries, and writes into `--out`:

- `evaluation.json` (read by `r2r-synth report`)::

    {
      "input": "…/bm25_top100.json", "qrels": "…/qrels.txt" | null,
      "queries": 43, "judged_queries": 43, "depth": 10,
      "candidates_per_query": {"min": 100, "max": 100},
      "measures": ["nDCG@10", "RR@10"],
      "unchanged_by_reranking": {"measures": [], "why": "…"},   # e.g. R@100 when asked for
      "systems": {
        "<name>": {
          "spec": "bm25" | "cross-encoder:…" | "run:…" | "fuse:…" | "<model dir>" | …,
          "nDCG@10": 0.5058, "RR@10": …,            # one key per measure: the mean over judged queries
          "pairs": 430, "seconds": 12.3, "pairs_per_s": 35.0,   # pairs reranked (the top --depth)
          "median_query_s": 0.28,
          "failed_calls": 0, "invalid_replies": 0,   # a teacher's
          "queries_left_out": 0, "left_out_qids": [],
          "not_in_run": 0, "queries_not_in_run": 0, "outside_candidates": 0   # run:FILE only
        }, …
      },
      "significance": {"baseline": "<first system>", "shown": "randomization", "tests": {…},
                       "permutations": 10000, "seed": 0, "correction": "none …", "measures": […],
                       "systems": {"<name>": {"nDCG@10": {"queries": 43, "mean_diff": 0.04,
                                                          "randomization": 0.012, "t-test": 0.009}}}},
      "per_query": {"<name>": {"nDCG@10": {"<qid>": 0.61, …}, …}, …},
      "device": "cpu", "created_at": "…Z", "config": {…}
    }

- `per_query.tsv` (`qid`, `measure`, one column per system), one TREC run per system
  (`run.<name>.trec`, every candidate of every query) and `evaluation.png`.

The systems (`--system`) are described in `r2r_synth.evaluate.systems`, run files and fusion in
`r2r_synth.evaluate.fusion`, the reranking protocol and the runs' scores in
`r2r_synth.evaluate.ranking`.
"""

from r2r_synth.evaluate.chart import chart, plot
from r2r_synth.evaluate.command import (
    CHART_FILE,
    EVALUATION_FILE,
    PER_QUERY_FILE,
    TESTS,
    Evaluation,
    SystemResult,
    evaluate,
)
from r2r_synth.evaluate.ranking import RankedRun, rerank_candidates
from r2r_synth.evaluate.rerank import Ranked, model_spec, read_documents, rerank_documents
from r2r_synth.evaluate.systems import System, SystemSpec, open_system, parse_spec, parse_system

__all__ = [
    "CHART_FILE",
    "EVALUATION_FILE",
    "PER_QUERY_FILE",
    "TESTS",
    "Evaluation",
    "Ranked",
    "RankedRun",
    "System",
    "SystemResult",
    "SystemSpec",
    "chart",
    "evaluate",
    "model_spec",
    "open_system",
    "parse_spec",
    "parse_system",
    "plot",
    "read_documents",
    "rerank_candidates",
    "rerank_documents",
]
