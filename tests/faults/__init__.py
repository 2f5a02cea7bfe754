"""The fault suite (issue 8): bad inputs, interrupts, full disks, races and fuzzed loaders.

A package so that its conftest imports as `faults.conftest` and never shadows `tests/conftest.py`.
"""
