"""The paper's numbers (SPEC §5), CIFAR-10, as (clean ACC %, ASR %): the one place they are written.

The bench report's "paper" columns (:mod:`ibau.bench.aggregate`), ``benchmarks/cifar_results.py`` (the
issue-3 table) and ``benchmarks/time_to_effect.py`` (Table 6) all read them from here. A suite's ``paper``
field names its table: a key of :data:`PAPER`.
"""
from __future__ import annotations

from typing import Any

#: Table 1: attack label (a row of the ``one_trigger`` suite) -> {"none": before, "ibau": after I-BAU,
#: "best": (baseline, ACC, ASR)}.
TABLE1: dict[str, dict[str, Any]] = {
    "BadNets": {"none": (84.94, 98.28), "ibau": (83.35, 12.30), "best": ("tabor", 83.78, 8.12)},
    "Blend": {"none": (84.82, 99.78), "ibau": (82.30, 12.96)},
    "ℓ0 inv": {"none": (85.36, 100.0), "ibau": (84.08, 9.54)},
    "ℓ2 inv": {"none": (85.26, 100.0), "ibau": (83.48, 7.48)},
    "Smooth": {"none": (85.34, 99.24), "ibau": (83.46, 18.30), "best": ("fine_pruning", 82.66, 9.44)},
    "Trojan SQ": {"none": (84.76, 99.66), "ibau": (83.18, 9.82)},
    "Trojan WM": {"none": (84.92, 99.96), "ibau": (83.58, 3.42), "best": ("neural_cleanse", 81.76, 6.02)},
    "all-to-all": {"none": (86.38, 85.02), "ibau": (80.34, 10.46), "best": ("nad", 75.70, 2.34)},
}
#: Table 3 (7 triggers, 7 targets): mean ASR.
TABLE3 = {"none": (85.96, 98.37), "ibau": (77.44, 12.96), "nad": (77.38, 10.93)}
#: Table 4 (Trojan WM), poison ratio -> {"none", "ibau"}; Table 5 (Trojan WM), clean size fraction -> I-BAU.
TABLE4 = {0.05: {"none": (86.58, 99.88), "ibau": (84.76, 9.78)}, 0.005: {"none": (86.42, 98.58), "ibau": (83.22, 13.08)},
          0.2: {"none": (84.92, 99.96), "ibau": (83.58, 3.42)}}
TABLE5 = {1.0: (83.58, 3.42), 0.5: (82.21, 6.96), 0.1: (80.07, 5.20), 0.02: (76.90, 4.00)}
#: Table 6: seconds to effect on a GPU.
TABLE6 = {"neural_cleanse": 384.9, "deepinspect": 394.4, "tabor": 1123.3, "fine_pruning": 45.3, "nad": 79.9,
          "ibau": 6.8}

#: Appendix, non-additive attacks: label -> (no defense, I-BAU). WaNet's row is on PreActResNet18.
APPENDIX = {"SR": ((83.82, 100.0), (82.12, 0.0)), "WaNet": ((94.36, 99.62), (92.86, 10.80)),
            "IAB": ((87.28, 99.20), (86.46, 9.58)), "HT": ((73.41, 89.00), (84.58, 11.10))}

#: A suite's ``paper`` field -> the table it reproduces.
PAPER: dict[str, Any] = {"table1": TABLE1, "table3": TABLE3, "table4": TABLE4, "table5": TABLE5, "table6": TABLE6,
                         "appendix": APPENDIX}

#: Datasets whose runs can stand beside the paper's CIFAR-10 numbers.
CIFAR_LIKE = {"cifar10", "npz"}
