#!/usr/bin/env python3
"""Usage: scripts/check_publish_folder.py RUN_DIR FOLDER  (FOLDER from `r2r-synth publish RUN_DIR --dry-run --out FOLDER`)

Checks the dry-run folder loads with datasets for every config, row counts equal the run's record
files, the card's YAML configs validate (datasets' MetadataConfigs) and match the configs present, the
card's column table of each config is the Parquet schema (names and order), and the card names its
language."""
import glob
import sys
import tempfile
from pathlib import Path

import datasets
import yaml
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard

from r2r_synth.rundir import RunDir

run, folder = Path(sys.argv[1]), Path(sys.argv[2])
card = DatasetCard.load(folder / "README.md")
meta = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
configs = MetadataConfigs.from_dataset_card_data(card.data)
counts = RunDir(run).line_counts()  # records per kind, read as publish reads them
present = sorted(k for k, c in counts.items() if c.records)
print("configs in card:", list(configs), "| record files with rows:", present)
assert sorted(configs) == present
ok = True
with tempfile.TemporaryDirectory() as cache:
    for c in meta["configs"]:
        for df in c["data_files"]:
            assert glob.glob(str(folder / df["path"])), df
        kind = c["config_name"]
        ds = datasets.load_dataset(str(folder), name=kind, cache_dir=cache)
        lines = counts[kind].records
        rows = {s: len(ds[s]) for s in ds}
        qs = [set(ds[s]["qid"]) for s in ds]
        disjoint = all(not (a & b) for i, a in enumerate(qs) for b in qs[i + 1:])
        table = card.text.split(f"### Columns of `{kind}`\n\n", 1)[1].split("\n\n", 1)[0]
        listed = [line.split(" | ")[0].strip("| `") for line in table.splitlines()[2:]]
        columns = listed == list(ds[next(iter(ds))].column_names)
        print(f"{kind:11s} file lines {lines:5d}  loaded rows {sum(rows.values()):5d} {rows}  query-disjoint splits: "
              f"{disjoint}  card columns = Parquet columns: {columns}")
        ok &= lines == sum(rows.values()) and disjoint and columns
print("license:", meta["license"], "| task_categories:", meta["task_categories"], "| size:", meta["size_categories"],
      "| language:", meta.get("language"), "| source_datasets:", meta.get("source_datasets"))
ok &= bool(meta.get("language"))
print("BAR", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
