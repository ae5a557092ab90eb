"""The files stages hand each other beside the records: a student's `r2r_config.json` (written by
`train`; read by `evaluate`, `rerank` and `publish`) and `evaluation.json` (written by `evaluate`; read
by `report` and `publish`). Each has its schema model and one reader here, so no stage reads another's
file its own way (stages never import each other; they meet at files and schemas)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from r2r_synth import __version__
from r2r_synth.errors import InputError
from r2r_synth.hybrid import WEIGHT_GRID, Hybrid

R2R_CONFIG_FILE = "r2r_config.json"
EVALUATION_FILE = "evaluation.json"


# ----------------------------------------------------------------------------- r2r_config.json


class EpochScore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epoch: float
    step: int
    ndcg_at_10: float


class HeldOut(BaseModel):
    """`r2r_config.json`'s `heldout`: the queries training set aside and what they measured."""

    model_config = ConfigDict(extra="forbid")

    fraction: float
    seed: int
    labels: Literal["gold", "teacher"]
    qids: list[str]
    first_stage: str  # where the held-out queries' first-stage scores came from
    epochs: list[EpochScore] = []  # nDCG@10 of the student after each epoch (and at the end of training)
    chosen: EpochScore | None = None  # the epoch whose weights were kept
    ndcg_at_10: dict[str, float] = {}  # the chosen student alone, the first stage alone, the hybrid kept
    weights: list[float] = list(WEIGHT_GRID)
    fits: dict[str, list[float]] = {}  # method -> nDCG@10 at each of `weights`


class R2RConfig(BaseModel):
    """`r2r_config.json`, beside every student's weights and in one shape for every kind: what the
    student started from, the options its training resolved to, the command as given, the corpus it
    read and what training measured (nanoGPT keeps the config in every checkpoint)."""

    model_config = ConfigDict(extra="forbid")

    student: str  # the kind; `load_student` dispatches on it
    r2r_synth_version: str
    base: str  # the model the student started from: a local directory, an HF id or the default's name
    options: dict[str, Any]  # the kind's options model with every default filled in ({} untrained)
    config: dict[str, Any]  # the command's `TrainConfig` as given, secrets masked ({} untrained)
    corpus: dict[str, Any]  # the training view's summary and its source paths ({} untrained)
    training: dict[str, Any]  # what training measured: steps, wall_s, train_loss, ... ({} untrained)
    #: The input format the model was trained on where the kind defines its own (the reasoning
    #: student's `Template`: a loaded model must score with it); None where the tokenizer alone does.
    template: dict[str, Any] | None = None
    #: How `evaluate` and `rerank` fuse the student with the first stage (`r2r_synth.hybrid`); None for
    #: a student that has none (an untrained base, the reasoning student): it ranks alone.
    hybrid: Hybrid | None = None
    #: The held-out training queries that chose the epoch and the hybrid, and what they measured.
    heldout: HeldOut | None = None


def read_r2r_config(path: Path | str) -> R2RConfig:
    """The `R2RConfig` in the model directory `path`; `InputError` when it is missing or not in the
    shape `train` writes."""
    path = Path(path)
    f = path / R2R_CONFIG_FILE
    if not f.exists():
        raise InputError(
            f"{path}: no {R2R_CONFIG_FILE}; not a model written by `r2r-synth train`",
            hint="pass a directory written by `r2r-synth train`, or use `bi-encoder:<path>` for a plain "
            "sentence-transformers model",
        )
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{f}: not valid JSON ({getattr(e, 'msg', e)})", hint="retrain, or restore the file") from None
    try:
        return R2RConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"])) or "the top level"
        raise InputError(
            f"{f}: not the r2r_config.json r2r-synth {__version__} writes ({where}: {first['msg']})",
            hint="retrain the student with this version of r2r-synth (older versions wrote another shape)",
        ) from None


# ----------------------------------------------------------------------------- evaluation.json


class EvaluationReport(BaseModel):
    """`evaluation.json` as `r2r-synth evaluate` writes it. `systems` maps each system's name to its
    row: its spec, one value per measure, and what it cost (pairs, seconds, failed calls, ...)."""

    model_config = ConfigDict(extra="forbid")

    input: str | None = None
    split: str | None = None  # the BEIR split (or BRIGHT domain) read; None: the input has none
    queries_files: list[str] = Field(default_factory=list)  # the queries files read
    qrels: str | None = None  # the qrels file(s) read, comma-separated; None: no qrels file
    queries: int | None = None
    judged_queries: int | None = None
    depth: int | None = None
    candidates_per_query: dict[str, int] = Field(default_factory=dict)
    measures: list[str] = Field(min_length=1)
    unchanged_by_reranking: dict[str, Any] = Field(default_factory=dict)
    systems: dict[str, dict[str, Any]] = Field(min_length=1)
    significance: dict[str, Any] = Field(default_factory=dict)
    per_query: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    device: str | None = None
    created_at: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)

    def table(self) -> dict[str, dict[str, float]]:
        """``{system: {measure: value}}`` for the measures the report lists."""
        return {name: {m: row[m] for m in self.measures if isinstance(row.get(m), (int, float))}
                for name, row in self.systems.items()}


_EXPECTED = ('expected the evaluation.json of `r2r-synth evaluate`, or {"system": {"nDCG@10": 0.5, ...}, ...}, '
             'the same under "systems"/"results"/"metrics", or a list of {"system": ..., "nDCG@10": ...} rows')


def read_evaluation(path: Path | str) -> EvaluationReport:
    """The evaluation at `path`: an `evaluation.json` of `evaluate` (validated), or a plainer table of
    another tool (``{system: {measure: value}}``, the same under ``"systems"``/``"results"``/
    ``"metrics"``, or a list of ``{"system": name, measure: value}`` rows), turned into the same model
    (its measures: every numeric column). `InputError` naming the file when it is neither."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file", hint="pass the evaluation.json that `r2r-synth evaluate` wrote")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})",
                         hint="pass the evaluation.json that `r2r-synth evaluate` wrote") from None
    if isinstance(data, dict) and ("measures" in data or data.get("systems") == {} or not data):
        try:
            return EvaluationReport.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(map(str, first["loc"])) or "the top level"
            raise InputError(f"{path}: not an evaluation.json of `r2r-synth evaluate` ({where}: {first['msg']})",
                             hint="pass the evaluation.json that `r2r-synth evaluate --out DIR` wrote") from None
    return _plain_table(path, data)


def _plain_table(path: Path, data: Any) -> EvaluationReport:
    def numeric(d: dict[str, Any]) -> dict[str, float]:
        # An integer stays one (a count is shown as 43, not 43.0000).
        return {str(k): v if isinstance(v, int) else float(v) for k, v in d.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}

    table: dict[str, dict[str, float]] = {}
    if isinstance(data, dict):
        for key in ("systems", "results", "metrics"):
            if isinstance(data.get(key), (dict, list)):
                data = data[key]
                break
    if isinstance(data, list):
        for i, row in enumerate(data):
            if not isinstance(row, dict) or not isinstance(row.get("system", row.get("name")), str):
                raise InputError(f"{path}: row {i} has no 'system' name", hint=_EXPECTED)
            inner = row.get("measures") if isinstance(row.get("measures"), dict) else row
            table[row.get("system", row.get("name"))] = numeric(inner)
    elif isinstance(data, dict):
        for name, values in data.items():
            if isinstance(values, dict) and numeric(values):
                table[str(name)] = numeric(values)
    if not any(table.values()):
        raise InputError(f"{path}: found no system with numeric measures", hint=_EXPECTED)
    measures = list(dict.fromkeys(m for row in table.values() for m in row))
    return EvaluationReport(measures=measures, systems=table)
