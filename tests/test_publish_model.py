"""`publish <student dir>`: a model repository whose folder loads with plain sentence-transformers, whose
card is sentence-transformers' own plus r2r-synth's provenance and evaluation table, with no local
absolute path and no secret in it; pushed through `huggingface_hub.HfApi` (patched only there)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from r2r_synth.config import TrainConfig
from r2r_synth.errors import InputError
from r2r_synth.publish.model import portable, publish_model
from r2r_synth.student.cross_encoder import DEFAULT_BASE_ID
from r2r_synth.student.train import train

pytest.importorskip("sentence_transformers")

TOKEN = "hf_testtoken_model_abcdefgh"


def _candidates(tmp: Path) -> tuple[Path, Path]:
    entries = [{"query": f"what is topic {i}",
                "hits": [{"qid": i, "docid": f"{i}d{j}", "content": f"passage {j} on topic {i}", "score": 5.0 - j}
                         for j in range(3)]} for i in range(4)]
    (tmp / "cands.json").write_text(json.dumps(entries))
    (tmp / "qrels.txt").write_text("".join(f"{i} 0 {i}d1 1\n" for i in range(4)))
    return tmp / "cands.json", tmp / "qrels.txt"


@pytest.fixture(scope="module")
def students(tmp_path_factory, tiny_bert) -> dict[str, Path]:
    """A bi-encoder on the shipped all-MiniLM-L6-v2 (named by its Hub id) and a cross-encoder on the tiny
    BERT (a local absolute path), both trained from candidates + qrels."""
    tmp = tmp_path_factory.mktemp("students")
    cands, qrels = _candidates(tmp)
    common = {"corpus": [cands], "qrels": qrels, "labels": "gold", "max_steps": 1, "batch_size": 2, "device": "cpu"}
    train(TrainConfig(student="bi-encoder", out=tmp / "bi", base=DEFAULT_BASE_ID, max_length=32, **common))
    train(TrainConfig(student="cross-encoder", out=tmp / "ce", base=str(tiny_bert), encoder="none", negatives=1,
                      max_length=32, **common))
    return {"bi-encoder": tmp / "bi", "cross-encoder": tmp / "ce"}


@pytest.fixture
def evaluation(tmp_path) -> Path:
    ev = {"input": "/home/someone/data/dl19/bm25_top100.json", "qrels": "/home/someone/data/dl19/qrels.txt",
          "judged_queries": 43, "depth": 100, "measures": ["nDCG@10", "RR@10"],
          "systems": {"bm25": {"spec": "bm25", "nDCG@10": 0.5058, "RR@10": 0.8233},
                      "student": {"spec": "/home/someone/outputs/bi", "nDCG@10": 0.6612, "RR@10": 0.9031}}}
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(ev))
    return path


def _text_files(folder: Path) -> str:
    return "".join(p.read_text(errors="ignore") for p in folder.rglob("*")
                   if p.is_file() and p.suffix in (".md", ".json", ".txt"))


def test_dry_run_folder_loads_and_its_card_names_the_base_and_holds_the_evaluation(students, evaluation, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "hub"
    res = publish_model(students["bi-encoder"], repo_id="alice/scifact-bi", license="apache-2.0",
                        evaluation=evaluation, datasets=["alice/scifact-r2r"], dry_run=True, out=out)
    assert res.dry_run and res.kind == "bi-encoder" and res.base_model == DEFAULT_BASE_ID
    model = SentenceTransformer(str(out), device="cpu")
    assert model.encode(["a query"]).shape == (1, 384)
    # calibration.jsonl (training passages, for the int8 path) stays home
    assert (students["bi-encoder"] / "calibration.jsonl").is_file() and not (out / "calibration.jsonl").exists()
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == DEFAULT_BASE_ID and meta["license"] == "apache-2.0"
    assert meta["library_name"] == "sentence-transformers" and "r2r-synth" in meta["tags"]
    assert meta["datasets"] == ["alice/scifact-r2r"]
    assert "| student | 0.6612 | 0.9031 |" in card and "| bm25 | 0.5058 | 0.8233 |" in card
    assert "43 judged queries of `.../bm25_top100.json`, qrels `.../qrels.txt`, top 100 reranked" in card
    assert "qrels: `.../qrels.txt`" in card and "`.../cands.json`" in card  # the corpus, as its file names
    assert res.evaluation["student"]["nDCG@10"] == pytest.approx(0.6612)
    assert "checkpoints" not in res.files and "README.md" in res.files and "r2r_config.json" in res.files


def test_no_local_absolute_path_reaches_card_or_config(students, evaluation, tmp_path):
    out = tmp_path / "hub"
    publish_model(students["cross-encoder"], repo_id="alice/ce", license="mit", evaluation=evaluation,
                  dry_run=True, out=out)
    from sentence_transformers import CrossEncoder

    assert len(CrossEncoder(str(out), device="cpu").predict([("q", "d")])) == 1
    text = _text_files(out)
    assert str(students["cross-encoder"].parent) not in text and "/home/someone" not in text
    assert str(Path(sys.prefix)) not in text and "site-packages" not in text
    meta = json.loads((out / "r2r_config.json").read_text())
    assert meta["base"] == f".../{Path(meta['base']).name}"  # the tiny base's local directory, as its name only
    assert portable({"a": ["/x/y/z.jsonl", "rel/p", "org/model"]}) == {"a": [".../z.jsonl", "rel/p", "org/model"]}


def test_push_goes_through_hfapi_and_no_token_reaches_the_files(students, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", {"repo_id": repo_id, "token": self.token, **kw}))

    def create_commit(self, repo_id, operations, **kw):
        ops = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
        calls.append(("create_commit", {"repo_id": repo_id, "ops": ops, **kw}))

        class Info:
            commit_url = f"https://huggingface.co/{repo_id}/commit/abc"

        return Info()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setenv("SOME_API_KEY", "sk-secret-value-12345")
    res = publish_model(students["bi-encoder"], repo_id="alice/bi", license="apache-2.0", private=True, token=TOKEN)
    (repo,) = [kw for n, kw in calls if n == "create_repo"]
    assert repo == {"repo_id": "alice/bi", "token": TOKEN, "repo_type": "model", "private": True, "exist_ok": True}
    (commit,) = [kw for n, kw in calls if n == "create_commit"]
    assert commit["repo_type"] == "model" and res.commit_url.endswith("/commit/abc")
    assert {"README.md", "r2r_config.json", "model.safetensors", "modules.json"} <= set(commit["ops"])
    blob = b"".join(commit["ops"].values())
    assert TOKEN.encode() not in blob and b"sk-secret-value-12345" not in blob
    assert "No evaluation was passed" in commit["ops"]["README.md"].decode()


def test_bad_arguments_are_input_errors(students, tmp_path):
    with pytest.raises(InputError, match="--license is required"):
        publish_model(students["bi-encoder"], repo_id="alice/x", license=None, dry_run=True, out=tmp_path / "o")
    bad = tmp_path / "ev.json"
    bad.write_text('{"systems": {}}')
    with pytest.raises(InputError, match="not an evaluation.json of `r2r-synth evaluate`"):
        publish_model(students["bi-encoder"], repo_id="alice/x", license="mit", evaluation=bad, dry_run=True,
                      out=tmp_path / "o")
    with pytest.raises(InputError, match="'not a repo' is not a Hub dataset id"):
        publish_model(students["bi-encoder"], repo_id="alice/x", license="mit", datasets=["not a repo"],
                      dry_run=True, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    reasoner = tmp_path / "reasoner"
    reasoner.mkdir()
    (reasoner / "r2r_config.json").write_text(json.dumps(
        {"student": "reasoning", "base": "x", "r2r_synth_version": "0.1.0", "options": {}, "config": {}, "corpus": {},
         "training": {}}))
    with pytest.raises(InputError, match="publish writes sentence-transformers model cards"):
        publish_model(reasoner, repo_id="alice/x", license="mit", dry_run=True, out=tmp_path / "o")


def test_cli_publishes_a_student_directory(students, evaluation, tmp_path, monkeypatch, capsys):
    from r2r_synth import cli as cli_mod

    out = tmp_path / "hub"
    monkeypatch.setattr(sys, "argv", ["r2r-synth", "publish", str(students["cross-encoder"]), "--repo-id", "alice/ce",
                                      "--license", "mit", "--dry-run", "--out", str(out), "--evaluation",
                                      str(evaluation)])
    with pytest.raises(SystemExit) as ei:
        cli_mod.main()
        raise SystemExit(0)
    assert (ei.value.code or 0) == 0
    printed = capsys.readouterr().out
    assert "cross-encoder student" in printed and "evaluation table: bm25, student" in printed
    assert (out / "README.md").is_file() and (out / "model.safetensors").is_file()
