"""The reasoning student (Reason-to-Rank's idea): a small causal LM that ranks *and* says why.

R2R (Ji et al., arXiv 2410.05168) distils a teacher's direct reasoning and its ranking into one
student with a generation loss on the reasoning plus pairwise and listwise ranking losses on a
relevance score; it weighs them pairwise 0.4, listwise 0.4, generation 0.2 (our defaults).

The sequence the student learns, per (query, document)::

    <chat frame: system instruction, user turn "Query: q / Document: d / question">
    <assistant turn> "Relevant:" | " yes" / " no" | "\\nReason: <teacher's reasoning>" <eos>
                                 ^ verdict position: score = logit(" yes") - logit(" no")

Why the verdict comes *before* the reasoning (a design choice, not an oversight): a causal LM's
logits at the verdict position see only the query and the document, so the score read there at
inference — one forward pass over the prompt, no generation — is exactly the score the ranking losses
trained. R2R scores from the verdict's logits too; had the reasoning come first, scoring without
generating would read the verdict in a context the model never saw in training (no reasoning before
it), and scoring with generating costs ~30x more per pair. The reasoning still shapes the ranking:
the generation loss trains the same weights that compute the verdict (multi-task), and `explain`
generates it conditioned on the verdict the model gave, i.e. it justifies the score it reports.

The score is the log-odds of " yes" against " no" (the two-way softmax of their logits), monotone in
p("yes") but without the saturation of probabilities, so the RankNet/ListNet losses get gradients
even for confident pairs.

Training goes through `transformers.Trainer` (a subclass with a custom `compute_loss` and a collator
that keeps one query's documents together), so `accelerate launch` / `torchrun` work unchanged.
Small bases are fully fine-tuned; bases above `lora_threshold` parameters get LoRA adapters (PEFT),
merged before saving, so the saved directory loads with plain
`transformers.AutoModelForCausalLM.from_pretrained(DIR)`.

The modules: `template` (the prompt's fixed pieces and the encoder), `data` (one group per query,
negatives, the collator), `options` (`ReasoningOptions`, `resolve_options`), `bases` (the default
base and GGUF dequantization), `model` (`VerdictModel`, `ReasoningStudent`), `training`
(`train_student`). The losses live in `r2r_synth.student.losses`.
"""

from r2r_synth.student.reasoning.bases import default_gguf, resolve_base
from r2r_synth.student.reasoning.model import ReasoningStudent
from r2r_synth.student.reasoning.options import ReasoningOptions, resolve_options
from r2r_synth.student.reasoning.template import Encoder, Template
from r2r_synth.student.reasoning.training import train_student

__all__ = [
    "Encoder",
    "ReasoningOptions",
    "ReasoningStudent",
    "Template",
    "default_gguf",
    "resolve_base",
    "resolve_options",
    "train_student",
]
