"""The messages a teacher is sent, formatted by the program's DSPy adapter.

DSPy's adapter formats the signature (system message) and the demos once per program; per request
only the user turn is formatted. So every request starts with the same static prefix (instructions,
then demos), then the query (the signatures' first input field), then the document or window: the
order a provider's prompt cache needs (`r2r_synth.teacher.caching`). An adapter whose `format` is not "system + demos + user" is used
whole for every request instead, so the prompt is always exactly what `module(...)` would send.
"""

from __future__ import annotations

from typing import Any


class PromptPlan:
    """Per program kind: the adapter's fixed prefix, the signature, and any `response_format`."""

    def __init__(self, *, teacher: Any, programs: dict[str, Any]):
        import dspy

        self.teacher = teacher
        self.programs = programs
        self.adapter = teacher.adapter or dspy.ChatAdapter()
        self.prefix: dict[str, list[dict[str, Any]]] = {}
        self.extra: dict[str, dict[str, Any]] = {}
        self.signature: dict[str, Any] = {}
        self.full_format: dict[str, bool] = {}
        for kind, prog in programs.items():
            self._plan(kind, prog)

    def _plan(self, kind: str, prog: Any) -> None:
        pred = prog.predictor
        sig, demos = pred.signature, list(pred.demos)
        self.signature[kind] = sig
        self.prefix[kind] = ([{"role": "system", "content": self.adapter.format_system_message(sig)}]
                             + self.adapter.format_demos(sig, demos))
        extra: dict[str, Any] = {}
        prepare = getattr(self.adapter, "_prepare_response_format", None)
        if callable(prepare):  # JSON-mode adapters (e.g. the embedded teacher's) choose a response_format
            prepare(self.teacher.lm, extra, sig)
        self.extra[kind] = extra
        # A custom adapter may format differently from system+demos+user: then use its format() whole.
        probe = {name: f"<{name}>" for name in sig.input_fields}
        self.full_format[kind] = self.adapter.format(sig, demos, probe) != self._compose(kind, probe)

    def _compose(self, kind: str, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        sig = self.signature[kind]
        content = self.adapter.format_user_message_content(sig, inputs, main_request=True)
        return [*self.prefix[kind], {"role": "user", "content": content}]

    def prefix_len(self, kind: str) -> int:
        """How many leading messages every request of `kind` shares (the system message with the
        instructions, then the demos): the static prefix a provider's prompt cache keeps. 0 for an
        adapter formatted whole, whose layout is its own."""
        return 0 if self.full_format[kind] else len(self.prefix[kind])

    def messages(self, kind: str, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        """The chat messages of one request of `kind` with these signature inputs."""
        if self.full_format[kind]:
            pred = self.programs[kind].predictor
            return self.adapter.format(self.signature[kind], list(pred.demos), inputs)
        return self._compose(kind, inputs)
