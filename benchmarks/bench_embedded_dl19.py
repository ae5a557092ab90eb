"""The embedded-teacher bar on TREC DL19: `generate` over all 43 queries (depth 5, direct +
adjacent comparisons) with SmolLM2-135M, then an audit of the run directory.

Bars (exit 1 on any miss):
- the run completes (exit 0, manifest status "complete");
- every request ends in exactly one of direct.jsonl / comparison.jsonl / rejects.jsonl: per kind,
  records + rejects == the requests the input implies (queries x depth; depth-1 adjacent pairs);
- manifest counts equal the files' line counts;
- no key appears twice (within or across the files), and every line validates as its record kind;
- at least --min-valid of the requests became valid records.

Usage (long: ~560 requests at a few seconds each on a busy 2-core machine; it resumes when rerun):
    nice -n 10 .venv/bin/python benchmarks/bench_embedded_dl19.py > outputs/bench_embedded_dl19.log 2>&1
    .venv/bin/python benchmarks/bench_embedded_dl19.py --verify-only   # audit an existing run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from r2r_synth.schemas import (
    MANIFEST_FILE,
    RECORD_FILES,
    REJECTS_FILE,
    ComparisonRecord,
    DirectRecord,
    Manifest,
    Reject,
)
from r2r_synth.teacher.embedded import EMBEDDED_NAME

REPO = Path(__file__).resolve().parents[1]
DL19 = REPO.parent / "shared" / "data" / "trec-dl19"
KINDS = {"direct": DirectRecord, "comparison": ComparisonRecord}


def expected_requests(input_path: Path, *, depth: int, limit: int | None) -> dict[str, int]:
    """Requests the input implies, counted from the RankGPT JSON itself (not from the engine):
    min(depth, hits) direct judgments per query and one adjacent comparison per neighbouring pair."""
    data = json.loads(input_path.read_text(encoding="utf-8"))[:limit]
    direct = sum(min(depth, len(q["hits"])) for q in data)
    comparison = sum(max(0, min(depth, len(q["hits"])) - 1) for q in data)
    return {"direct": direct, "comparison": comparison}


def read_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def audit(out: Path, expected: dict[str, int], *, min_valid: float) -> tuple[list[tuple[str, str, str, bool]], dict]:
    """Rows (check, got, wanted, ok) and figures of the run directory `out`."""
    rows: list[tuple[str, str, str, bool]] = []
    manifest = Manifest.model_validate_json((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    rows.append(("manifest status", manifest.status, "complete", manifest.status == "complete"))
    rows.append(("teacher", manifest.teacher, EMBEDDED_NAME, manifest.teacher == EMBEDDED_NAME))

    rejects = read_lines(out / REJECTS_FILE)
    bad_lines = 0
    for r in rejects:
        try:
            Reject.model_validate(r)
        except ValueError:
            bad_lines += 1
    all_keys: list[str] = [r["key"] for r in rejects]
    figures: dict = {"wall_s": manifest.wall_s, "reasons": Counter(r["reason"].split(":")[0] for r in rejects)}
    total_req = total_rec = 0
    for kind, model in KINDS.items():
        recs = read_lines(out / RECORD_FILES[kind])
        for r in recs:
            try:
                model.model_validate(r)
            except ValueError:
                bad_lines += 1
        all_keys += [r["key"] for r in recs]
        n_rej = sum(1 for r in rejects if r.get("kind") == kind)
        c = manifest.counts.get(kind)
        # `requested` counts every request of the job, those done in earlier sessions included
        # (`skipped_done` says how many of them were).
        requested = c.requested if c else 0
        want = expected[kind]
        rows.append((f"{kind}: records + rejects", f"{len(recs)} + {n_rej} = {len(recs) + n_rej}", str(want),
                     len(recs) + n_rej == want))
        rows.append((f"{kind}: manifest requested", str(requested), str(want), requested == want))
        m_rec, m_rej = (c.records, c.rejects) if c else (-1, -1)
        rows.append((f"{kind}: manifest records/rejects", f"{m_rec}/{m_rej}", f"{len(recs)}/{n_rej} (files)",
                     (m_rec, m_rej) == (len(recs), n_rej)))
        total_req += want
        total_rec += len(recs)
        figures[f"{kind}_valid"] = len(recs) / want if want else 1.0
    dup = [k for k, n in Counter(all_keys).items() if n > 1]
    rows.append(("duplicate keys", str(len(dup)), "0", not dup))
    rows.append(("lines that fail their schema", str(bad_lines), "0", bad_lines == 0))
    valid = total_rec / total_req if total_req else 0.0
    figures["valid"] = valid
    rows.append(("valid records / requests", f"{total_rec}/{total_req} = {valid:.1%}", f">= {min_valid:.0%}",
                 valid >= min_valid))
    return rows, figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, default=DL19 / "bm25_top100.json")
    ap.add_argument("--qrels", type=Path, default=DL19 / "qrels.txt")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "dl19-embedded")
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None, help="first N queries (default: all 43)")
    ap.add_argument("--min-valid", type=float, default=0.9)
    ap.add_argument("--verify-only", action="store_true", help="audit --out without running generate")
    args = ap.parse_args()
    console = Console()
    if not args.input.exists():
        console.print(f"[red]{args.input} is absent[/]: this benchmark needs ../shared/data/trec-dl19")
        return 1

    rc, wall = 0, None
    if not args.verify_only:
        cmd = [sys.executable, "-m", "r2r_synth.cli", "generate", "--input", str(args.input), "--qrels",
               str(args.qrels), "--depth", str(args.depth), "--pairs", "adjacent", "--out", str(args.out)]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        console.print("$ " + " ".join(cmd))
        t0 = time.monotonic()
        rc = subprocess.call(cmd, cwd=REPO)
        wall = time.monotonic() - t0
    expected = expected_requests(args.input, depth=args.depth, limit=args.limit)
    rows, figures = audit(args.out, expected, min_valid=args.min_valid)
    if not args.verify_only:
        rows.insert(0, ("generate exit code", str(rc), "0", rc == 0))

    table = Table(title=f"embedded teacher on DL19 ({args.out})")
    for col in ("check", "got", "bar", "ok"):
        table.add_column(col)
    for name, got, want, ok in rows:
        table.add_row(name, got, want, "[green]yes[/]" if ok else "[red]NO[/]")
    console.print(table)
    n = sum(expected.values())
    w = wall or figures["wall_s"]
    if w:
        console.print(f"requests: {n}  wall: {w:.0f} s  rate: {n / w:.2f} requests/s (this session's wall; "
                      "comparisons are asked in both orders, so calls > requests)")
    console.print(f"valid: direct {figures['direct_valid']:.1%}, comparison {figures['comparison_valid']:.1%}")
    if figures["reasons"]:
        console.print(f"reject reasons: {dict(figures['reasons'])}")
    missed = [name for name, _, _, ok in rows if not ok]
    if missed:
        console.print(f"[red]missed: {', '.join(missed)}[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
