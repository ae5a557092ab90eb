"""`publish`: the dry-run folder is checked with the real `datasets` loader; the push is checked by
patching only the `HfApi` boundary (create_repo / create_branch / list_repo_files / hf_hub_download /
create_commit) and asserting the operations."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from run_factory import make_run

from r2r_synth.errors import InputError, R2RError
from r2r_synth.io.jsonl import read_jsonl
from r2r_synth.publish import parse_split, publish, split_of
from r2r_synth.rundir import ProgramSnapshot, RunDir
from r2r_synth.schemas import ComparisonRecord, DirectRecord, ListwiseRecord

KINDS = ("direct", "comparison", "listwise")
MODELS = {"direct": DirectRecord, "comparison": ComparisonRecord, "listwise": ListwiseRecord}


def card_meta(folder: Path) -> dict:
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def load(folder: Path, kind: str, tmp_path: Path):
    import datasets

    return datasets.load_dataset(str(folder), name=kind, cache_dir=str(tmp_path / "hf-cache"))


def check_card_configs(folder: Path) -> dict:
    """The YAML `configs` name every config's files, each glob matches files that exist, and every
    Parquet file in the folder is claimed by exactly one config split."""
    meta = card_meta(folder)
    claimed = []
    for cfg in meta["configs"]:
        for df in cfg["data_files"]:
            hits = sorted(glob.glob(str(folder / df["path"])))
            assert hits, f"{cfg['config_name']}/{df['split']}: {df['path']} matches no file"
            claimed += hits
    on_disk = sorted(glob.glob(str(folder / "data" / "**" / "*.parquet"), recursive=True))
    assert sorted(claimed) == on_disk
    # The `datasets` library's own validator of the card's `configs` metadata.
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    parsed = MetadataConfigs.from_dataset_card_data(DatasetCard.load(folder / "README.md").data)
    assert list(parsed) == [c["config_name"] for c in meta["configs"]]
    assert parsed.get_default_config_name() == meta["configs"][0]["config_name"]
    return meta


# ----------------------------------------------------------------------------- splits


def test_parse_split_accepts_fractions_and_explains_bad_ones():
    assert parse_split("train=0.9,test=0.1") == {"train": 0.9, "test": 0.1}
    assert parse_split("train=1") == {"train": 1.0}
    with pytest.raises(InputError, match="sum to 0.9, not 1"):
        parse_split("train=0.8,test=0.1")
    with pytest.raises(InputError, match="is not NAME=FRACTION"):
        parse_split("train:0.9")
    with pytest.raises(InputError, match="'x' is not a number"):
        parse_split("train=x")
    with pytest.raises(InputError, match="named twice"):
        parse_split("train=0.5,train=0.5")
    with pytest.raises(InputError, match="must be in"):
        parse_split("train=1.5,test=-0.5")


def test_split_of_is_deterministic_and_close_to_the_fractions():
    splits = {"train": 0.8, "dev": 0.1, "test": 0.1}
    qids = [str(i) for i in range(5000)]
    a = [split_of(q, splits=splits, seed=7) for q in qids]
    assert a == [split_of(q, splits=splits, seed=7) for q in qids]
    assert a != [split_of(q, splits=splits, seed=8) for q in qids]
    share = {s: a.count(s) / len(a) for s in splits}
    assert abs(share["train"] - 0.8) < 0.03 and abs(share["test"] - 0.1) < 0.03


# ----------------------------------------------------------------------------- dry run


def test_dry_run_folder_loads_with_datasets_for_every_kind(tmp_path):
    run = make_run(tmp_path / "run", queries=30, kinds=KINDS)
    out = tmp_path / "hub"
    res = publish(run, repo_id="alice/r2r-demo", license="cc-by-4.0", split="train=0.7,test=0.3", seed=3,
                  dry_run=True, out=out)
    assert res.dry_run and set(res.rows) == set(KINDS)
    meta = check_card_configs(out)
    assert [c["config_name"] for c in meta["configs"]] == list(KINDS)
    assert meta["license"] == "cc-by-4.0" and "text-ranking" in meta["task_categories"]
    assert meta["size_categories"] == ["n<1K"]
    # Exactly what would be pushed, and nothing else.
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted(res.files)

    for kind in KINDS:
        records = list(read_jsonl(run / f"{kind}.jsonl", MODELS[kind]))
        ds = load(out, kind, tmp_path)
        assert set(ds) == {"train", "test"}
        assert sum(len(ds[s]) for s in ds) == len(records) == sum(res.rows[kind].values())
        train_q, test_q = set(ds["train"]["qid"]), set(ds["test"]["qid"])
        assert train_q and test_q and not train_q & test_q
        # Same query -> same split in every kind.
        for s in ds:
            assert all(split_of(q, splits={"train": 0.7, "test": 0.3}, seed=3) == s for q in ds[s]["qid"])
        by_key = {r.key: r for r in records}
        row = ds["train"][0]
        rec = by_key[row["key"]]
        assert row["query"] == rec.query.text and row["teacher"] == rec.provenance.teacher
        assert row["prompt_tokens"] == rec.provenance.usage.prompt_tokens
        if kind == "direct":
            assert (row["relevance"], row["gold"], row["reasoning"]) == (rec.relevance, rec.gold, rec.reasoning)
        if kind == "comparison":
            assert row["swapped_preferred"] == rec.swapped.preferred and row["swap_agrees"] == rec.swap_agrees
        if kind == "listwise":
            assert row["ranking"] == rec.ranking
            assert {g["docid"]: g["grade"] for g in row["gold"]} == rec.gold
            assert [d["docid"] for d in row["documents"]] == [d.docid for d in rec.documents]


def test_a_split_without_queries_is_left_out_of_the_config(tmp_path, caplog):
    run = make_run(tmp_path / "run", queries=1, kinds=("direct",))
    (only,) = {split_of("q0", splits={"a": 0.5, "b": 0.5}, seed=0)}
    res = publish(run, repo_id="alice/x", license="mit", split="a=0.5,b=0.5", dry_run=True, out=tmp_path / "hub")
    assert res.rows == {"direct": {only: 4}}
    assert "gets no query of this run" in caplog.text
    meta = check_card_configs(tmp_path / "hub")
    assert [d["split"] for d in meta["configs"][0]["data_files"]] == [only]
    assert list(load(tmp_path / "hub", "direct", tmp_path)) == [only]


def test_card_tells_the_provenance(tmp_path):
    run = make_run(tmp_path / "run", queries=12, kinds=("direct", "comparison"))
    report = tmp_path / "optimize_report.json"
    report.write_text(json.dumps({"optimizer": "mipro", "teacher": "openai/gpt-4o-mini", "programs": {"direct": {
        "primary_metric": "ndcg@10", "before": {"ndcg@10": 0.41}, "after": {"ndcg@10": 0.57},
        "program_hash_before": "direct-ph0", "program_hash_after": "direct-ph0123456789"}}}))
    out = tmp_path / "hub"
    publish(run, repo_id="alice/r2r-demo", license="mit", dry_run=True, out=out, optimize_report=report,
            command="r2r-synth publish run --repo-id alice/r2r-demo --license mit --dry-run --out hub")
    text = (out / "README.md").read_text()
    for needle in (
        "openai/gpt-4o-mini",  # teacher
        "`direct` (program hash `direct-ph0123456789`)",
        "prompt hash `direct-pr0123`",
        "48 from 12 queries",  # counts
        "**Rejects:** 3", "3 × unparseable reply", "2 × validation",  # rejects and why
        "Agreement with gold",
        "exact grade agreement 0.",
        "preference accuracy (pairs whose gold grades differ) 0.",
        "**Swap consistency:** ",
        "**cost:** $",
        "r2r-synth generate --input dl19.json",  # the command that produced the run
        "r2r-synth publish run --repo-id alice/r2r-demo",
        "ndcg@10 0.410 -> 0.570; this run used the optimized program",  # optimize report
        '"program_hash_after": "direct-ph0123456789"',
        "@article{ji2024reasontorank",
        'load_dataset("alice/r2r-demo", name="comparison")',
    ):
        assert needle in text, needle


def test_license_is_required_with_the_choices(tmp_path):
    run = make_run(tmp_path / "run", queries=3)
    with pytest.raises(InputError, match=r"--license is required.*never assumed") as e:
        publish(run, repo_id="alice/x", license=None, dry_run=True, out=tmp_path / "hub")
    assert "cc-by-4.0" in e.value.hint and "mit" in e.value.hint
    assert not (tmp_path / "hub").exists()


def test_bad_arguments_are_input_errors(tmp_path):
    run = make_run(tmp_path / "run", queries=3)
    with pytest.raises(InputError, match="needs --out"):
        publish(run, repo_id="alice/x", license="mit", dry_run=True)
    with pytest.raises(InputError, match="not of the form user/name"):
        publish(run, repo_id="no-slash", license="mit", dry_run=True, out=tmp_path / "o")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="not a run directory"):
        publish(empty, repo_id="alice/x", license="mit", dry_run=True, out=tmp_path / "o")
    (run / "manifest.json").unlink()
    with pytest.raises(InputError, match="manifest.json: missing"):
        publish(run, repo_id="alice/x", license="mit", dry_run=True, out=tmp_path / "o")


def test_invalid_record_line_names_file_and_line(tmp_path):
    run = make_run(tmp_path / "run", queries=3)
    with (run / "direct.jsonl").open("a") as fh:
        fh.write('{"kind": "direct", "key": "k"}\n')
    with pytest.raises(InputError, match=r"direct.jsonl:13: not a valid DirectRecord"):
        publish(run, repo_id="alice/x", license="mit", dry_run=True, out=tmp_path / "o")


def test_second_run_adds_configs_and_keeps_the_others(tmp_path):
    out = tmp_path / "hub"
    a = make_run(tmp_path / "a", queries=10, kinds=("direct", "comparison"))
    publish(a, repo_id="alice/mix", license="cc-by-4.0", dry_run=True, out=out, split="train=0.8,test=0.2")
    # A person edits the card on the Hub: their text must survive updates.
    card = out / "README.md"
    card.write_text(card.read_text().replace("<!-- r2r-synth:begin -->",
                                             "Curated by Alice; see our paper.\n\n<!-- r2r-synth:begin -->"))
    b = make_run(tmp_path / "b", queries=5, kinds=("listwise",), teacher="anthropic/claude-x", qid_prefix="b")
    publish(b, repo_id="alice/mix", license="cc-by-4.0", dry_run=True, out=out, split="train=0.8,test=0.2")
    meta = check_card_configs(out)
    assert [c["config_name"] for c in meta["configs"]] == ["direct", "comparison", "listwise"]
    text = card.read_text()
    assert "Curated by Alice; see our paper." in text
    assert "<!-- r2r-synth:config direct -->" in text and "anthropic/claude-x" in text
    assert text.count("<!-- r2r-synth:begin -->") == 1
    assert len(load(out, "direct", tmp_path)["train"]) + len(load(out, "direct", tmp_path)["test"]) == 40
    assert sum(len(v) for v in load(out, "listwise", tmp_path).values()) == 5


def test_a_hand_written_card_without_metadata_is_kept(tmp_path):
    out = tmp_path / "hub"
    out.mkdir()
    (out / "README.md").write_text("# My corpus\n\nWritten by hand.\n")
    run = make_run(tmp_path / "run", queries=3, kinds=("direct",))
    publish(run, repo_id="alice/x", license="mit", dry_run=True, out=out)
    text = (out / "README.md").read_text()
    assert text.startswith("---\n") and "# My corpus\n\nWritten by hand." in text
    assert card_meta(out)["license"] == "mit"
    assert [c["config_name"] for c in check_card_configs(out)["configs"]] == ["direct"]


def test_republishing_a_kind_replaces_its_shards(tmp_path):
    out = tmp_path / "hub"
    big = make_run(tmp_path / "big", queries=10, kinds=("direct", "comparison"))
    publish(big, repo_id="alice/x", license="mit", dry_run=True, out=out, shard_rows=7)
    assert len(list((out / "data" / "direct").glob("train-*"))) == 6  # 40 rows / 7
    small = make_run(tmp_path / "small", queries=2, kinds=("direct",))
    publish(small, repo_id="alice/x", license="mit", dry_run=True, out=out)
    assert [p.name for p in (out / "data" / "direct").iterdir()] == ["train-00000-of-00001.parquet"]
    assert pq.read_table(out / "data" / "direct" / "train-00000-of-00001.parquet").num_rows == 8
    meta = check_card_configs(out)
    assert [c["config_name"] for c in meta["configs"]] == ["direct", "comparison"]
    assert len(load(out, "comparison", tmp_path)["train"]) == 30  # untouched


# ----------------------------------------------------------------------------- push (HfApi boundary)


class FakeHub:
    """Records what `publish` asks of `HfApi`; serves a repo that already has files and a card."""

    def __init__(self, tmp: Path, files: list[str], card: str | None):
        self.calls: list[tuple[str, dict]] = []
        self.files = files
        self.card = card
        self.tmp = tmp

    def install(self, monkeypatch):
        from huggingface_hub import HfApi

        hub = self

        def create_repo(self, repo_id, **kw):
            hub.calls.append(("create_repo", {"repo_id": repo_id, "token": self.token, **kw}))

        def create_branch(self, repo_id, **kw):
            hub.calls.append(("create_branch", {"repo_id": repo_id, **kw}))

        def list_repo_files(self, repo_id, **kw):
            hub.calls.append(("list_repo_files", {"repo_id": repo_id, **kw}))
            return list(hub.files)

        def hf_hub_download(self, repo_id, filename, **kw):
            hub.calls.append(("hf_hub_download", {"repo_id": repo_id, "filename": filename, **kw}))
            p = hub.tmp / "downloaded-README.md"
            p.write_text(hub.card)
            return str(p)

        def create_commit(self, repo_id, operations, **kw):
            # Read what would be uploaded now: the staging folder may be temporary.
            ops = []
            for op in operations:
                data = Path(op.path_or_fileobj).read_bytes() if hasattr(op, "path_or_fileobj") else None
                ops.append((type(op).__name__, op.path_in_repo, data))
            hub.calls.append(("create_commit", {"repo_id": repo_id, "operations": ops, **kw}))

            class Info:
                commit_url = f"https://huggingface.co/datasets/{repo_id}/commit/abc123"

            return Info()

        for name, fn in [("create_repo", create_repo), ("create_branch", create_branch),
                         ("list_repo_files", list_repo_files), ("hf_hub_download", hf_hub_download),
                         ("create_commit", create_commit)]:
            monkeypatch.setattr(HfApi, name, fn)
        return self

    def call(self, name):
        return [kw for n, kw in self.calls if n == name]


def test_push_creates_repo_and_commits_the_folder(tmp_path, monkeypatch):
    # The repo already has a `listwise` config and a stale third `direct` shard from an earlier push.
    existing_card = ("---\nlicense: cc-by-4.0\nconfigs:\n- config_name: listwise\n  data_files:\n"
                     "  - split: train\n    path: data/listwise/train-*\n---\n\nHand-written intro.\n")
    hub = FakeHub(tmp_path, ["README.md", "data/listwise/train-00000-of-00001.parquet",
                             "data/direct/train-00000-of-00003.parquet", "data/direct/train-00002-of-00003.parquet"],
                  existing_card).install(monkeypatch)
    run = make_run(tmp_path / "run", queries=6, kinds=("direct", "comparison"))
    res = publish(run, repo_id="alice/pushed", license="cc-by-4.0", private=True, revision="v2",
                  token="hf_testtoken_abcdefgh")
    assert not res.dry_run and res.commit_url.endswith("/commit/abc123")
    (repo,) = hub.call("create_repo")
    assert repo == {"repo_id": "alice/pushed", "token": "hf_testtoken_abcdefgh", "repo_type": "dataset",
                    "private": True, "exist_ok": True}
    assert hub.call("create_branch")[0]["branch"] == "v2"
    assert hub.call("hf_hub_download")[0]["filename"] == "README.md"
    (commit,) = hub.call("create_commit")
    assert commit["repo_type"] == "dataset" and commit["revision"] == "v2"
    adds = {p: data for kind, p, data in commit["operations"] if kind == "CommitOperationAdd"}
    deletes = [p for kind, p, _ in commit["operations"] if kind == "CommitOperationDelete"]
    assert set(adds) == {"README.md", "data/direct/train-00000-of-00001.parquet",
                         "data/comparison/train-00000-of-00001.parquet"}
    assert sorted(deletes) == ["data/direct/train-00000-of-00003.parquet", "data/direct/train-00002-of-00003.parquet"]
    card = adds["README.md"].decode()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert [c["config_name"] for c in meta["configs"]] == ["direct", "comparison", "listwise"]
    assert "Hand-written intro." in card
    assert "hf_testtoken_abcdefgh" not in card
    assert res.folder is not None and not res.folder.exists()  # temporary staging is cleaned up


def test_push_into_a_new_repo(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path, [], None).install(monkeypatch)
    run = make_run(tmp_path / "run", queries=4, kinds=("listwise",))
    publish(run, repo_id="alice/new", license="odc-by", out=tmp_path / "staged")
    assert not hub.call("hf_hub_download") and not hub.call("create_branch")
    ops = hub.call("create_commit")[0]["operations"]
    assert sorted(p for _, p, _ in ops) == ["README.md", "data/listwise/train-00000-of-00001.parquet"]
    assert (tmp_path / "staged" / "README.md").exists()  # --out keeps a copy of what was pushed


# ----------------------------------------------------------------------------- secrets

FAKE_HF = "hf_fakeTOKENabcdefghijklmnop123456"
FAKE_OPENAI = "sk-fakeOPENAIkey0123456789abcdef"
FAKE_CLI_TOKEN = "hf_fakeCLItoken987654321zyxwvut"


def _grep_tree(root: Path, secrets: list[str]) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{p}: {s}" for s in secrets if s.encode() in data]
    return hits


def test_tokens_never_reach_folder_card_or_logs(tmp_path):
    run = make_run(tmp_path / "run", queries=8, kinds=KINDS)
    out = tmp_path / "hub"
    env = {**os.environ, "HF_TOKEN": FAKE_HF, "OPENAI_API_KEY": FAKE_OPENAI, "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "r2r_synth.cli", "-v", "publish", str(run), "--repo-id", "alice/secret-test",
         "--license", "cc-by-4.0", "--dry-run", "--out", str(out), "--token", FAKE_CLI_TOKEN,
         "--split", "train=0.5,test=0.5"],
        check=False, capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    secrets = [FAKE_HF, FAKE_OPENAI, FAKE_CLI_TOKEN]
    assert not _grep_tree(out, secrets)
    for s in secrets:
        assert s not in proc.stdout and s not in proc.stderr
    text = (out / "README.md").read_text()
    assert "--token '***'" in text or "--token ***" in text  # the command is shown, its token masked


def test_push_logs_and_commit_hold_no_token(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", FAKE_HF)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI)
    hub = FakeHub(tmp_path, [], None).install(monkeypatch)
    run = make_run(tmp_path / "run", queries=4, kinds=("direct",))
    caplog.set_level("DEBUG")
    publish(run, repo_id="alice/x", license="mit", token=FAKE_CLI_TOKEN, out=tmp_path / "staged",
            command=f"r2r-synth publish run --repo-id alice/x --token {FAKE_CLI_TOKEN}")
    ops = hub.call("create_commit")[0]["operations"]
    blobs = b"".join(data or b"" for _, _, data in ops) + repr(hub.call("create_commit")[0]).encode()
    for s in (FAKE_HF, FAKE_OPENAI, FAKE_CLI_TOKEN):
        assert s.encode() not in blobs
        assert s not in caplog.text
    assert not _grep_tree(tmp_path / "staged", [FAKE_HF, FAKE_OPENAI, FAKE_CLI_TOKEN])


def test_a_run_holding_a_secret_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI)
    run = make_run(tmp_path / "run", queries=2, kinds=("direct",))
    m = json.loads((run / "manifest.json").read_text())
    m["command"] += f" --api-key {FAKE_OPENAI}"
    (run / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(R2RError, match="contains the value of a secret"):
        publish(run, repo_id="alice/x", license="mit", dry_run=True, out=tmp_path / "o")
    assert not (tmp_path / "o" / "README.md").exists()


def _snapshot_with_key(run: Path) -> None:
    RunDir(run).snapshot_program(ProgramSnapshot(name="direct", program_hash="direct-ph0123456789",
                                                 prompt_hash="direct-pr0123", state={},
                                                 instructions=f"Grade it. (debug: key {FAKE_OPENAI})"))


def _journal_with_key(run: Path) -> None:
    (run / "journal.jsonl").write_text(json.dumps({"event": "reply", "raw": f"echo {FAKE_OPENAI}"}) + "\n")


@pytest.mark.parametrize(("where", "plant"), [("programs/direct-direct-ph0123456789.json", _snapshot_with_key),
                                              ("journal.jsonl", _journal_with_key)])
def test_every_file_of_the_run_is_checked_for_secrets(tmp_path, monkeypatch, where, plant):
    run = make_run(tmp_path / "run", queries=2, kinds=("direct",))
    plant(run)  # before the key is known to r2r-synth, so nothing masked it
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI)
    with pytest.raises(R2RError, match=re.escape(f"{run / where} contains the value of a secret")):
        publish(run, repo_id="alice/x", license="mit", dry_run=True, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- CLI


def test_cli_without_license_exits_2_with_the_choices(tmp_path):
    run = make_run(tmp_path / "run", queries=2, kinds=("direct",))
    proc = subprocess.run(
        [sys.executable, "-m", "r2r_synth.cli", "publish", str(run), "--repo-id", "alice/x", "--dry-run",
         "--out", str(tmp_path / "o")],
        check=False, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert "--license is required" in proc.stderr and "cc-by-4.0" in proc.stderr


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run `r2r-synth ARGS` in this process (so `FakeHub` sees every Hub call); exit code and stderr."""
    from r2r_synth import cli as cli_mod

    monkeypatch.setattr(sys, "argv", ["r2r-synth", *args])
    with pytest.raises(SystemExit) as ei:
        cli_mod.main()
        raise SystemExit(0)
    return ei.value.code or 0, " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("mode", ["--dry-run", "--private"])
def test_cli_out_naming_a_file_exits_2_before_anything_is_written(tmp_path, monkeypatch, capsys, mode):
    hub = FakeHub(tmp_path, [], None).install(monkeypatch)
    run = make_run(tmp_path / "run", queries=2, kinds=("direct",))
    out = tmp_path / "hub.txt"
    out.write_text("not a folder\n")
    code, err = cli(monkeypatch, capsys, "publish", str(run), "--repo-id", "alice/x", "--license", "mit",
                    "--out", str(out), mode)
    assert code == 2, err
    assert f"--out {out} exists and is not a directory" in err and "fix: give --out a directory" in err
    assert out.read_text() == "not a folder\n" and not hub.calls

