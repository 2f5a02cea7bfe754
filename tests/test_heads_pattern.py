"""Turning gates into a mask: the ratio keeps the largest gates; ties are broken at random (seeded), not by position."""

from __future__ import annotations

from sedpa_compress.heads.pattern import HeadPattern, binarize, head_order
from sedpa_compress.heads.probe import ranked_heads


def saturated_gates(layers: int = 32, heads: int = 8, ones: int = 80) -> list[list[float]]:
    """As the published Llama-3-8B pattern: `ones` gates at exactly 1.0 spread over the layers, the rest below."""
    gates = [[0.1 + 0.8 * ((li * heads + h) % 97) / 97 for h in range(heads)] for li in range(layers)]
    for i in range(ones):
        k = (i * 37) % (layers * heads)
        gates[k // heads][k % heads] = 1.0
    return gates


def test_larger_gates_always_win():
    gates = [[0.9, 0.1], [0.2, 0.8], [0.5, 0.4]]
    assert binarize(gates, retrieval_ratio=0.5) == [[1, 0], [0, 1], [1, 0]]
    assert binarize(gates, threshold=0.45) == [[1, 0], [0, 1], [1, 0]]


def test_ties_at_a_low_ratio_are_not_won_by_the_lowest_layers():
    gates = saturated_gates()
    mask = binarize(gates, retrieval_ratio=0.1)  # 26 of 256 heads, all chosen among the 80 gates at 1.0
    chosen = [li for li, row in enumerate(mask) for m in row if m]
    assert len(chosen) == 26
    assert all(gates[li][h] == 1.0 for li, row in enumerate(mask) for h, m in enumerate(row) if m)
    tied_layers = sorted({li for li, row in enumerate(gates) for g in row if g == 1.0})
    # by position the first 26 tied heads would all sit in layers 0..9; a random tie-break spreads them out
    assert max(chosen) > tied_layers[len(tied_layers) // 2]


def test_tie_break_is_seeded_and_reproducible():
    gates = saturated_gates()
    assert binarize(gates, retrieval_ratio=0.1) == binarize(gates, retrieval_ratio=0.1)
    assert binarize(gates, retrieval_ratio=0.1, seed=1) != binarize(gates, retrieval_ratio=0.1, seed=0)
    p = HeadPattern.from_gates(gates, sink=64, recent=256, retrieval_ratio=0.1)
    assert p.with_ratio(retrieval_ratio=0.1).mask == p.mask


def test_the_probe_ranks_heads_in_the_mask_order():
    gates = saturated_gates(layers=8, heads=2, ones=6)
    p = HeadPattern.from_gates(gates, sink=4, recent=16, retrieval_ratio=0.25)
    top = set(ranked_heads(p)[:4])
    assert top == {(li, h) for li, row in enumerate(p.mask) for h, m in enumerate(row) if m}
    assert ranked_heads(p) == head_order(gates)
