"""The teacher: DSPy signatures (the contract), programs (load/save/hash), and the LM behind them.

`signatures` and `programs` are light; `lm.open_teacher` opens a LiteLLM-backed teacher (or the
embedded offline one). Import the submodules directly; this package imports nothing heavy.
"""
