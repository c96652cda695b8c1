"""Tables, plots and one HTML page from a bench folder's stored records only (``ibau report DIR``).

For every suite run in the folder (``suites/<name>.json``): ``<suite>.md`` and ``<suite>.csv`` (one row
per cell, long format), plots, and ``report.html`` with all of them inline (readable offline). A cell
fails as the paper marks it (SPEC §4): ASR ≥ 20% or ACC drop > 10 points; it is shown with ✗.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..records import read_record
from . import paper

FAIL_MARK = " ✗"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.headers))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines + [""] + self.notes) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        notes = "".join(f"<p>{html.escape(n)}</p>" for n in self.notes)
        return f"<h3>{html.escape(self.title)}</h3><table><tr>{head}</tr>{body}</table>{notes}"


def load_run(out: Path) -> list[dict[str, Any]]:
    """Every suite manifest of ``out`` with its cells' records attached (None where not finished)."""
    manifests = sorted((out / "suites").glob("*.json"))
    if not manifests:
        raise ValueError(f"{out} holds no bench run (no suites/*.json); run `ibau bench --out {out}` first")
    runs = []
    for path in manifests:
        m = json.loads(path.read_text())
        for cell in m["cells"]:
            cell["record"] = _read(out / "records" / f"{cell['job']}.json")
            cell["train_record"] = _read(out / "records" / f"{cell['train']}.json")
        m["reference_record"] = _read(out / "records" / f"{m['reference']}.json") if m.get("reference") else None
        runs.append(m)
    return runs


def _read(path: Path) -> dict[str, Any] | None:
    return read_record(path) if path.exists() else None


def _pct(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f}±{100 * statistics.stdev(values):.2f}"


def _ok(cells: list[dict]) -> list[dict]:
    return [c["record"] for c in cells if c["record"] and c["record"]["status"] == "ok"]


def cell_text(cells: list[dict], key: str = "after") -> str:
    """``ACC / ASR`` (mean ± std over seeds) of a group of cells, ✗ if the defense failed."""
    if not cells:
        return "–"
    done = _ok(cells)
    if not done:
        return "error" if any(c["record"] for c in cells) else "pending"
    acc = [r[key]["acc"] for r in done]
    text = _pct(acc)
    if "asr" in done[0][key]:
        text += " / " + _pct([r[key]["asr"] for r in done])
        if key == "after" and any(r["failed"] for r in done):
            text += FAIL_MARK
    return text + ("" if len(done) == len(cells) else f" ({len(cells) - len(done)} missing)")


def _row_keys(cells: list[dict]) -> list[str]:
    """The settings that vary across a suite's cells besides method and seed: they make the row label."""
    keys = ["attack_label", "poison_ratio", "clean_size", "variant"]
    return [k for k in keys if len({c[k] for c in cells}) > 1] or ["attack_label"]


def _label(cell: dict, keys: list[str]) -> str:
    formats = {"poison_ratio": lambda v: f"{100 * v:g}% poison", "clean_size": lambda v: f"{v} clean"}
    return ", ".join(formats.get(k, str)(cell[k]) for k in keys)


def _groups(cells: list[dict], keys: list[str]) -> dict[str, dict[str, list[dict]]]:
    rows: dict[str, dict[str, list[dict]]] = {}
    for c in cells:
        rows.setdefault(_label(c, keys), {}).setdefault(c["method"], []).append(c)
    return rows


def acc_asr_table(run: dict) -> Table:
    suite, preset, cells = run["suite"], run["preset"], run["cells"]
    methods = suite["defenses"]
    keys = _row_keys(cells)
    cifar = preset["dataset"] in paper.CIFAR_LIKE
    table1 = cifar and suite.get("paper") == "table1"
    headers = [" / ".join(k.replace("_", " ") for k in keys), "no defense"] + methods
    if table1:
        headers += ["paper: no defense", "paper: I-BAU", "paper: best baseline"]
    elif cifar and suite.get("paper") in ("table4", "table5"):
        headers += ["paper: I-BAU"]
    elif cifar and suite.get("paper") == "appendix":
        headers += ["paper: no defense → I-BAU"]
    judge = "ibau" in methods and len(methods) > 1
    if judge:
        headers.append("I-BAU vs best baseline")
    table = Table(f"{suite['title']} — ACC / ASR % on held-out test images, preset {preset['name']}", headers)
    for label, by_method in _groups(cells, keys).items():
        any_cells = [c for cs in by_method.values() for c in cs]
        first = next((cs for cs in by_method.values() if _ok(cs)), any_cells)  # "before" is the same for all
        row = [label, cell_text(first, "before")]
        row += [cell_text(by_method.get(m, [])) for m in methods]
        if table1:
            t1: dict[str, Any] = paper.TABLE1.get(any_cells[0]["attack_label"], {})
            best = t1.get("best")
            row += [_pair(t1.get("none")), _pair(t1.get("ibau")),
                    f"{best[0]} {best[1]:.2f} / {best[2]:.2f}" if best else "–"]
        elif cifar and suite.get("paper") == "table4":
            row += [_pair(paper.TABLE4.get(any_cells[0]["poison_ratio"], {}).get("ibau"))]
        elif cifar and suite.get("paper") == "appendix":
            app = paper.APPENDIX.get(any_cells[0]["attack_label"])
            row += [f"{_pair(app[0])} → {_pair(app[1])}" if app else "–"]
        elif cifar and suite.get("paper") == "table5":
            frac = any_cells[0]["clean_size"] / preset["clean_size"]
            row += [_pair(paper.TABLE5.get(round(frac, 3)))]
        if judge:
            row.append(compare_with_best(by_method))
        table.rows.append(row)
    table.notes.append("✗: the defense failed (ASR ≥ 20% or ACC dropped more than 10 points), the paper's rule. "
                       "Cells with several seeds show mean±std.")
    if judge:
        table.notes.append("I-BAU vs best baseline (the paper's rule): the best baseline is the one with the lowest ASR "
                           "among those that keep ACC within 10 points; I-BAU is comparable or better if its ACC is "
                           "less than 1 point below and its ASR less than 4 points above that baseline's, or if its "
                           "ASR is at or below the chance rate (1/classes).")
    return table


def compare_with_best(by_method: dict[str, list[dict]]) -> str:
    """The paper's verdict for one row: is I-BAU comparable or better than the best baseline?"""
    mean = lambda recs, k: statistics.mean(r["after"][k] for r in recs)  # noqa: E731
    ibau = _ok(by_method.get("ibau", []))
    if not ibau or "asr" not in ibau[0]["after"]:
        return "–"
    if any(c["record"] is None for cells in by_method.values() for c in cells):
        return "pending"  # judge a row only once every defense in it has run
    acc, asr = mean(ibau, "acc"), mean(ibau, "asr")
    num_classes = ibau[0].get("num_classes", 10)
    candidates = []
    for method, cells in by_method.items():
        recs = _ok(cells)
        if method == "ibau" or not recs:
            continue
        if statistics.mean(r["before"]["acc"] - r["after"]["acc"] for r in recs) <= 0.10:
            candidates.append((mean(recs, "asr"), -mean(recs, "acc"), method))
    if not candidates:
        return "better (every baseline loses > 10 ACC points)"
    b_asr, neg_acc, name = min(candidates)
    b_acc = -neg_acc
    ok = (b_acc - acc < 0.01 and asr - b_asr < 0.04) or asr <= 1 / num_classes
    return f"{'comparable or better' if ok else '**worse**'} (best: {name} {100 * b_acc:.2f} / {100 * b_asr:.2f})"


def _pair(p) -> str:
    return f"{p[0]:.2f} / {p[1]:.2f}" if p else "–"


def per_trigger_table(run: dict) -> Table:
    suite, cells = run["suite"], run["cells"]
    methods = suite["defenses"]
    done = [c["record"] for c in cells if c["record"] and c["record"]["status"] == "ok"]
    triggers = sorted({k for r in done for k in r["before"] if k.startswith("asr:")})
    table = Table(f"{suite['title']} — ASR % per trigger, preset {run['preset']['name']}",
                  ["metric", "no defense"] + methods)
    by_method = {m: [c for c in cells if c["method"] == m] for m in methods}
    first = next(iter(done), None)
    for key in ["acc", "asr"] + triggers:
        name = {"acc": "clean ACC", "asr": "mean ASR"}.get(key, key.replace("asr:", "ASR "))
        row = [name, f"{100 * first['before'][key]:.2f}" if first and key in first["before"] else "–"]
        for m in methods:
            recs = _ok(by_method[m])
            row.append(_pct([r["after"][key] for r in recs]) if recs and key in recs[0]["after"] else
                       ("pending" if not any(c["record"] for c in by_method[m]) else "error" if not recs else "–"))
        table.rows.append(row)
    if run["preset"]["dataset"] in paper.CIFAR_LIKE:
        p = paper.TABLE3
        table.notes.append(f"Paper (Table 3, CIFAR-10): no defense {_pair(p['none'])}, I-BAU {_pair(p['ibau'])}, "
                           f"NAD {_pair(p['nad'])} (ACC / mean ASR).")
    return table


def effect_table(run: dict) -> Table:
    suite, cells = run["suite"], run["cells"]
    table = Table(f"{suite['title']} — preset {run['preset']['name']}",
                  ["method", "seconds to effect", "× I-BAU", "defense s", "final ACC / ASR %", "paper s (GPU)"])
    recs = {m: _ok([c for c in cells if c["method"] == m]) for m in suite["defenses"]}
    ref = [r["time_to_effect"] for r in recs.get("ibau", []) if r["time_to_effect"] is not None]
    ref_mean = statistics.mean(ref) if ref else None
    for m, rs in recs.items():
        if not rs:
            table.rows.append([m, "pending", "–", "–", "–", str(paper.TABLE6.get(m, "–"))])
            continue
        tte = [r["time_to_effect"] for r in rs if r["time_to_effect"] is not None]
        mean = statistics.mean(tte) if len(tte) == len(rs) else None
        table.rows.append([m, "never" if mean is None else f"{mean:.1f}",
                           f"{mean / ref_mean:.1f}" if mean is not None and ref_mean else "–",
                           f"{statistics.mean(r['defense_seconds'] for r in rs):.1f}",
                           cell_text([c for c in cells if c["method"] == m]), str(paper.TABLE6.get(m, "–"))])
    table.notes.append("Seconds to effect: defense time until held-out ASR < 20%, evaluation excluded; 'never' if "
                       "it was not reached. The paper's seconds were measured on a GPU.")
    return table


def table_for(run: dict) -> Table:
    return {"per_trigger": per_trigger_table, "time_to_effect": effect_table}.get(run["suite"]["metric"],
                                                                                 acc_asr_table)(run)


# --- CSV -------------------------------------------------------------------------------------------
CSV_FIELDS = ["suite", "attack_label", "poison_ratio", "clean_size", "variant", "method", "seed", "status",
              "before_acc", "before_asr", "after_acc", "after_asr", "after_ra", "der", "failed", "defense_seconds",
              "time_to_effect", "job"]


def write_csv(run: dict, path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for c in run["cells"]:
            r = c["record"] or {}
            before, after = r.get("before") or {}, r.get("after") or {}
            w.writerow({"suite": run["suite"]["name"], **{k: c[k] for k in ("attack_label", "poison_ratio",
                        "clean_size", "variant", "method", "seed")}, "status": r.get("status", "pending"),
                        "before_acc": before.get("acc"), "before_asr": before.get("asr"), "after_acc": after.get("acc"),
                        "after_asr": after.get("asr"), "after_ra": after.get("ra"), "der": r.get("der"),
                        "failed": r.get("failed"), "defense_seconds": r.get("defense_seconds"),
                        "time_to_effect": r.get("time_to_effect"), "job": c["job"]})
    return path


# --- plots -----------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(run: dict, path: Path) -> Path | None:
    """ACC (dashed) and ASR (solid) at every checkpoint of every defense, one panel per table row."""
    keys = _row_keys(run["cells"])
    groups = _groups(run["cells"], keys)
    if not any(_ok(cs) for g in groups.values() for cs in g.values()):
        return None
    plt = _plt()
    n = len(groups)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, (label, by_method) in zip(axes.flat, groups.items()):
        for i, (method, cells) in enumerate(by_method.items()):
            recs = _ok(cells)
            if not recs or "asr" not in recs[0]["before"]:
                continue
            r = recs[0]
            pts = [{"seconds": 0.0, **r["before"]}] + [h for h in r["history"] if "acc" in h]
            x = list(range(len(pts)))
            color = f"C{i % 10}"
            ax.plot(x, [100 * p["asr"] for p in pts], "-", color=color, label=method)
            ax.plot(x, [100 * p["acc"] for p in pts], "--", color=color)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("checkpoint")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(-2, 102)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].set_ylabel("ASR (solid) / ACC (dashed) %")
    # one legend for the figure, from whichever panels have curves yet (the first may still be pending)
    lines = {ln.get_label(): ln for ax in axes.flat for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    axes.flat[0].legend(list(lines.values()), list(lines), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_effect(run: dict, path: Path) -> Path | None:
    recs = {m: _ok([c for c in run["cells"] if c["method"] == m]) for m in run["suite"]["defenses"]}
    recs = {m: rs for m, rs in recs.items() if rs}
    if not recs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(recs)
    values = [statistics.mean(r["time_to_effect"] if r["time_to_effect"] is not None else r["defense_seconds"]
                              for r in recs[m]) for m in names]
    never = [any(r["time_to_effect"] is None for r in recs[m]) for m in names]
    ax.bar(names, values, color=["lightgrey" if n else "C0" for n in never])
    for i, n in enumerate(never):
        if n:
            ax.text(i, values[i], "never", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("seconds to effect (grey: whole run, never reached)")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_stability(run: dict, path: Path) -> Path | None:
    """Mean ± std over seeds of ACC and ASR per checkpoint, per method."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    drawn = False
    for i, method in enumerate(run["suite"]["defenses"]):
        recs = _ok([c for c in run["cells"] if c["method"] == method])
        if not recs:
            continue
        series = [[r["before"]] + [h for h in r["history"] if "acc" in h] for r in recs]
        n = min(len(s) for s in series)
        for ax, key in zip(axes, ("acc", "asr")):
            vals = [[100 * s[j][key] for s in series] for j in range(n)]
            mean = [statistics.mean(v) for v in vals]
            std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals]
            ax.plot(range(n), mean, color=f"C{i}", label=f"{method} ({len(recs)} seeds)")
            ax.fill_between(range(n), [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=f"C{i}", alpha=0.25)
            ax.set_title(key.upper() + " %")
            ax.set_xlabel("checkpoint (round / epoch)")
            ax.xaxis.get_major_locator().set_params(integer=True)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_variants(run: dict, path: Path) -> Path | None:
    """Final ACC and ASR against the suite's variants (e.g. the norm bound Cδ)."""
    variants = list(run["suite"]["variants"])
    if len(variants) < 2:
        return None
    rows = [(v, _ok([c for c in run["cells"] if c["variant"] == v])) for v in variants]
    rows = [(v, rs) for v, rs in rows if rs]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    x = range(len(rows))
    ax.plot(x, [100 * statistics.mean(r["after"]["acc"] for r in rs) for _, rs in rows], "o-", label="ACC")
    ax.plot(x, [100 * statistics.mean(r["after"]["asr"] for r in rs) for _, rs in rows], "s-", label="ASR")
    ax.set_xticks(list(x), [v for v, _ in rows])
    ax.set_ylabel("%")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def delta_pictures(run: dict, out: Path) -> dict[Path, str]:
    """The recovered-δ-beside-true-trigger pictures of I-BAU and Neural Cleanse (seed 0), with captions."""
    keys = _row_keys(run["cells"])
    found: dict[Path, str] = {}
    for c in run["cells"]:
        r = c["record"]
        if r and r.get("delta_png") and c["method"] in ("ibau", "neural_cleanse") and c["seed"] == 0:
            p = out / r["delta_png"]
            if p.exists():
                found.setdefault(p, f"{_label(c, keys)} — {c['method']}: recovered vs true trigger")
    return found


# --- the whole report ------------------------------------------------------------------------------
def build_report(out: str | Path, dest: str | Path | None = None) -> dict[str, Path]:
    """Write every suite's table (md + csv), plots and ``report.html`` into ``dest`` (default out/report)."""
    out = Path(out)
    dest = Path(dest) if dest is not None else out / "report"
    dest.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    sections = []
    for run in load_run(out):
        name = run["suite"]["name"]
        table = table_for(run)
        md = dest / f"{name}.md"
        captions: dict[Path, str] = {}
        pics = [p for p in (plot_curves(run, dest / f"{name}_curves.png"),
                            plot_effect(run, dest / f"{name}_effect.png") if run["suite"]["metric"] == "time_to_effect" else None,
                            plot_stability(run, dest / f"{name}_stability.png") if run["suite"]["seeds"] > 1 else None,
                            plot_variants(run, dest / f"{name}_variants.png")) if p is not None]
        for p, caption in delta_pictures(run, out).items():
            copy = dest / "deltas" / p.name
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes(p.read_bytes())
            pics.append(copy)
            captions[copy] = caption
        text = table.markdown() + _status_line(run) + "\n" + "".join(
            f"\n![{captions.get(p, p.stem)}]({p.relative_to(dest).as_posix()})\n" for p in pics)
        md.write_text(f"# {run['suite']['title']}\n\n" + text)
        written[f"{name}.md"] = md
        written[f"{name}.csv"] = write_csv(run, dest / f"{name}.csv")
        for p in pics:
            written[p.relative_to(dest).as_posix()] = p
        images = "".join(_img_tag(p, captions.get(p, p.stem)) for p in pics)
        sections.append(table.html() + f"<p>{html.escape(_status_line(run))}</p>" + images)
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>ibau bench report</title><style>"
            "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child{text-align:left}"
            "img{max-width:100%}</style></head><body><h1>ibau bench report</h1>"
            f"<p>From the records in {html.escape(str(out))}.</p>" + "".join(sections) + "</body></html>")
    (dest / "report.html").write_text(page)
    written["report.html"] = dest / "report.html"
    return written


def _status_line(run: dict) -> str:
    recs = [c["record"] for c in run["cells"]]
    done = sum(1 for r in recs if r and r["status"] == "ok")
    errors = sum(1 for r in recs if r and r["status"] != "ok")
    env: dict[str, Any] = next((r["environment"] for r in recs if r), {})
    return (f"{done} of {len(recs)} cells finished, {errors} errors; preset {run['preset']['name']} "
            f"({run['preset']['dataset']}, {run['preset']['arch']}, {run['preset']['epochs']} epochs, "
            f"clean set {run['preset']['clean_size']}); ibau {env.get('ibau', '?')}, torch {env.get('torch', '?')}.")


def _img_tag(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<figure><img src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}</figcaption></figure>"
