"""One config's section of the dataset card: what the records are, who made them with which prompt,
what was rejected and why, how the teacher agrees with gold labels, what it cost, the commands that
produced and published the run, and what `optimize` did to its programs.

The section names files, never the folders of the machine that made or published the run: an absolute
path in the manifest's command (an older r2r-synth wrote them) or in the optimize report shows as
`.../<name>`. The publish command is quoted as given (the CLI writes it relative)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path, PurePath
from typing import Any

from r2r_synth import __version__
from r2r_synth.errors import InputError
from r2r_synth.rundir import Run
from r2r_synth.runstats import KindSummary


def _fmt_cost(cost: float | None, unknown: int) -> str:
    if cost is None:
        return "unknown (the backend reported no price)"
    more = f" (+ {unknown} records with unknown cost)" if unknown else ""
    return f"${cost:.4f}{more}"


def _fmt3(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"


def portable(text: str) -> str:
    """`text` with every absolute path in it, a word of its own or the value of `--opt=PATH`, shown as
    `.../<name>`; the rest (quoting included) is left as it was."""
    try:
        words = shlex.split(text)
    except ValueError:  # an unbalanced quote: prose, not a command
        words = text.split()
    paths = {w.partition("=")[2] if w.startswith("--") else w for w in words}
    for path in sorted((p for p in paths if os.path.isabs(p)), key=len, reverse=True):
        text = text.replace(path, f".../{PurePath(path).name}")
    return text


def _portable_json(obj: Any) -> Any:
    if isinstance(obj, str):
        return portable(obj)
    if isinstance(obj, dict):
        return {k: _portable_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_portable_json(v) for v in obj]
    return obj


def kind_section(kind: str, s: KindSummary, run: Run, *, rows: dict[str, int], splits: dict[str, float],
                 seed: int, command: str, optimize: dict[str, Any] | None, optimize_name: str | None,
                 prompt_texts: dict[tuple[str, str], str]) -> str:
    """The markdown of one config's provenance section. `prompt_texts` is the run's own record of what
    the teacher was shown: (program name, prompt hash) -> instruction text (`RunDir.prompt_texts`)."""
    m = run.manifest
    lines = [f"### `{kind}`", ""]
    split_txt = ", ".join(f"{k}: {v}" for k, v in rows.items())
    lines.append(f"- **Records:** {s.records} from {s.queries} queries ({split_txt}); split by query "
                 f"with `--split {','.join(f'{k}={v:g}' for k, v in splits.items())} --seed {seed}`")
    lines.append(f"- **Teacher:** {', '.join(f'`{t}`' for t in s.teachers)}")
    progs = ", ".join(f"`{p}` (program hash `{h}`)" for p, h in s.programs.items())
    lines.append(f"- **Programs:** {progs}")
    for p in s.programs:
        lines += _prompt_lines(p, s.prompts.get(p, []), prompt_texts)
    lines.append(f"- **Rejects:** {s.rejects}" + (" — nothing was rejected" if not s.rejects else ""))
    for reason, n in s.reject_reasons:
        lines.append(f"  - {n} × {reason}")
    if kind == "direct":
        lab = ", ".join(f"{g}: {n}" for g, n in s.label_counts.items())
        lines.append(f"- **Teacher labels (0–3):** {lab}")
        if s.judged:
            agr = ", ".join(f"{k} {v:.3f}" for k, v in s.agreement.items())
            lines.append(f"- **Agreement with gold** ({s.judged} judged records): {agr}")
        else:
            lines.append("- **Agreement with gold:** no gold labels in this run")
    if kind == "comparison":
        pref = ", ".join(f"{g}: {n}" for g, n in s.preferred_counts.items())
        lines.append(f"- **Preferred:** {pref}")
        if s.swap_checked:
            lines.append(f"- **Swap consistency:** {s.swap_agree}/{s.swap_checked} = "
                         f"{s.swap_agree / s.swap_checked:.3f} (both orders prefer the same document)")
        else:
            lines.append("- **Swap consistency:** not measured (pairs were asked in one order only)")
        acc = {k: v for k, v in s.agreement.items() if k != "swap_consistency"}
        if s.judged and acc:
            lines.append(f"- **Agreement with gold** ({s.judged} pairs with different gold grades): "
                         + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    if kind == "listwise":
        lines.append(f"- **Gold labels:** {'present for ' + str(s.judged) + ' windows' if s.judged else 'none'}")
    lines.append(f"- **Tokens:** {s.prompt_tokens:,} prompt + {s.completion_tokens:,} completion "
                 f"= {s.total_tokens:,}; **cost:** {_fmt_cost(s.cost, s.cost_unknown)}")
    if m is not None:
        lines.append(f"- **Produced by:** r2r-synth {m.r2r_synth_version}: `{portable(m.command)}` "
                     f"(status `{m.status}`, started {m.started_at:%Y-%m-%d %H:%M} UTC)")
        if m.extra.get("provenance") == "imported":
            srcs = ", ".join(f"`{Path(x['path']).name}` (sha256 `{x['sha256'][:12]}`)" for x in m.extra.get("sources", []))
            lines.append(f"- **Imported** from {srcs}: the teacher output is someone else's, not generated here")
        lines += _filter_lines(m.extra.get("filter"), kind)
    lines.append(f"- **Published by:** r2r-synth {__version__}: `{command}`")
    if optimize is not None:
        lines += _optimize_lines(optimize, s.programs)
        dump = json.dumps(_portable_json(optimize), indent=2, ensure_ascii=False, default=str)
        lines += ["", f"<details><summary>Optimize report ({optimize_name})</summary>", "", "```json",
                  dump[:20_000], "```", "", "</details>"]
    return "\n".join(lines)


def _filter_lines(summary: dict[str, Any] | None, kind: str) -> list[str]:
    """The funnel of a run written by `r2r-synth filter` (manifest `extra["filter"]`): its parent, what
    that cost, and this config's records in, dropped by each rule in order, and kept."""
    per = (summary or {}).get("kinds", {}).get(kind)
    if per is None:
        return []
    parent, cost = summary["parent"], summary["parent"].get("cost")
    spend = f"{parent['usage']['total_tokens']:,} tokens, " + ("cost unknown" if cost is None else f"${cost:.4f}")
    steps = " → ".join([f"{per['input']} records", *(f"`{r}` −{c['dropped']}" for r, c in per["rules"].items()),
                        f"{per['kept']} kept"])
    lines = [(f"- **Filtered** with `r2r-synth filter` from `{PurePath(parent['dir']).name}` (made by "
              f"`{portable(parent['command'])}`, status `{parent['status']}`; its teacher spend: {spend}): "
              f"{steps}. The dropped records, each with its rule, are in the run's `filtered.jsonl` (not published)")]
    earlier = (parent.get("filter") or {}).get("kinds", {}).get(kind)
    if earlier:
        lines.append(f"  - the parent was itself filtered: {earlier['input']} records → {earlier['kept']} kept")
    return lines


def _prompt_lines(program: str, hashes: list[str], prompt_texts: dict[tuple[str, str], str]) -> list[str]:
    """The instruction text of each prompt hash the records of `program` carry, as the run kept it. A
    hash without a snapshot is shown alone: a text found anywhere else may not be what the teacher saw."""
    lines = []
    for h in hashes:
        text = prompt_texts.get((program, h))
        if text is not None:
            lines += [f"- **Prompt** `{program}` (prompt hash `{h}`):", "", "  ```text",
                      *[f"  {ln}" for ln in text.strip().splitlines()], "  ```"]
        elif h:
            lines.append(f"- **Prompt** `{program}`: prompt hash `{h}` (its text is not kept in this run directory: "
                         "the run was written before runs kept program snapshots, or was imported)")
    return lines


def _optimize_lines(report: dict[str, Any], programs: dict[str, str]) -> list[str]:
    """What `optimize` did to the programs of this config: the primary metric before and after, and
    whether the optimized program is the one this run used (same program hash)."""
    out = []
    progs = report.get("programs") if isinstance(report.get("programs"), dict) else {}
    for name, used_hash in programs.items():
        p = progs.get(name)
        if not isinstance(p, dict):
            continue
        metric = p.get("primary_metric")
        before = (p.get("before") or {}).get(metric)
        after = (p.get("after") or {}).get(metric)
        same = used_hash in {p.get("program_hash_after"), p.get("program_hash_before")}
        out.append(
            f"- **Optimized** (`{report.get('optimizer') or 'evaluate only'}`, "
            f"{p.get('train_examples', '?')} train / {p.get('val_examples', '?')} validation examples): "
            f"{metric} {_fmt3(before)} -> {_fmt3(after)}; "
            + ("this run used that program" if same else
               f"**this run's program hash `{used_hash}` is not the one optimized** — the report may not apply")
        )
    return out


def read_optimize_report(path: Path | None) -> dict[str, Any] | None:
    """The optimize report at `path` (None when not given or absent)."""
    if path is None or not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e})", hint="pass the optimize_report.json that `optimize` wrote") from None
