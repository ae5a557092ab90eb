"""`r2r-synth report`: one self-contained HTML page about a run directory (see `r2r_synth.report.page`):
`page` assembles it, `sections` writes the problems and the per-kind sections, `plots` draws."""

from r2r_synth.report.page import REPORT_FILE, ReportResult, build_report, read_evaluation

__all__ = ["REPORT_FILE", "ReportResult", "build_report", "read_evaluation"]
