"""The paper's numbers (SPEC §5 and the paper's tables), as (clean ACC %, ASR %): the one place they are written.

The bench report's "paper" columns and pages (:mod:`ibau.bench.aggregate`, :mod:`ibau.bench.pages`),
``benchmarks/cifar_results.py`` (the issue-3 table) and ``benchmarks/time_to_effect.py`` (Table 6) all read
them from here. A suite's ``paper`` field names its table: a key of :data:`PAPER`; :data:`BY_DATASET` says
which of the paper's tables holds that suite's numbers on each dataset (one-trigger on GTSRB is Table 2).

Every column of Tables 1-5 is transcribed (``TABLE*_COLUMNS``: row -> {defense or ``"none"``: (ACC, ASR)});
:data:`NOT_DETECTED` is the paper's ×, a trigger-synthesis defense that found no trigger. The older
summaries (``TABLE1``, ``TABLE3``, ``TABLE4``, ``TABLE5``) are derived from them.
"""
from __future__ import annotations

from typing import Any

Pair = tuple[float, float]
#: The paper's ×: the defense detected no trigger (so it left the model unchanged).
NOT_DETECTED = "×"
PaperCell = Pair | str

#: Table 1, CIFAR-10, one trigger: attack label (a row of the ``one_trigger`` suite) -> every column.
TABLE1_COLUMNS: dict[str, dict[str, PaperCell]] = {
    "BadNets": {"none": (84.94, 98.28), "neural_cleanse": (83.42, 8.76), "deepinspect": (82.12, 48.50),
                "tabor": (83.78, 8.12), "fine_pruning": (82.22, 96.66), "nad": (78.72, 11.66), "dp": (11.08, 21.77),
                "ibau": (83.35, 12.30)},
    "Blend": {"none": (84.82, 99.78), "neural_cleanse": (83.08, 33.96), "deepinspect": (81.84, 52.62),
              "tabor": (83.42, 21.26), "fine_pruning": (81.24, 89.78), "nad": (77.48, 13.02), "dp": (11.68, 13.72),
              "ibau": (82.30, 12.96)},
    "ℓ0 inv": {"none": (85.36, 100.0), "neural_cleanse": (83.02, 8.78), "deepinspect": (83.40, 29.1),
               "tabor": (82.27, 8.16), "fine_pruning": (82.18, 100.0), "nad": (65.08, 7.22), "dp": (12.48, 25.22),
               "ibau": (84.08, 9.54)},
    "ℓ2 inv": {"none": (85.26, 100.0), "neural_cleanse": (80.68, 8.08), "deepinspect": (82.46, 7.82),
               "tabor": (80.30, 11.64), "fine_pruning": (81.50, 98.94), "nad": (43.18, 12.56), "dp": (11.58, 20.57),
               "ibau": (83.48, 7.48)},
    "Smooth": {"none": (85.34, 99.24), "neural_cleanse": (83.72, 46.88), "deepinspect": (83.32, 61.82),
               "tabor": (84.14, 45.94), "fine_pruning": (82.66, 9.44), "nad": (77.22, 54.38), "dp": (10.70, 28.14),
               "ibau": (83.46, 18.30)},
    "Trojan SQ": {"none": (84.76, 99.66), "neural_cleanse": (81.30, 8.02), "deepinspect": (83.14, 6.94),
                  "tabor": (81.38, 7.06), "fine_pruning": (82.34, 99.50), "nad": (51.86, 7.84), "dp": (10.70, 18.26),
                  "ibau": (83.18, 9.82)},
    "Trojan WM": {"none": (84.92, 99.96), "neural_cleanse": (81.76, 6.02), "deepinspect": (82.88, 7.24),
                  "tabor": (82.60, 49.26), "fine_pruning": (81.64, 99.88), "nad": (56.84, 0.82), "dp": (15.21, 32.89),
                  "ibau": (83.58, 3.42)},
    "all-to-all": {"none": (86.38, 85.02), "neural_cleanse": (85.38, 82.88), "deepinspect": (84.74, 56.38),
                   "tabor": NOT_DETECTED, "fine_pruning": (84.48, 66.46), "nad": (75.70, 2.34), "dp": (14.80, 10.93),
                   "ibau": (80.34, 10.46)},
}
#: The best baseline the paper marks in Table 1.
_TABLE1_BEST = {"BadNets": "tabor", "Smooth": "fine_pruning", "Trojan WM": "neural_cleanse", "all-to-all": "nad"}

#: Table 2, GTSRB, one trigger (I-BAU after 100 rounds; the paper shows TABOR for the trigger-synthesis family).
TABLE2_COLUMNS: dict[str, dict[str, PaperCell]] = {
    "BadNets": {"none": (97.69, 99.18), "tabor": (98.99, 4.16), "fine_pruning": (99.34, 60.19), "nad": (15.19, 9.08),
                "dp": (6.46, 100.0), "ibau": (99.38, 3.32)},
    "Blend": {"none": (97.44, 99.91), "tabor": (99.09, 33.32), "fine_pruning": (99.52, 69.66), "nad": (47.71, 18.48),
              "dp": (5.70, 100.0), "ibau": (98.89, 5.01)},
    "ℓ0 inv": {"none": (97.72, 100.0), "tabor": (98.80, 0.47), "fine_pruning": (99.41, 74.86), "nad": (17.41, 1.20),
               "dp": (7.40, 88.23), "ibau": (99.24, 0.42)},
    "ℓ2 inv": {"none": (97.57, 99.91), "tabor": (98.51, 0.41), "fine_pruning": (99.53, 40.46), "nad": (15.50, 1.16),
               "dp": (5.46, 100.0), "ibau": (97.75, 0.45)},
    "Smooth": {"none": (97.87, 99.89), "tabor": (98.62, 0.47), "fine_pruning": (99.55, 47.75), "nad": (10.06, 0.70),
               "dp": (5.94, 95.58), "ibau": (98.96, 0.22)},
    "Trojan SQ": {"none": (98.12, 99.98), "tabor": (99.06, 5.70), "fine_pruning": (99.48, 75.96), "nad": (23.31, 14.68),
                  "dp": (5.51, 100.0), "ibau": (99.04, 5.11)},
    "Trojan WM": {"none": (97.84, 100.0), "tabor": (98.63, 5.40), "fine_pruning": (99.45, 69.82), "nad": (11.16, 13.62),
                  "dp": (5.70, 100.0), "ibau": (99.44, 2.55)},
    "all-to-all": {"none": (97.10, 95.42), "tabor": (98.63, 47.07), "fine_pruning": (99.45, 67.34),
                   "nad": (25.53, 0.42), "dp": (5.87, 5.70), "ibau": (99.13, 0.04)},
}
#: Table 2's best baseline: the one with the lowest ASR among those that did not fail by the paper's rule
#: (ASR < 20%, ACC drop ≤ 10 points); none on Blend and all-to-all, where every baseline failed.
_TABLE2_BEST = {label: "tabor" for label in ("BadNets", "ℓ0 inv", "ℓ2 inv", "Smooth", "Trojan SQ", "Trojan WM")}


def _summary(columns: dict[str, PaperCell], best: str | None) -> dict[str, Any]:
    """A row as ``{"none", "ibau", "best": (baseline, ACC, ASR)}`` (no "best" where the paper has none)."""
    row: dict[str, Any] = {"none": columns["none"], "ibau": columns["ibau"]}
    if best is not None:
        cell = columns[best]
        assert isinstance(cell, tuple), f"the best baseline {best} must have numbers"
        row["best"] = (best, *cell)
    return row


#: Table 1: attack label -> {"none": before, "ibau": after I-BAU, "best": (baseline, ACC, ASR)}.
TABLE1: dict[str, dict[str, Any]] = {k: _summary(v, _TABLE1_BEST.get(k)) for k, v in TABLE1_COLUMNS.items()}
#: Table 2 (GTSRB), the same shape as :data:`TABLE1`.
TABLE2: dict[str, dict[str, Any]] = {k: _summary(v, _TABLE2_BEST.get(k)) for k, v in TABLE2_COLUMNS.items()}

#: Table 3, 7 triggers to 7 targets: dataset -> metric (``"acc"``, mean ``"asr"``, ``"asr:<trigger>"`` as
#: records name them) -> {defense or "none": %}. On CIFAR-10 I-BAU is shown at NAD's ACC.
_TABLE3_ROWS = ["acc", "asr", "asr:trojan_wm", "asr:trojan_sq", "asr:badnets", "asr:smooth", "asr:blend", "asr:l0_inv",
                "asr:l2_inv"]
_TABLE3_CIFAR: dict[str, list[float | str]] = {
    "none": [85.96, 98.37, 99.92, 99.42, 94.5, 97.08, 98.12, 100.0, 99.54],
    "neural_cleanse": [NOT_DETECTED] * 9,
    "deepinspect": [83.74, 30.37, 9.68, 13.78, 72.6, 30.58, 48.84, 23.78, 13.34],
    "tabor": [84.04, 40.68, 28.02, 19.56, 9.16, 89.70, 50.84, 80.96, 6.52],
    "fine_pruning": [83.42, 73.18, 99.7, 99.36, 9.56, 9.32, 96.14, 99.88, 98.32],
    "nad": [77.38, 10.93, 18.38, 11.94, 13.32, 8.38, 8.46, 9.88, 6.16],
    "dp": [11.18, 12.83, 13.40, 2.58, 6.94, 6.28, 27.98, 18.02, 14.62],
    "ibau": [77.44, 12.96, 11.48, 10.80, 18.64, 15.22, 18.24, 9.46, 6.92],
}
_TABLE3_GTSRB: dict[str, list[float | str]] = {
    "none": [97.18, 99.37, 99.49, 99.59, 98.19, 99.89, 99.15, 100.0, 99.33],
    "neural_cleanse": [68.72, 10.87, 4.00, 2.79, 6.61, 8.56, 46.89, 1.31, 5.94],
    "deepinspect": [99.33, 7.21, 3.60, 6.26, 0.47, 6.92, 22.66, 5.15, 5.43],
    "tabor": [76.38, 11.89, 3.86, 2.33, 10.29, 15.28, 45.91, 1.06, 4.52],
    "fine_pruning": [99.36, 9.38, 1.56, 0.12, 14.09, 10.05, 29.69, 0.59, 9.60],
    "nad": [10.83, 11.59, 6.61, 4.14, 4.79, 2.83, 41.54, 17.70, 3.52],
    "dp": [6.17, 42.86, 100.0, 0.0, 0.0, 100.0, 100.0, 0.0, 0.0],
    "ibau": [99.09, 4.18, 1.78, 5.68, 0.72, 5.65, 3.76, 5.25, 6.46],
}
TABLE3_COLUMNS: dict[str, dict[str, dict[str, float | str]]] = {
    dataset: {key: {m: values[i] for m, values in cols.items()} for i, key in enumerate(_TABLE3_ROWS)}
    for dataset, cols in (("cifar10", _TABLE3_CIFAR), ("gtsrb", _TABLE3_GTSRB))}
#: Table 3 as (ACC, mean ASR): CIFAR-10 (NAD is the only working baseline there) and GTSRB.
TABLE3 = {m: (_TABLE3_CIFAR[m][0], _TABLE3_CIFAR[m][1]) for m in ("none", "ibau", "nad")}
TABLE3_GTSRB = {m: (_TABLE3_GTSRB[m][0], _TABLE3_GTSRB[m][1]) for m in ("none", "ibau", "nad")}

#: Table 4, CIFAR-10, Trojan WM: poison ratio -> every column (20% is Table 1's Trojan WM row).
TABLE4_COLUMNS: dict[float, dict[str, PaperCell]] = {
    0.2: TABLE1_COLUMNS["Trojan WM"],
    0.05: {"none": (86.58, 99.88), "neural_cleanse": (83.14, 5.58), "deepinspect": (78.63, 10.40), "tabor": NOT_DETECTED,
           "fine_pruning": (83.16, 99.72), "nad": (79.74, 6.34), "dp": (36.80, 96.84), "ibau": (84.76, 9.78)},
    0.005: {"none": (86.42, 98.58), "neural_cleanse": (84.16, 12.9), "deepinspect": (83.56, 20.22),
            "tabor": NOT_DETECTED, "fine_pruning": (84.72, 93.78), "nad": (80.92, 28.6), "dp": (39.92, 61.27),
            "ibau": (83.22, 13.08)},
}
#: Table 4 as {"none", "ibau"} per poison ratio.
TABLE4 = {r: {"none": cols["none"], "ibau": cols["ibau"]} for r, cols in TABLE4_COLUMNS.items()}

#: Table 5, CIFAR-10, Trojan WM: clean set as a fraction of 5,000 -> every column (DP does not use the clean set;
#: the full set is Table 1's Trojan WM row).
_WM = TABLE1_COLUMNS["Trojan WM"]
TABLE5_COLUMNS: dict[float, dict[str, PaperCell]] = {
    1.0: {k: v for k, v in _WM.items() if k != "dp"},
    0.5: {"none": _WM["none"], "neural_cleanse": (78.39, 6.53), "deepinspect": (80.63, 10.07), "tabor": (80.23, 33.40),
          "fine_pruning": (81.36, 99.58), "nad": (46.8, 7.12), "ibau": (82.21, 6.96)},
    0.1: {"none": _WM["none"], "neural_cleanse": (78.24, 25.66), "deepinspect": (80.17, 1.14), "tabor": (77.03, 21.92),
          "fine_pruning": (78.1, 85.68), "nad": (38.5, 9.08), "ibau": (80.07, 5.20)},
    0.02: {"none": _WM["none"], "neural_cleanse": (84.101, 99.92), "deepinspect": (69.51, 1.12),
           "tabor": (83.495, 99.687), "fine_pruning": (73.00, 97.80), "nad": (36.14, 5.76), "ibau": (76.90, 4.00)},
}
#: Table 5 as I-BAU's (ACC, ASR) per clean set fraction.
TABLE5 = {f: cols["ibau"] for f, cols in TABLE5_COLUMNS.items()}

#: Table 6: seconds to effect on a GPU (one trigger, one target), CIFAR-10 and GTSRB.
TABLE6 = {"neural_cleanse": 384.9, "deepinspect": 394.4, "tabor": 1123.3, "fine_pruning": 45.3, "nad": 79.9,
          "ibau": 6.8}
TABLE6_GTSRB = {"neural_cleanse": 1865.0, "deepinspect": 472.2, "tabor": 3529.7, "fine_pruning": 83.8, "nad": 79.1,
                "ibau": 7.8}

#: Appendix, non-additive attacks: label -> (no defense, I-BAU). WaNet's row is on PreActResNet18.
APPENDIX = {"SR": ((83.82, 100.0), (82.12, 0.0)), "WaNet": ((94.36, 99.62), (92.86, 10.80)),
            "IAB": ((87.28, 99.20), (86.46, 9.58)), "HT": ((73.41, 89.00), (84.58, 11.10))}

#: The figures have no numbers to transcribe; what the paper says they show.
FIGURES = {
    "fig1": "CIFAR-10, BadNets: I-BAU's ASR falls within one round and more smoothly than adversarial training with "
            "off-the-shelf universal perturbations (UAP-AT), whose ASR is erratic across runs; I-BAU's ACC is "
            "slightly higher.",
    "fig2": "GTSRB, Trojan WM (trigger ℓ2 norm 8.739), mean of 5 runs: bounds Cδ ≥ the trigger's norm give a low "
            "ASR, and a large bound does not significantly lower the clean ACC.",
}
#: Trojan WM's trigger norm in the paper (Fig. 2), the fallback when a run did not record its own.
TROJAN_WM_L2 = 8.739

#: A suite's ``paper`` field -> the table it reproduces.
PAPER: dict[str, Any] = {"table1": TABLE1, "table2": TABLE2, "table3": TABLE3, "table4": TABLE4, "table5": TABLE5,
                         "table6": TABLE6, "appendix": APPENDIX, "fig1": FIGURES["fig1"], "fig2": FIGURES["fig2"]}

#: (a suite's ``paper`` key, the run's dataset) -> the paper table with that dataset's numbers.
BY_DATASET: dict[tuple[str, str], str] = {
    ("table1", "cifar10"): "table1", ("table1", "gtsrb"): "table2", ("table3", "cifar10"): "table3",
    ("table3", "gtsrb"): "table3", ("table4", "cifar10"): "table4", ("table5", "cifar10"): "table5",
    ("table6", "cifar10"): "table6", ("table6", "gtsrb"): "table6", ("appendix", "cifar10"): "appendix",
    ("fig1", "cifar10"): "fig1", ("fig2", "gtsrb"): "fig2",
}

#: Datasets whose runs can stand beside the paper's CIFAR-10 numbers (10 classes) or its GTSRB ones (43).
CIFAR_LIKE = {"cifar10", "npz"}
GTSRB_LIKE = {"gtsrb"}
#: The paper's datasets -> their class count.
CLASSES = {"cifar10": 10, "gtsrb": 43}


def seconds(dataset: str) -> dict[str, float]:
    """Table 6's seconds to effect on ``dataset`` ("cifar10" or "gtsrb"; {} for another)."""
    return {"cifar10": TABLE6, "gtsrb": TABLE6_GTSRB}.get(dataset, {})
