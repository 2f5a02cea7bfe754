"""`sedpa-s`: DuoAttention's head pattern over a compressed artifact (streaming heads low-rank).

The attention is the dual path of `duo`; what differs is the weights: the model must be an
artifact whose streaming heads' q/k/v/o are truncated-SVD factors (`sedpa compress`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sedpa_compress.runtime.modes.duo import DuoAttention


@dataclass
class SedpaS(DuoAttention):
    name: str = "sedpa-s"
