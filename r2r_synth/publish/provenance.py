"""One config's section of the dataset card: what the records are, who made them with which prompt,
what was rejected and why, how the teacher agrees with gold labels, what it cost, the commands that
produced and published the run, and what `optimize` did to its programs.

The section names files, never the folders of the machine that made or published the run: an absolute
path in the manifest's command (an older r2r-synth wrote them) or in the optimize report shows as
`.../<name>` (the one rule of `r2r_synth.paths`). Nor does it name the teacher's server: `--api-base` (and `--prompt-api-base`) leave the
quoted commands, and any other URL shows as `<url>`. The publish command is quoted as given (the CLI
writes it relative)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePath
from typing import Any

from r2r_synth import __version__
from r2r_synth.errors import InputError
from r2r_synth.paths import portable_command as portable
from r2r_synth.plural import plural
from r2r_synth.problems import agreement_rows, find_problems, is_constant, label_distribution
from r2r_synth.rundir import Run
from r2r_synth.runstats import KindSummary, cache_line


def _fmt_cost(cost: float | None, unknown: int) -> str:
    if cost is None:
        return "unknown (the backend reported no price)"
    more = f" (+ {plural(unknown, 'record')} with unknown cost)" if unknown else ""
    return f"${cost:.4f}{more}"


def _fmt3(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"


#: Options whose value names the machine a teacher runs on: left out of every quoted command.
HOST_OPTIONS = ("--api-base", "--prompt-api-base")
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+")


def public_command(command: str) -> str:
    """`command` as a card quotes it: paths made portable (`portable`), `--api-base URL` and
    `--prompt-api-base URL` left out, and any other URL shown as `<url>` (a host name stays in the house)."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = []
    if not any(w in HOST_OPTIONS or w.startswith(tuple(f"{o}=" for o in HOST_OPTIONS)) for w in words):
        return _URL.sub("<url>", portable(command))  # the command as written, quoting and all
    kept: list[str] = []
    skip = False
    for w in words:
        if skip:
            skip = False
            continue
        if w in HOST_OPTIONS:
            skip = True
            continue
        if w.startswith(tuple(f"{o}=" for o in HOST_OPTIONS)):
            continue
        kept.append(w)
    return _URL.sub("<url>", portable(shlex.join(kept)))


def _portable_json(obj: Any) -> Any:
    if isinstance(obj, str):
        return _URL.sub("<url>", portable(obj))
    if isinstance(obj, dict):
        return {k: _portable_json(v) for k, v in obj.items() if k not in ("api_base", "prompt_api_base")}
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
    lines += _label_lines(kind, s)
    tokens = (f"{s.prompt_tokens:,} prompt + {s.completion_tokens:,} completion = {s.total_tokens:,}"
              if s.has_usage else "not recorded (the records carry no token usage)")
    lines.append(f"- **Tokens:** {tokens}; **cost:** {_fmt_cost(s.cost, s.cost_unknown)}")
    cached = cache_line([s])
    if cached:
        lines.append(f"- **Prompt cache:** {cached}")
    if m is not None:
        lines += _input_lines(m.config)
        lines.append(f"- **Produced by:** r2r-synth {m.r2r_synth_version}: `{public_command(m.command)}` "
                     f"(status `{m.status}`, started {m.started_at:%Y-%m-%d %H:%M} UTC)")
        if m.extra.get("provenance") == "imported":
            srcs = ", ".join(f"`{Path(x['path']).name}` (sha256 `{x['sha256'][:12]}`)" for x in m.extra.get("sources", []))
            lines.append(f"- **Imported** from {srcs}: the teacher output is someone else's, not generated here")
        lines += _filter_lines(m.extra.get("filter"), kind)
    lines.append(f"- **Published by:** r2r-synth {__version__}: `{public_command(command)}`")
    said = _optimize_lines(optimize, s.programs, s.teachers) if optimize is not None else []
    if said:  # only the configs whose programs the report scored
        lines += said
        dump = json.dumps(_portable_json(optimize), indent=2, ensure_ascii=False, default=str)
        lines += ["", f"<details><summary>Optimize report ({optimize_name})</summary>", "", "```json",
                  dump[:20_000], "```", "", "</details>"]
    return "\n".join(lines)


def _input_lines(config: dict[str, Any]) -> list[str]:
    """The split and the queries and qrels files the run read (its config's `read`; older runs lack it)."""
    read = config.get("read")
    if not isinstance(read, dict):
        return []

    def names(key: str) -> str:
        return ", ".join(f"`{_URL.sub('<url>', portable(str(x)))}`" for x in read.get(key) or []) or "none"

    split = f"split `{read['split']}`; " if read.get("split") else ""
    return [f"- **Read:** {split}queries {names('queries')}; qrels {names('qrels')}"]


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
              f"`{public_command(parent['command'])}`, status `{parent['status']}`; its teacher spend: {spend}): "
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


def _label_lines(kind: str, s: KindSummary) -> list[str]:
    """The label distribution, the agreement figures that depend on it (each beside what a constant
    answer scores), and the problems the data shows, in words (`r2r_synth.problems`)."""
    lines = []
    if kind == "direct":
        gold = ", ".join(f"{g}: {n}" for g, n in s.gold_counts.items())
        lines.append(f"- **Teacher labels (0–3):** {label_distribution(s)}"
                     + (" — **the labels are (nearly) constant**" if is_constant(s) else "")
                     + (f"; gold labels of the judged records: {gold}" if gold else ""))
        if not s.judged:
            lines.append("- **Agreement with gold:** no gold labels in this run")
    if kind == "comparison":
        pref = ", ".join(f"{g}: {n}" for g, n in s.preferred_counts.items())
        lines.append(f"- **Preferred (as asked, A shown first):** {pref}; the passage shown first was preferred in "
                     f"{s.first_shown} of {s.answers} answers in either order")
        if s.swap_checked:
            lines.append(f"- **Swap consistency:** {s.swap_agree}/{s.swap_checked} = "
                         f"{s.swap_agree / s.swap_checked:.3f} (both orders prefer the same document)")
        else:
            lines.append("- **Swap consistency:** not measured (pairs were asked in one order only)")
    if kind == "listwise":
        lines.append(f"- **Gold labels:** {'present for ' + str(s.judged) + ' windows' if s.judged else 'none'}")
        if s.mean_tau is not None:
            lines.append(f"- **Order shown vs the teacher's ranking:** mean Kendall tau {s.mean_tau:+.2f}; "
                         f"{s.keeps_order} of {s.records} windows ranked exactly as shown")
    rows = [(n, v, ref) for n, v, ref in agreement_rows(s) if not n.startswith("swap consistency")]
    if s.judged and rows:
        what = "judged records" if kind == "direct" else "pairs with different gold grades"
        lines.append(f"- **Agreement with gold** ({s.judged} {what}; each beside the score of a constant answer): "
                     + "; ".join(f"{n} {_fmt3(v)} ({ref})" for n, v, ref in rows))
    found = [p for p in find_problems({kind: s}) if p.kind == kind]
    if found:
        lines.append("- **Problems the data shows:**")
        lines += [f"  - {p.text} {p.advice}" for p in found]
    return lines


def _optimize_lines(report: dict[str, Any], programs: dict[str, str], teachers: list[str]) -> list[str]:
    """What `optimize` did to the programs of this config: the primary metric before and after, which
    of the two programs this run used (by program hash), and the teacher the figures were measured with."""
    out = []
    progs = report.get("programs") if isinstance(report.get("programs"), dict) else {}
    for name, used_hash in programs.items():
        p = progs.get(name)
        if not isinstance(p, dict) or used_hash not in {p.get("program_hash_before"), p.get("program_hash_after")}:
            continue
        metric = p.get("primary_metric")
        before = (p.get("before") or {}).get(metric)
        after = (p.get("after") or {}).get(metric)
        measured = report.get("teacher")
        other = f" (not this run's teacher, {', '.join(f'`{t}`' for t in teachers)})" if measured not in teachers else ""
        by = f"teacher `{measured}`{other}" if measured else "teacher not recorded"
        if p.get("program_hash_after") is None:
            out.append(f"- **Evaluated** by `r2r-synth optimize --evaluate-only` with {by} on "
                       f"{p.get('val_examples', '?')} validation examples: {metric} {_fmt3(before)} "
                       "(the program this run used)")
            continue
        which = ("this run used the optimized program" if used_hash == p.get("program_hash_after")
                 else "this run used the program as it was before (the first figure)")
        out.append(f"- **Optimized** (`{report.get('optimizer')}`, {by}, "
                   f"{p.get('train_examples', '?')} train / {p.get('val_examples', '?')} validation examples): "
                   f"{metric} {_fmt3(before)} -> {_fmt3(after)}; {which}")
    return out


def select_optimize_report(path: Path | None, run: Run) -> tuple[dict[str, Any] | None, str | None]:
    """The optimize report at `path` when it belongs to `run`, else None and why it is left out.

    It belongs when a program it scored is one the run's records were made with (the same program
    hash, before or after optimizing). A report of `optimize --evaluate-only` measured a teacher, not a
    change to the programs: it belongs only when that teacher is the run's too."""
    report = read_optimize_report(path)
    if report is None:
        return None, None
    used = {(r.provenance.program, r.provenance.program_hash) for recs in run.records.values() for r in recs}
    teachers = sorted({r.provenance.teacher for recs in run.records.values() for r in recs})
    progs = report.get("programs") if isinstance(report, dict) else None
    if not isinstance(progs, dict) or not any(isinstance(p, dict) and (p.get("program_hash_before")
                                                                        or p.get("program_hash_after"))
                                              for p in progs.values()):
        return None, (f"{path.name} holds no program hashes (it is not a report written by `r2r-synth optimize`), "
                      "so it cannot be matched to the programs of this run")
    matched = [name for name, p in progs.items() if isinstance(p, dict)
               and {(name, p.get("program_hash_before")), (name, p.get("program_hash_after"))} & used]
    if not matched:
        theirs = ", ".join(f"{n} {p.get('program_hash_after') or p.get('program_hash_before')}"
                           for n, p in progs.items() if isinstance(p, dict))
        ours = ", ".join(f"{n} {h}" for n, h in sorted(used))
        return None, (f"{path.name} is about other programs ({theirs}) than the ones this run used ({ours})")
    if report.get("evaluate_only") and report.get("teacher") not in teachers:
        return None, (f"{path.name} is an `optimize --evaluate-only` report of teacher {report.get('teacher')}, "
                      f"not of this run's teacher ({', '.join(teachers)}): its figures do not describe this data")
    return report, None


def read_optimize_report(path: Path | None) -> dict[str, Any] | None:
    """The optimize report at `path` (None when not given or absent)."""
    if path is None or not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e})", hint="pass the optimize_report.json that `optimize` wrote") from None
