"""The reasoning student at inference: `VerdictModel` (a causal LM read at its verdict position) and
`ReasoningStudent` (scores with one forward pass per prompt, explains by generating after the verdict)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from r2r_synth.errors import ConfigError, InputError
from r2r_synth.student.base import R2R_CONFIG_FILE, R2RConfig, Student, r2r_config, write_r2r_config
from r2r_synth.student.reasoning.bases import resolve_base
from r2r_synth.student.reasoning.template import Encoder, Template

KIND = "reasoning"


def _device(device: str | None) -> torch.device:
    """The device asked for, else the GPU where there is one."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class VerdictModel(nn.Module):
    """Wraps a causal LM so that one forward gives what the losses need, and nothing more: the score
    at each verdict position and the generation targets' logits. The vocabulary projection is applied
    only where a token is predicted (a 49k-word head over every prompt token would cost ~20% of a
    135M model's compute for nothing). Going through `forward` keeps DDP's gradient hooks working."""

    def __init__(self, lm: nn.Module, *, yes_id: int, no_id: int):
        super().__init__()
        self.lm = lm
        self.yes_id = yes_id
        self.no_id = no_id

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        decoder = self.lm.get_decoder()
        return decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def verdict_scores(self, h: torch.Tensor) -> torch.Tensor:
        """log p(yes) - log p(no) from final hidden states (N, H)."""
        head = self.lm.get_output_embeddings()
        w = head.weight[[self.yes_id, self.no_id]]
        two = h @ w.T
        if getattr(head, "bias", None) is not None:
            two = two + head.bias[[self.yes_id, self.no_id]]
        return two[:, 0] - two[:, 1]

    def forward(self, input_ids, attention_mask, verdict_index, labels=None):
        h = self.hidden(input_ids, attention_mask)
        rows = torch.arange(h.shape[0], device=h.device)
        scores = self.verdict_scores(h[rows, verdict_index - 1])
        out = {"scores": scores}
        if labels is not None:
            # position t predicts token t+1: hidden states before each target token.
            target_mask = labels[:, 1:] != -100
            logits = self.lm.get_output_embeddings()(h[:, :-1][target_mask])
            out["gen_logits"] = logits
            out["gen_targets"] = labels[:, 1:][target_mask]
        return out


class ReasoningStudent(Student):
    """A causal LM that scores (query, document) by the log-odds of " yes" at its verdict position and
    explains a score by generating the reasoning after it."""

    kind: ClassVar[str] = KIND
    can_explain: ClassVar[bool] = True

    def __init__(self, model: Any, tokenizer: Any, template: Template, *, meta: R2RConfig,
                 path: Path | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.template = template
        self.encoder = Encoder(tokenizer, template)
        self.scorer = VerdictModel(model, yes_id=self.encoder.yes_id, no_id=self.encoder.no_id)
        self.path = path
        self.meta = meta

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def score(self, query: str, documents: Sequence[str], *, batch_size: int = 32) -> list[float]:
        """One score per document (log-odds of the verdict " yes"), from a single forward pass over
        each prompt: nothing is generated. The prefix every document shares (instruction + query) is
        run once and its key/value cache reused for each batch of documents (a third of a DL19 prompt)."""
        import copy

        if not documents:
            return []
        enc = self.encoder
        prefix = torch.tensor([enc.prefix(query)], device=self.device)
        decoder = self.model.get_decoder()
        cache = decoder(input_ids=prefix, use_cache=True).past_key_values
        suffixes = [enc.suffix(d) for d in documents]
        order = sorted(range(len(suffixes)), key=lambda i: len(suffixes[i]))  # less padding per batch
        out = [0.0] * len(suffixes)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else enc.eos_id
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            length = max(len(suffixes[i]) for i in idx)
            ids = torch.full((len(idx), length), pad, dtype=torch.long)
            att = torch.zeros((len(idx), prefix.shape[1] + length), dtype=torch.long)
            att[:, : prefix.shape[1]] = 1
            for r, i in enumerate(idx):
                ids[r, : len(suffixes[i])] = torch.tensor(suffixes[i])
                att[r, prefix.shape[1] : prefix.shape[1] + len(suffixes[i])] = 1
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(idx))
            h = decoder(input_ids=ids.to(self.device), attention_mask=att.to(self.device), past_key_values=past,
                        use_cache=True).last_hidden_state
            last = torch.tensor([len(suffixes[i]) - 1 for i in idx], device=self.device)
            scores = self.scorer.verdict_scores(h[torch.arange(len(idx), device=self.device), last])
            for i, v in zip(idx, scores.float().tolist()):
                out[i] = v
        return out

    @torch.inference_mode()
    def explain(self, query: str, document: str, *, max_new_tokens: int = 128) -> str:
        """The student's verdict and its reasoning for it, generated greedily after "Reason:"."""
        enc = self.encoder
        prompt = enc.prompt(query, document)
        score = self.score(query, [document])[0]
        verdict = score > 0
        ids = prompt + [enc.yes_id if verdict else enc.no_id] + enc._reason_prefix
        x = torch.tensor([ids], device=self.device)
        gen = self.model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=enc.eos_id,
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else enc.eos_id,
        )
        reason = self.tokenizer.decode(gen[0, len(ids):], skip_special_tokens=True).strip()
        word = (self.template.verdict_yes if verdict else self.template.verdict_no).strip()
        return f"{word} ({score:+.2f}): {reason}"

    def save(self, out_dir: Path) -> Path:
        out_dir = Path(out_dir)
        self.model.save_pretrained(out_dir, safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir)
        # The template goes with the weights: a loaded model must score with the format it learned.
        write_r2r_config(out_dir, self.meta.model_copy(update={"template": self.template.model_dump()}))
        self.path = out_dir
        return out_dir

    @classmethod
    def load(cls, path: Path, *, device: str | None = None, int8: bool = False) -> ReasoningStudent:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if int8:
            raise ConfigError("int8 loading is for the bi-encoder and cross-encoder students",
                              hint="drop --int8 / the student-int8: prefix for a reasoning student")

        path = Path(path)
        meta = cls.read_own_config(path)
        if meta.template is None:
            raise InputError(f"{path / R2R_CONFIG_FILE}: a reasoning student's config without its input template",
                             hint="retrain the student: `r2r-synth train --student reasoning` saves the template")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(_device(device))
        tok = AutoTokenizer.from_pretrained(path)
        return cls(model, tok, Template(**meta.template), meta=meta, path=path)

    @classmethod
    def from_base(cls, base: str | None = None, *, device: str | None = None, **limits: int) -> ReasoningStudent:
        """An untrained student straight from a base model (the zero-shot yes/no judge baseline)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = resolve_base(base)
        tok = AutoTokenizer.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).to(_device(device))
        return cls(model, tok, Template.for_tokenizer(tok, **limits), meta=r2r_config(KIND, base=src))
