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

The modules: `rows` (splits, Parquet rows and shards), `provenance` (a config's section of the card),
`card` (the card's metadata and the merge with an existing card), `folder` (shards + card on disk),
`push` (the `publish()` entry point and the Hub commit).
"""

from r2r_synth.publish.folder import PublishResult
from r2r_synth.publish.push import publish
from r2r_synth.publish.rows import parse_split, split_of

__all__ = ["PublishResult", "parse_split", "publish", "split_of"]
