"""Teacher programs (`direct`, `comparison`, `listwise`, `queries`): DSPy modules around the signatures, with
load/save and content hashes.

A program is one `dspy.Predict` over a signature (the reasoning is an output field of the signature,
so no extra ChainOfThought step is needed). Fresh programs take their instructions from
`r2r_synth/prompts/<name>.md`; optimized state (instructions + demos, written by `r2r-synth optimize`) lives in
`programs/<name>.json` with provenance in `programs/<name>.meta.json`, and `load_program` prefers it.

The program hash is the content address of what the teacher is shown (instructions, demos, field
names, types, prefixes and descriptions): it goes into every request key, so editing a prompt or
re-optimizing a program makes a rerun ask again instead of reusing stale answers.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from r2r_synth.atomic import check_dir_target, write_json_atomic
from r2r_synth.config import DEFAULT_PROGRAMS_DIR
from r2r_synth.errors import InputError
from r2r_synth.schemas import stable_hash, utcnow
from r2r_synth.teacher.signatures import SIGNATURES, Passage, read_prompt

logger = logging.getLogger(__name__)

PROGRAM_NAMES = ("direct", "comparison", "listwise", "queries")


class DirectProgram(dspy.Module):
    """Direct relevance reasoning: `(query, document) -> reasoning, relevance, score`."""

    def __init__(self, signature: type[dspy.Signature] | None = None):
        super().__init__()
        self.predict = dspy.Predict(signature or SIGNATURES["direct"])

    def forward(self, *, query: str, document: str) -> dspy.Prediction:
        return self.predict(query=query, document=document)

    async def aforward(self, *, query: str, document: str) -> dspy.Prediction:
        return await self.predict.acall(query=query, document=document)


class ComparisonProgram(dspy.Module):
    """Comparison reasoning: `(query, document_a, document_b) -> reasoning, preferred, confidence`."""

    def __init__(self, signature: type[dspy.Signature] | None = None):
        super().__init__()
        self.predict = dspy.Predict(signature or SIGNATURES["comparison"])

    def forward(self, *, query: str, document_a: str, document_b: str) -> dspy.Prediction:
        return self.predict(query=query, document_a=document_a, document_b=document_b)

    async def aforward(self, *, query: str, document_a: str, document_b: str) -> dspy.Prediction:
        return await self.predict.acall(query=query, document_a=document_a, document_b=document_b)


class ListwiseProgram(dspy.Module):
    """Listwise reasoning over a window (R2R's call): `(query, passages) -> ranked_passages`, every
    passage once, most relevant first, each with its direct and comparative reason and a grade."""

    def __init__(self, signature: type[dspy.Signature] | None = None):
        super().__init__()
        self.predict = dspy.Predict(signature or SIGNATURES["listwise"])

    def forward(self, *, query: str, passages: list[Any]) -> dspy.Prediction:
        return self.predict(query=query, passages=_passages(passages))

    async def aforward(self, *, query: str, passages: list[Any]) -> dspy.Prediction:
        return await self.predict.acall(query=query, passages=_passages(passages))


class QueriesProgram(dspy.Module):
    """Queries from the corpus (InPars, Promptagator): `(document, example_queries, count) -> queries`,
    the queries a searcher would ask that the document answers, in the style of the examples."""

    def __init__(self, signature: type[dspy.Signature] | None = None):
        super().__init__()
        self.predict = dspy.Predict(signature or SIGNATURES["queries"])

    def forward(self, *, document: str, example_queries: list[str], count: int) -> dspy.Prediction:
        return self.predict(document=document, example_queries=example_queries, count=count)

    async def aforward(self, *, document: str, example_queries: list[str], count: int) -> dspy.Prediction:
        return await self.predict.acall(document=document, example_queries=example_queries, count=count)


def _passages(passages: list[Any]) -> list[Passage]:
    """`Passage`s from passages given as models or as ``{"identifier", "text"}`` dicts (examples
    serialized by DSPy come back as dicts); the prompt is the same either way."""
    return [p if isinstance(p, Passage) else Passage.model_validate(p) for p in passages]


_MODULES: dict[str, type[dspy.Module]] = {"direct": DirectProgram, "comparison": ComparisonProgram,
                                          "listwise": ListwiseProgram, "queries": QueriesProgram}


@dataclass
class TeacherProgram:
    """A program ready to run: the module plus the hashes that go into provenance and request keys."""

    name: str
    module: dspy.Module
    program_hash: str
    prompt_hash: str
    optimized: bool
    path: Path | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def predictor(self) -> dspy.Predict:
        return predictor_of(self.module)


def _check_name(name: str) -> None:
    if name not in _MODULES:
        raise InputError(f"unknown program {name!r}", hint=f"choose one of {', '.join(PROGRAM_NAMES)}")


def build_program(name: str) -> dspy.Module:
    """A fresh program `name` whose instructions are read from `r2r_synth/prompts/<name>.md` now (so an edit
    to the file shows up without re-importing)."""
    _check_name(name)
    signature = SIGNATURES[name]
    text = read_prompt(name)
    if text:
        signature = signature.with_instructions(text)
    return _MODULES[name](signature)


def predictor_of(module: dspy.Module) -> dspy.Predict:
    """The single `dspy.Predict` of a teacher program (what the engine formats and parses with)."""
    predictors = module.predictors()
    if len(predictors) != 1:
        raise InputError(
            f"a teacher program must hold exactly one dspy.Predict, this one holds {len(predictors)}",
            hint="build it with r2r_synth.teacher.programs.build_program",
        )
    return predictors[0]


def _content(module: dspy.Module) -> list[dict[str, Any]]:
    """What the teacher is shown, per predictor: instructions, demos and the signature's fields."""
    out = []
    for pname, pred in module.named_predictors():
        sig = pred.signature
        fields = [
            {
                "name": fname,
                "io": f.json_schema_extra["__dspy_field_type"],
                "type": str(f.annotation),
                "prefix": f.json_schema_extra.get("prefix"),
                "desc": f.json_schema_extra.get("desc"),
                **_schema_of(f.annotation),
            }
            for fname, f in sig.fields.items()
        ]
        demos = [dict(d) if not isinstance(d, dict) else d for d in pred.demos]
        demos = [{k: _plain(v) for k, v in sorted(d.items()) if not k.startswith("dspy_")} for d in demos]
        out.append({"predictor": pname, "instructions": sig.instructions, "fields": fields, "demos": demos})
    return out


def _schema_of(annotation: Any) -> dict[str, Any]:
    """``{"schema": ...}`` for a structured field type (a pydantic model, or a list of them, such as
    the listwise passages): the teacher is shown its JSON Schema, so a change to it is a change to
    the program. Empty for plain types, whose name says it all (their hashes stay as they were)."""
    import typing

    from pydantic import BaseModel, TypeAdapter

    types = (annotation, *typing.get_args(annotation))
    if any(isinstance(t, type) and issubclass(t, BaseModel) for t in types):
        return {"schema": TypeAdapter(annotation).json_schema()}
    return {}


def _plain(value: Any) -> Any:
    """`value` as the JSON a saved program holds (pydantic models as dicts, e.g. a listwise demo's
    passages), so a program hashes the same before it is saved and after it is loaded."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def program_hash(module: dspy.Module) -> str:
    """Content hash of the program's state: instructions, demos and signature fields (no LM)."""
    return stable_hash(_content(module), n=16)


def prompt_hash(module: dspy.Module) -> str:
    """Hash of the instruction text(s) the teacher sees (demos excluded)."""
    return stable_hash([c["instructions"] for c in _content(module)], n=16)


def load_program(name: str, *, programs_dir: Path | str = DEFAULT_PROGRAMS_DIR) -> TeacherProgram:
    """Program `name`: the optimized state in `programs_dir/<name>.json` when present (with its
    `.meta.json`), else a fresh program built from `r2r_synth/prompts/<name>.md`."""
    _check_name(name)
    programs_dir = Path(programs_dir)
    path = programs_dir / f"{name}.json"
    module = build_program(name)
    meta: dict[str, Any] = {}
    optimized = False
    if path.is_file():
        try:
            module.load(str(path))
        except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
            raise InputError(
                f"{path}: not a saved {name} program ({type(e).__name__}: {e})",
                hint=f"delete it to use the prompt in r2r_synth/prompts/{name}.md, or rerun `r2r-synth optimize`",
            ) from None
        # Whatever the file says, no LM comes in through a program: the teacher is chosen at run time.
        for pred in module.predictors():
            pred.lm = None
        meta_path = path.with_name(f"{name}.meta.json")
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise InputError(f"{meta_path}:{e.lineno}: not valid JSON ({e.msg})",
                                 hint="fix or delete the .meta.json file") from None
        optimized = True
    else:
        path = None
    return TeacherProgram(
        name=name,
        module=module,
        program_hash=program_hash(module),
        prompt_hash=prompt_hash(module),
        optimized=optimized,
        path=path,
        meta=meta,
    )


def save_program(module: dspy.Module, name: str, *, programs_dir: Path | str = DEFAULT_PROGRAMS_DIR,
                 meta: dict[str, Any] | None = None) -> Path:
    """Write `programs_dir/<name>.json` (DSPy state, with no LM attached) and `<name>.meta.json`
    (the given `meta` plus name, hashes, time and versions). Both files are replaced atomically."""
    _check_name(name)
    programs_dir = check_dir_target(programs_dir, what="--programs-dir")
    programs_dir.mkdir(parents=True, exist_ok=True)
    clean = module.deepcopy()
    for pred in clean.predictors():
        pred.lm = None  # an attached LM could carry an api_base or key into a shared file
    path = programs_dir / f"{name}.json"
    tmp = programs_dir / f".{name}.tmp.json"
    clean.save(str(tmp))  # DSPy writes the state (with its dependency versions) ...
    os.replace(tmp, path)  # ... and the rename makes it appear whole
    full_meta = {
        **(meta or {}),
        "name": name,
        "program_hash": program_hash(clean),
        "prompt_hash": prompt_hash(clean),
        "saved_at": utcnow().isoformat(),
        "dspy_version": getattr(dspy, "__version__", None),
    }
    write_json_atomic(programs_dir / f"{name}.meta.json", full_meta)
    return path
