"""`r2r-synth filter RUN --out RUN2`: curate a run before it is trained on or published.

Each rule is a flag; the rules given are applied in this fixed order, each to what the ones before it
kept (`rules.run_funnel`):

1. `swap-consistent` (`--swap-consistent`): a comparison whose two orders prefer different documents
   (position bias), or that was asked in one order only, is dropped.
2. `gold-distance` (`--max-gold-distance D`): a direct record whose grade is more than D from its gold
   grade is dropped; unjudged records are kept (the rule does not apply to them).
3. `min-confidence` (`--min-confidence C`): direct: max(score, 1 - score), how sure the teacher is of
   its verdict; comparison: the lower `confidence` of its two orders. Listwise records carry none.
4. `length` (`--min-words`, `--max-words`): every reasoning text of a record (direct `reasoning`; both
   comparison answers; each listwise reason) must have that many words (whitespace-separated).
5. `listwise-ndcg` (`--min-ndcg T`): a listwise ranking whose nDCG@10 against the gold grades of its
   window is under T is dropped; a window without a relevant judged document cannot be scored and is kept.
6. `exact-duplicate` (`--exact-duplicates`): the same reasoning (NFKC, case folded, whitespace
   collapsed) as a record of the same kind kept before it, in file order.
7. `near-duplicate` (`--near-duplicates J`): Jaccard similarity of word 5-shingles at least J with a
   record kept before it (MinHash LSH, every candidate verified exactly: `neardup`). In both duplicate
   rules the rollouts of one request never count as each other's duplicates: their agreement is what
   `self-consistency` counts.
8. `self-consistency` (`--self-consistency A`): the rollouts of one request (same query, documents,
   teacher, program and prompt; they differ by `provenance.rollout_id`) vote with their answer (direct:
   the grade; comparison: the preferred document; listwise: the whole ranking). The records with the
   majority answer are kept when at least A rollouts give it and no other answer has as many; the
   others are dropped, and all of a request's records when no answer reaches A.

The order makes filtering idempotent: filtering the result again with the same rules drops nothing.
Every dropped record goes, whole, to the child's `filtered.jsonl` with the rule that dropped it, a
detail, and the other rules that drop it when each is applied alone (`schemas.Filtered`): kept +
filtered = the parent's records. The child is an ordinary run directory: its rejects and program
snapshots are the parent's, and its manifest names the parent (its command, status, usage and cost,
kept as the parent's, not as spend of the child), the rules and the funnel per kind under
`extra["filter"]`.
"""

from r2r_synth.filter.command import FilterResult, build_rules, filter_run
from r2r_synth.filter.rules import Funnel, RuleCount, confidence, run_funnel, window_ndcg

__all__ = ["FilterResult", "Funnel", "RuleCount", "build_rules", "confidence", "filter_run", "run_funnel",
           "window_ndcg"]
