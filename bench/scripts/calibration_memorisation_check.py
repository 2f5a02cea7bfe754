"""Does truncating sedpa-tiny's projections act as a regulariser? sedpa-tiny was trained on the bundled
train split (the default calibration text) and memorised it: compare perplexity on that text and on the
held-out text, uncompressed and after `--scope all --rank-ratio 0.85` with uniform and greedy ranks,
calibrated on the train split, all under full attention.

    PYTHONPATH=. python bench/scripts/calibration_memorisation_check.py     (CPU, ~5 min)

Measured (2 busy CPU cores): held-out 86.04 / train text 1.0748 uncompressed; uniform 85.77 / 1.1841;
greedy 86.25 / 1.0753 (quoted in bench/results/rank_search_sedpa-tiny-cpu_train-calibration.json).
"""

from __future__ import annotations

import copy
import dataclasses

from sedpa_compress.calibration.perplexity import heldout_windows, perplexity
from sedpa_compress.calibration.stats import CalibrateConfig, calibrate
from sedpa_compress.data.text import load_bundled_text
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models import load_model
from sedpa_compress.models.loader import shipped_pattern_path
from sedpa_compress.svd.compress import CompressConfig, compress_model


def main() -> None:
    base = load_model("sedpa-tiny", device="cpu", dtype="float32")
    pattern = HeadPattern.load(shipped_pattern_path(base), base.geometry)
    heldout = heldout_windows(base.encode, load_bundled_text("heldout"), seq_len=2048, count=8)
    train = heldout_windows(base.encode, load_bundled_text("train")[-400000:], seq_len=2048, count=4)

    def report(what, model):
        print(f"{what}: held-out ppl {perplexity(model, heldout, 'cpu'):.4f}, "
              f"train-text ppl {perplexity(model, train, 'cpu'):.4f}", flush=True)

    report("uncompressed", base.model)
    stats = calibrate(base, CalibrateConfig(tokens=65536, seq_len=2048), show_progress=False)
    for search in ("uniform", "greedy"):
        loaded = dataclasses.replace(base, model=copy.deepcopy(base.model))
        compress_model(loaded, stats, pattern, CompressConfig(rank_ratio=0.85, scope="all", rank_search=search),
                       show_progress=False)
        report(f"{search} ranks, scope all, 0.85", loaded.model)


if __name__ == "__main__":
    main()
