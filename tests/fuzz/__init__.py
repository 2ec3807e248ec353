"""Fuzzing the parsers of stored data: any input ends in the format's own errors.

`targets.py` is the table of parsers (one entry each), shared by the hypothesis properties in
`test_parsers_fuzz.py` and the coverage-guided harness `atheris_parsers.py`.
"""
