"""Benchmarks: niah, ppl, longbench, efficiency; one JSON shape, PNGs beside it."""
