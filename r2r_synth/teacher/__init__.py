"""The teacher: DSPy signatures (the contract), programs (load/save/hash), the LM behind them and
the one policy every call follows.

`signatures` and `programs` are light; `lm.open_teacher` opens a LiteLLM-backed teacher (or the
embedded offline one); `policy` retries, gives up and masks. Import the submodules directly.
"""
