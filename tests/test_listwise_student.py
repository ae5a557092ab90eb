"""Students train from listwise runs of any depth: a query's final ranking over its sliding windows is
its permutation (the windows add their reasons), and the depth shows in `r2r_config.json`. The runs
come from the loopback server; the student is the tiny BERT built in code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from r2r_synth.config import TrainConfig
from r2r_synth.student.corpus import load_training_view

sys.path.insert(0, str(Path(__file__).parent))
from test_listwise_generate import candidates, cfg, rankings, run, write_input

pytest.importorskip("sentence_transformers")


def listwise_run(srv, tmp_path: Path, *, depth: int, window: int, stride: int, queries: int = 3) -> Path:
    inp = write_input(tmp_path / f"c{depth}.jsonl", candidates(queries, depth=depth))
    out = tmp_path / f"run{depth}"
    run(cfg(srv, out, inp, depth=depth, window=window, stride=stride, concurrency=queries))
    return out


def test_the_view_of_a_sliding_window_run_holds_each_querys_final_ranking(openai_server, tmp_path):
    out = listwise_run(openai_server, tmp_path, depth=30, window=10, stride=5)
    view = load_training_view([out])
    final = rankings(out)
    assert view.counts["listwise"] == 3 * 5  # every window record is read ...
    for q in view.queries:
        assert q.permutations == [final[q.qid].ranking]  # ... but the query's order is its final ranking
        assert len(q.docs) == 30 and all(d.reasons and d.listwise_reasons for d in q.docs.values())
    s = view.summary()
    assert s["ranking_depth"] == 30 and s["listwise_rankings"] == 3


def test_without_rankings_the_windows_are_the_permutations(openai_server, tmp_path):
    out = listwise_run(openai_server, tmp_path, depth=30, window=10, stride=5)
    view = load_training_view([out / "listwise.jsonl"])  # a record file alone: no rankings.jsonl beside it
    assert all(len(q.permutations) == 5 for q in view.queries) and view.summary()["ranking_depth"] == 10


@pytest.mark.parametrize("depth,window,stride", [(20, 20, 10), (100, 20, 10)])
def test_cross_encoder_trains_on_a_top_k_ranking_and_records_its_depth(openai_server, tmp_path, tiny_bert,
                                                                        depth, window, stride):
    from r2r_synth.student.cross_encoder import build_datasets, resolve_options, teacher_grades
    from r2r_synth.student.train import train

    out = listwise_run(openai_server, tmp_path, depth=depth, window=window, stride=stride, queries=2)
    view = load_training_view([out])
    q = view.queries[0]
    grades = teacher_grades(q)
    top, bottom = q.permutations[0][0], q.permutations[0][-1]
    assert len(grades) == depth and grades[top] == 3.0 and grades[bottom] == 1.0
    config = TrainConfig(student="cross-encoder", corpus=[out], out=tmp_path / f"ce{depth}", base=str(tiny_bert),
                         encoder="none", negatives=0, max_steps=2, batch_size=1, max_length=48, device="cpu")
    cols = build_datasets(view, options=resolve_options(config))
    assert len(cols["listwise"]["docs"][0]) == depth  # one list of the query's K candidates
    train(config)
    saved = json.loads((tmp_path / f"ce{depth}" / "r2r_config.json").read_text())
    assert saved["corpus"]["ranking_depth"] == depth and saved["corpus"]["listwise_rankings"] == 2
    assert saved["corpus"]["listwise_records"] == 2 * (1 if depth == window else 9)
