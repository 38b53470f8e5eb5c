#!/usr/bin/env python3
"""Draws a deploy/compare.sh sitting as SVG pictures, with gnuplot.

usage: plot_sitting.py RESULTS OUTDIR

RESULTS is a compare.sh results folder ({workload}-{target}-{run}.json, one per run of
a-chat bench). OUTDIR gets, for the targets the sitting measured (a-chat, its baseline,
Redis), each figure the median of the runs:

  throughput.svg   deliveries/s, direct and fan-out to 10, side by side
  latency.svg      the latency percentiles of the 20k msgs/s run, as curves
  memory.svg       RSS per idle logged-in connection
  storm.svg        the reconnect storm: time until all logged in, and connect-to-login p99

Exit status 0 when every picture was drawn, 1 otherwise (gnuplot missing, no results).
"""

import glob
import json
import os
import shutil
import statistics
import subprocess
import sys

TARGETS = [("achat", "a-chat"), ("baseline", "a-chat baseline"), ("redis", "Redis")]
COLOURS = {"achat": "#1f77b4", "baseline": "#9ecae1", "redis": "#d62728"}


def runs(results, workload, target):
    """The JSON reports of every run of `workload` against `target`."""
    out = []
    for path in sorted(glob.glob(os.path.join(results, f"{workload}-{target}-*.json"))):
        try:
            with open(path) as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            pass
    return out


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def present(results):
    """The targets this sitting measured, with their labels."""
    return [(t, label) for t, label in TARGETS if runs(results, "direct", t)]


def gnuplot(script, out):
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    print(f"plot_sitting: wrote {out}")


def header(out, title, ylabel):
    return f"""set terminal svg size 720,420 dynamic enhanced font 'sans,12' background '#ffffff'
set output '{out}'
set title '{title}'
set ylabel '{ylabel}'
set grid ytics
set key top right
"""


def bars(out, title, ylabel, groups, targets, values, fmt="%.0f"):
    """A grouped bar chart: one group per entry of `groups`, one bar per target."""
    data = out + ".dat"
    with open(data, "w") as f:
        for g in groups:
            row = [values.get((g, t)) for t, _ in targets]
            f.write('"' + g + '" ' + " ".join("NaN" if v is None else f"{v}" for v in row) + "\n")
    plots = ", ".join(
        f"'{data}' using {i + 2}:xtic(1) title '{label}' lc rgb '{COLOURS[t]}'"
        for i, (t, label) in enumerate(targets)
    )
    script = header(out, title, ylabel) + f"""set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set yrange [0:*]
set format y '{fmt}'
plot {plots}
"""
    gnuplot(script, out)
    os.remove(data)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    results, outdir = sys.argv[1:]
    if not shutil.which("gnuplot"):
        print("plot_sitting: gnuplot is not installed (apt-get install gnuplot-nox): no pictures", file=sys.stderr)
        return 1
    targets = present(results)
    if not targets:
        print(f"plot_sitting: no direct runs in {results}", file=sys.stderr)
        return 1
    os.makedirs(outdir, exist_ok=True)

    values = {}
    for workload, name in [("direct", "direct"), ("fanout", "fan-out to 10")]:
        for t, _ in targets:
            v = median(d.get("delivered_per_s") for d in runs(results, workload, t))
            values[(name, t)] = None if v is None else v / 1e6
    bars(os.path.join(outdir, "throughput.svg"), "Deliveries per second (median of the runs)",
         "million deliveries/s", ["direct", "fan-out to 10"], targets, values, "%.1f")

    values = {}
    for t, _ in targets:
        values[("idle", t)] = median(d.get("server_rss_kib_per_conn") for d in runs(results, "idle", t))
    bars(os.path.join(outdir, "memory.svg"), "RSS per idle logged-in connection",
         "KiB", ["idle"], targets, values, "%.1f")

    values = {}
    for t, _ in targets:
        done = median(d.get("all_logged_in_s") for d in runs(results, "storm", t))
        p99 = median(d.get("latency_ns", {}).get("p99") for d in runs(results, "storm", t))
        values[("all logged in", t)] = done
        values[("connect-to-login p99", t)] = None if p99 is None else p99 / 1e9
    bars(os.path.join(outdir, "storm.svg"), "Reconnect storm (fresh server): lower is better",
         "seconds", ["all logged in", "connect-to-login p99"], targets, values, "%.1f")

    out = os.path.join(outdir, "latency.svg")
    data = out + ".dat"
    points = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p999"), ("max", "max")]
    with open(data, "w") as f:
        for i, (name, key) in enumerate(points):
            row = [median(d.get("latency_ns", {}).get(key) for d in runs(results, "rate", t)) for t, _ in targets]
            f.write(f'{i} "{name}" ' + " ".join("NaN" if v is None else f"{v / 1e6}" for v in row) + "\n")
    plots = ", ".join(
        f"'{data}' using 1:{i + 3}:xtic(2) with linespoints lw 2 pt 7 lc rgb '{COLOURS[t]}' title '{label}'"
        for i, (t, label) in enumerate(targets)
    )
    gnuplot(header(out, "Latency at 20k messages/s (median of the runs)", "ms (log scale)")
            + f"set logscale y\nset key top left\nplot {plots}\n", out)
    os.remove(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
