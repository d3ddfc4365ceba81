#!/usr/bin/env python3
"""Summarize bench/run.sh outputs: medians per proxy, ratios to direct, raw runs.

usage: summarize.py RESULTS_DIR   (reads RESULTS_DIR/<label>-rep<N>.txt, prints Markdown)
"""
import glob
import os
import re
import statistics
import sys

LINE = re.compile(r"^([a-z0-9_]+)=(\S+)(?: (.*))?$")
HEADER = re.compile(r"^# proxy=(\S+) label=(\S+) .*duration_s=(\d+)")

# (metric, unit, better, description) in display order
SUMMARY = [
    ("throughput_1stream", "Gbit/s", "higher", "iperf3, 1 stream"),
    ("throughput_8streams", "Gbit/s", "higher", "iperf3, 8 streams"),
    ("connclose_rps", "req/s", "higher", "wrk, new TCP connection per request"),
    ("connclose_p50", "ms", "lower", "  latency p50"),
    ("connclose_p99", "ms", "lower", "  latency p99"),
    ("keepalive_rps", "req/s", "higher", "wrk, keep-alive"),
    ("keepalive_p50", "ms", "lower", "  latency p50"),
    ("keepalive_p99", "ms", "lower", "  latency p99"),
    ("idle_rss_per_conn", "KiB", "lower", "proxy RSS per idle connection"),
    ("idle_pss_per_conn", "KiB", "lower", "proxy PSS per idle connection"),
    ("throughput_1stream_cpu_per_gb", "CPU-s/GB", "lower", "proxy CPU per GB, 1 stream"),
    ("throughput_8streams_cpu_per_gb", "CPU-s/GB", "lower", "proxy CPU per GB, 8 streams"),
    ("connclose_cpu_us_per_req", "CPU-us/req", "lower", "proxy CPU per request, conn-close"),
    ("keepalive_cpu_us_per_req", "CPU-us/req", "lower", "proxy CPU per request, keep-alive"),
    ("throughput_background_cpu", "%", "info", "CPU used by other processes during throughput"),
    ("connrate_background_cpu", "%", "info", "CPU used by other processes during connrate"),
    ("idle_background_cpu", "%", "info", "CPU used by other processes during idle"),
]

# Targets of issue 7 for a proxy under test (any label other than direct,
# nginx, haproxy), on medians: (metric, description, better, reference,
# factor). reference "best" = the better of nginx and HAProxy for that
# metric; "nginx"/"haproxy" = that one; None = factor is an absolute bound.
TARGETS = [
    ("throughput_1stream", "throughput, 1 stream", "higher", "best", 1.3),
    ("throughput_8streams", "throughput, 8 streams", "higher", "best", 1.3),
    ("connclose_rps", "new connections per second", "higher", "best", 1.2),
    ("keepalive_p99", "keep-alive latency p99", "lower", "nginx", 1.0),
    ("idle_rss_per_conn", "memory per idle connection (RSS)", "lower", "haproxy", 0.9),
    ("throughput_1stream_cpu_per_gb", "proxy CPU per GB, 1 stream", "lower", None, 0.6),
    ("throughput_8streams_cpu_per_gb", "proxy CPU per GB, 8 streams", "lower", None, 0.6),
]


def parse(path):
    label, dur, metrics, units = None, None, {}, {}
    with open(path) as f:
        for raw in f:
            raw = raw.rstrip("\n")
            m = HEADER.match(raw)
            if m:
                label, dur = m.group(2), int(m.group(3))
                continue
            if raw.startswith("#"):
                continue
            m = LINE.match(raw)
            if not m:
                continue
            name, val, unit = m.group(1), m.group(2), m.group(3) or ""
            units[name] = unit
            try:
                metrics[name] = float(val)
            except ValueError:
                metrics[name] = None
    if label is None:
        label = os.path.basename(path).rsplit("-rep", 1)[0]
    # derived CPU-efficiency metrics (only where the proxy's CPU was measured)
    d = dur or 10
    for t in ("throughput_1stream", "throughput_8streams"):
        g, c = metrics.get(t), metrics.get(t + "_proxy_cpu")
        if g and c is not None:
            metrics[t + "_cpu_per_gb"] = c / (g * d / 8.0)
    for t in ("connclose", "keepalive"):
        r, c = metrics.get(t + "_rps"), metrics.get(t + "_proxy_cpu")
        if r and c is not None:
            metrics[t + "_cpu_us_per_req"] = c / (r * d) * 1e6
    return label, metrics, units


def fmt(v):
    if v is None:
        return "NA"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    runs = {}  # label -> list of (rep, metrics)
    units = {}
    for path in sorted(glob.glob(os.path.join(d, "*-rep*.txt"))):
        m = re.search(r"-rep(\d+)\.txt$", path)
        label, metrics, u = parse(path)
        units.update(u)
        runs.setdefault(label, []).append((int(m.group(1)), metrics))
    if not runs:
        sys.exit(f"no *-rep*.txt files in {d}")
    order = [l for l in ("direct", "nginx", "haproxy") if l in runs] + sorted(
        l for l in runs if l not in ("direct", "nginx", "haproxy"))

    def values(label, metric):
        return [m[metric] for _, m in runs[label] if m.get(metric) is not None]

    def median(label, metric):
        v = values(label, metric)
        return statistics.median(v) if v else None

    reps = {l: len(runs[l]) for l in order}
    print(f"Runs per proxy: " + ", ".join(f"{l}={reps[l]}" for l in order) + "\n")
    print("### Summary (medians; ratio = proxy median / direct median)\n")
    head = ["metric", "unit"]
    for l in order:
        head.append(l)
        if l != "direct" and "direct" in runs:
            head.append(f"{l}/direct")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for metric, unit, better, desc in SUMMARY:
        if not any(values(l, metric) for l in order):
            continue
        row = [f"{metric} ({desc.strip()})", unit]
        base = median("direct", metric) if "direct" in runs else None
        for l in order:
            med = median(l, metric)
            row.append(fmt(med))
            if l != "direct" and "direct" in runs:
                row.append(f"{med / base:.2f}" if (med is not None and base) else "n/a")
        print("| " + " | ".join(row) + " |")
    print("\nHigher is better for Gbit/s and req/s; lower is better for latency, memory and CPU cost.\n")

    refs = [l for l in ("nginx", "haproxy") if l in runs]
    for l in [l for l in order if l not in ("direct", "nginx", "haproxy")]:
        print(f"### Targets (issue 7): {l} against the better of nginx and HAProxy\n")
        print(f"| target | unit | {l} | reference | {l}/reference | needed | met |")
        print("|---|---|---|---|---|---|---|")
        for metric, desc, better, ref, factor in TARGETS:
            unit = next((u for m, u, _, _ in SUMMARY if m == metric), "")
            med = median(l, metric)
            if ref is None:
                refname, refval = "absolute", None
                needed = f"<= {factor:g} {unit}"
                ok = med is not None and med <= factor
                ratio = "n/a"
            else:
                cands = [(median(r, metric), r) for r in refs if ref in ("best", r)]
                cands = [(v, r) for v, r in cands if v is not None]
                if not cands:
                    print(f"| {desc} | {unit} | {fmt(med)} | NA | n/a | | NA |")
                    continue
                refval, refname = (max if better == "higher" else min)(cands)
                refname = f"{refname} {fmt(refval)}"
                ratio = f"{med / refval:.2f}" if (med is not None and refval) else "n/a"
                needed = (">= " if better == "higher" else "<= ") + f"{factor:g}x"
                ok = med is not None and refval and (
                    med >= factor * refval if better == "higher" else med <= factor * refval)
            print(f"| {desc} | {unit} | {fmt(med)} | {refname} | {ratio} | {needed} | "
                  f"{'yes' if ok else ('NA' if med is None else 'NO')} |")
        print("\n(The handoff of 9,000 live connections to a new process in under one second "
              "is not measured by this harness.)\n")

    print("### Spread (median [min - max] over repetitions)\n")
    head = ["metric"] + order
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for metric, unit, better, desc in SUMMARY:
        if not any(values(l, metric) for l in order):
            continue
        row = [metric]
        for l in order:
            v = values(l, metric)
            row.append(f"{fmt(statistics.median(v))} [{fmt(min(v))} - {fmt(max(v))}]" if v else "NA")
        print("| " + " | ".join(row) + " |")

    print("\n### Raw results (every run, as printed by run.sh)\n")
    names = []
    for l in order:
        for _, m in runs[l]:
            for k in m:
                if k not in names:
                    names.append(k)
    names = [n for n in names if not n.endswith(("_cpu_per_gb", "_cpu_us_per_req"))]
    cols = [(l, rep, m) for l in order for rep, m in sorted(runs[l], key=lambda x: x[0])]
    print("| metric | unit | " + " | ".join(f"{l} #{rep}" for l, rep, _ in cols) + " |")
    print("|" + "---|" * (len(cols) + 2))
    for n in names:
        print(f"| {n} | {units.get(n, '')} | " + " | ".join(
            ("NA" if m.get(n) is None else f"{m[n]:g}") for _, _, m in cols) + " |")


if __name__ == "__main__":
    main()
