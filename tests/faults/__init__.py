"""The fault suite (issue 8): bad inputs, interrupts, full disks, races, OOM and fuzzed loaders.

    pytest tests/faults                              # CI: fixed-seed fuzzing, ~1.5 min on 2 CPU cores
    pytest tests/faults/test_fuzz.py --fuzz-long     # 2000 examples per loader
    SEDPA_FUZZ_EXAMPLES=10000 pytest tests/faults/test_fuzz.py
    python tests/faults/update_readme.py [--check]   # copy REFUSALS.md into README.md's section

A whole, passing CI-mode run rewrites tests/faults/REFUSALS.md (every input tried and the line sedpa
answered) and prints the counts: inputs tried, faults survived.

A package so that its conftest imports as `faults.conftest` and never shadows `tests/conftest.py`.
"""
