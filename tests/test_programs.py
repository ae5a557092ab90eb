"""Teacher programs: signatures, prompts, hashes, save/load — with DSPy's DummyLM as the LM."""

from __future__ import annotations

import json

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from r2r_synth.errors import InputError
from r2r_synth.teacher.programs import (
    PROGRAM_NAMES,
    build_program,
    load_program,
    program_hash,
    prompt_hash,
    save_program,
)
from r2r_synth.teacher.signatures import Comparison, DirectRelevance, read_prompt


def test_signature_fields_are_the_contract():
    assert list(DirectRelevance.input_fields) == ["query", "document"]
    assert list(DirectRelevance.output_fields) == ["reasoning", "relevance", "score"]
    assert list(Comparison.input_fields) == ["query", "document_a", "document_b"]
    assert list(Comparison.output_fields) == ["reasoning", "preferred", "confidence"]


def test_instructions_come_from_the_prompt_files():
    for name in PROGRAM_NAMES:
        text = read_prompt(name)
        assert text and len(text) > 100
        assert build_program(name).predict.signature.instructions == text


def test_direct_program_with_dummy_lm():
    lm = DummyLM([{"reasoning": "It gives the boiling time.", "relevance": "3", "score": "0.9"}])
    with dspy.context(lm=lm):
        pred = build_program("direct")(query="how long to boil an egg", document="Boil it for six minutes.")
    assert pred.relevance == 3 and isinstance(pred.relevance, int)
    assert pred.score == pytest.approx(0.9)
    assert pred.reasoning == "It gives the boiling time."


async def test_comparison_program_async_with_dummy_lm():
    lm = DummyLM([{"reasoning": "B has the answer.", "preferred": "B", "confidence": "0.8"}])
    with dspy.context(lm=lm):
        pred = await build_program("comparison").acall(query="q", document_a="a", document_b="b")
    assert pred.preferred == "B" and pred.confidence == pytest.approx(0.8)


def test_comparison_rejects_a_label_outside_the_literal():
    lm = DummyLM([{"reasoning": "r", "preferred": "C", "confidence": "0.5"}] * 2)
    with dspy.context(lm=lm), pytest.raises(Exception, match="preferred"):
        build_program("comparison")(query="q", document_a="a", document_b="b")


def test_hash_changes_with_instructions_and_demos_not_with_lm():
    prog = build_program("direct")
    h = program_hash(prog)
    assert h == program_hash(build_program("direct"))  # deterministic
    prog.predict.lm = DummyLM([{}])
    assert program_hash(prog) == h  # the LM is not part of the program
    other = build_program("direct")
    other.predict.signature = other.predict.signature.with_instructions("Grade it.")
    assert program_hash(other) != h and prompt_hash(other) != prompt_hash(prog)
    demo = build_program("direct")
    demo.predict.demos = [dspy.Example(query="q", document="d", reasoning="r", relevance=1, score=0.3)]
    assert program_hash(demo) != h
    assert prompt_hash(demo) == prompt_hash(build_program("direct"))  # demos are not instructions


def test_save_then_load_round_trip(tmp_path):
    prog = build_program("direct")
    prog.predict.signature = prog.predict.signature.with_instructions("Optimized: grade the passage.")
    prog.predict.demos = [dspy.Example(query="q", document="d", reasoning="r", relevance=2, score=0.7)]
    prog.predict.lm = dspy.LM("openai/x", api_base="http://secret-host:1/v1", api_key="sk-never-saved-123")
    path = save_program(prog, "direct", programs_dir=tmp_path, meta={"optimizer": "MIPROv2", "score": 0.61})
    assert path == tmp_path / "direct.json"
    text = path.read_text()
    assert "sk-never-saved" not in text and "secret-host" not in text
    meta = json.loads((tmp_path / "direct.meta.json").read_text())
    assert meta["optimizer"] == "MIPROv2" and meta["program_hash"] == program_hash(prog)

    loaded = load_program("direct", programs_dir=tmp_path)
    assert loaded.optimized and loaded.path == path
    assert loaded.program_hash == program_hash(prog)
    assert loaded.module.predict.signature.instructions == "Optimized: grade the passage."
    assert len(loaded.module.predict.demos) == 1
    assert loaded.meta["score"] == 0.61
    assert loaded.module.predict.lm is None


def test_load_without_saved_state_builds_fresh(tmp_path):
    p = load_program("comparison", programs_dir=tmp_path)
    assert not p.optimized and p.path is None
    assert p.program_hash == program_hash(build_program("comparison"))


def test_load_rejects_a_broken_program_file(tmp_path):
    (tmp_path / "direct.json").write_text('{"predict": {"nonsense": 1}}')
    with pytest.raises(InputError, match=r"direct\.json: not a saved direct program"):
        load_program("direct", programs_dir=tmp_path)


def test_unknown_program_name():
    with pytest.raises(InputError, match="unknown program 'pointwise'"):
        build_program("pointwise")
