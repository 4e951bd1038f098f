#!/usr/bin/env python3
"""Plot geops-bench-geo per-round CSVs: round time and WAN bytes per (label, mode).

usage: plot_geo.py OUT.png CSV [CSV...]
"""
import csv
import math
import statistics
import sys

try:
    import matplotlib
except ImportError:  # a pyenv/venv python3 may shadow the system one that has it
    print("plot_geo: matplotlib missing (apt-get install python3-matplotlib)", file=sys.stderr)
    sys.exit(2)
matplotlib.use("Agg")  # headless: no display on bench hosts
import matplotlib.pyplot as plt  # noqa: E402

NEED = ("label", "mode", "model", "parties", "workers", "timed", "seconds", "wan_bytes",
        "lower_bound_s")
MODES = ("hier", "flat")  # fixed order so colours and bar positions match across plots


def die(msg):
    print(f"plot_geo: {msg}", file=sys.stderr)
    sys.exit(2)


def p99(xs):
    # Linear interpolation between order statistics; with few rounds this is ~max.
    s = sorted(xs)
    k = 0.99 * (len(s) - 1)
    lo = math.floor(k)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (k - lo)


def load(paths):
    groups = {}  # (label, mode) -> {"t": [], "wan": [], "lb": []}; dicts keep first-seen order
    models, shapes = {}, {}
    for path in paths:
        try:
            with open(path, newline="") as f:
                rows = csv.DictReader(f)
                if rows.fieldnames is None:
                    die(f"{path}: empty file (no header)")
                missing = [c for c in NEED if c not in rows.fieldnames]
                if missing:
                    die(f"{path}: missing column(s) {', '.join(missing)}")
                for row in rows:
                    # Skip repeated headers from files concatenated by hand.
                    if row["label"] == "label":
                        continue
                    try:
                        if int(row["timed"]) != 1:
                            continue  # warm-up round
                        t, wan = float(row["seconds"]), float(row["wan_bytes"])
                        lb = float(row["lower_bound_s"])  # "nan" / "-nan" parse to NaN
                    except (TypeError, ValueError):
                        die(f"{path}:{rows.line_num}: malformed row")
                    # Parse before grouping so a bad row never leaves an empty group.
                    g = groups.setdefault((row["label"] or "(none)", row["mode"]),
                                          {"t": [], "wan": [], "lb": []})
                    g["t"].append(t)
                    g["wan"].append(wan)
                    if not math.isnan(lb):
                        g["lb"].append(lb)
                    models[row["model"]] = None
                    shapes[f"{row['parties']}x{row['workers']}"] = None
        except OSError as e:
            die(f"{path}: {e.strerror}")
    if not groups:
        die(f"{', '.join(paths)}: no timed rows")
    return groups, list(models), list(shapes)


def main(argv):
    if len(argv) < 3:
        die("usage: plot_geo.py OUT.png CSV [CSV...]")
    out, paths = argv[1], argv[2:]
    groups, models, shapes = load(paths)
    labels = list(dict.fromkeys(label for label, _ in groups))
    modes = [m for m in MODES if any(k[1] == m for k in groups)]
    modes += [m for m in dict.fromkeys(k[1] for k in groups) if m not in modes]

    stats = {}
    for (label, mode), g in groups.items():
        st = {"n": len(g["t"]), "p50": statistics.median(g["t"]), "p99": p99(g["t"]),
              "mb": statistics.median(g["wan"]) / 1e6,
              "lb": statistics.median(g["lb"]) if g["lb"] else math.nan}
        stats[(label, mode)] = st
        print(f"label={label} mode={mode} rounds={st['n']} round_p50_s={st['p50']:.6f} "
              f"wan_mb_per_round={st['mb']:.3f} lower_bound_s={st['lb']:.6f}")

    fig, (ax_t, ax_w) = plt.subplots(1, 2, figsize=(max(8, 2.5 * len(labels) + 4), 4.5))
    width = 0.8 / len(modes)
    bound_drawn = False
    for i, mode in enumerate(modes):
        xs = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(labels))]
        present = [(x, stats[(lab, mode)]) for x, lab in zip(xs, labels) if (lab, mode) in stats]
        if not present:
            continue
        x, st = zip(*present)
        p50 = [s["p50"] for s in st]
        # One-sided bar from p50 up to p99: the tail is what WAN stragglers inflate.
        err = [[0] * len(st), [s["p99"] - s["p50"] for s in st]]
        ax_t.bar(x, p50, width, yerr=err, capsize=3, label=f"{mode} (p50, bar to p99)")
        ax_w.bar(x, [s["mb"] for s in st], width, label=mode)
        for xi, s in zip(x, st):
            if not math.isnan(s["lb"]):
                ax_t.hlines(s["lb"], xi - width / 2, xi + width / 2, colors="black",
                            linestyles="--", label=None if bound_drawn else "lower bound")
                bound_drawn = True
    for ax, ylabel in ((ax_t, "round time (s)"), (ax_w, "WAN MB per round (p50)")):
        ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 3 else 0)
        ax.set_xlabel("link setting")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"{', '.join(models)}  ({' / '.join(shapes)} parties x workers)")
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=120)
    except OSError as e:
        die(f"{out}: {e.strerror}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv)
