"""The reasoning student's input: the fixed template of its prompt and the encoder that turns
(query, document[, verdict, reasoning]) into token ids with the verdict position known exactly."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from r2r_synth.errors import ConfigError

# Fixed pieces of the student's input. They are model-input constants (not teacher prompts): the
# student is trained on exactly these strings and they are saved with the model.
SYSTEM_INSTRUCTION = "You judge whether a document is relevant to a search query, and explain why."
QUERY_LABEL = "Query: "
DOCUMENT_LABEL = "\nDocument: "
QUESTION = "\nIs the document relevant to the query?"
VERDICT_PREFIX = "Relevant:"
VERDICT_YES = " yes"
VERDICT_NO = " no"
REASON_PREFIX = "\nReason:"
#: Where the user message goes when the chat template is rendered once to find the frame.
_SLOT = "\x00R2R-SLOT\x00"


class Template(BaseModel):
    """The exact input format of a reasoning student; saved in `r2r_config.json` so a loaded model
    scores with the format it was trained on."""

    model_config = ConfigDict(extra="forbid")

    head: str  # chat frame before the user message (system turn included)
    tail: str  # chat frame after the user message, up to the assistant's first token
    query_label: str = QUERY_LABEL
    document_label: str = DOCUMENT_LABEL
    question: str = QUESTION
    verdict_prefix: str = VERDICT_PREFIX
    verdict_yes: str = VERDICT_YES
    verdict_no: str = VERDICT_NO
    reason_prefix: str = REASON_PREFIX
    max_query_tokens: int = 64
    max_doc_tokens: int = 192
    max_reason_tokens: int = 96

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, **limits: int) -> Template:
        """Use the tokenizer's chat template when it has one (an instruct base judges better in the
        format it was tuned on); else a plain frame."""
        if getattr(tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": SYSTEM_INSTRUCTION}, {"role": "user", "content": _SLOT}]
            rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            if rendered.count(_SLOT) != 1:
                raise ConfigError(
                    "the base tokenizer's chat template does not place the user message once",
                    hint="use a base whose chat template renders system and user turns, or remove its chat_template",
                )
            head, tail = rendered.split(_SLOT)
        else:
            head, tail = SYSTEM_INSTRUCTION + "\n", "\n"
        return cls(head=head, tail=tail, **limits)


class Encoder:
    """Turns (query, document[, verdict, reasoning]) into token ids, piece by piece, so truncation is
    in tokens and the verdict position is known exactly (never searched for in text)."""

    def __init__(self, tokenizer: Any, template: Template):
        self.tokenizer = tokenizer
        self.template = template
        t = template
        self._head = self._ids(t.head)
        self._doc_label = self._ids(t.document_label)
        self._query_label = self._ids(t.query_label)
        self._tail = self._ids(t.question + t.tail + t.verdict_prefix)
        self._reason_prefix = self._ids(t.reason_prefix)
        self.yes_id = self._single(t.verdict_yes)
        self.no_id = self._single(t.verdict_no)
        if self.yes_id == self.no_id:
            raise ConfigError(f"the verdicts {t.verdict_yes!r} and {t.verdict_no!r} are the same token")
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise ConfigError("the base tokenizer has no eos token", hint="set tokenizer.eos_token on the base")

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _single(self, word: str) -> int:
        ids = self._ids(word)
        if len(ids) != 1:
            raise ConfigError(
                f"the verdict {word!r} is {len(ids)} tokens in the base tokenizer; the score is read from "
                "one token's logit",
                hint="use a base whose tokenizer has ' yes' and ' no' as single tokens",
            )
        return ids[0]

    def prompt(self, query: str, document: str) -> list[int]:
        """Ids up to and including "Relevant:"; the next token is the verdict."""
        return self.prefix(query) + self.suffix(document)

    def prefix(self, query: str) -> list[int]:
        """The part of the prompt every document of a query shares (computed once when scoring)."""
        return self._head + self._query_label + self._ids(query)[: self.template.max_query_tokens] + self._doc_label

    def suffix(self, document: str) -> list[int]:
        return self._ids(document)[: self.template.max_doc_tokens] + self._tail

    def reason_ids(self, reasoning: str) -> list[int]:
        return self._reason_prefix + self._ids(reasoning)[: self.template.max_reason_tokens] + [self.eos_id]
