"""`python -m r2r_synth.cli` (what tests and `accelerate launch -m r2r_synth.cli` run)."""

from r2r_synth.cli import main

main()
