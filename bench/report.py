"""Turn benchmark results into a table, JSON and (optionally) a PNG chart."""

import json
import statistics

# name -> (label, unit, higher is better)
SCENARIOS = {
    "keepalive": ("kept-alive requests (c50)", "req/s", True),
    "newconn": ("new-connection requests (c50)", "req/s", True),
    "bulk": ("bulk 10 MB responses (c4)", "MB/s", True),
    "latency_p50": ("added latency p50 (1 conn)", "us", False),
    "latency_p99": ("added latency p99 (1 conn)", "us", False),
    "idlers_newconn": ("new-conn requests, idlers run", "req/s", True),
    "connlat_p50": ("added new-conn latency p50", "us", False),     # 1 client
    "connlat_p99": ("added new-conn latency p99", "us", False),
    "memory": ("memory per idle kept-alive conn", "KiB", False),
    "memory_fresh": ("memory per new conn (no data)", "KiB", False),
    "memory_http": ("memory per idle conn, HTTP mode", "KiB", False),
    "memory_http_fresh": ("memory per new conn, HTTP mode", "KiB", False),
    "udp": ("UDP requests -U (16 clients)", "req/s", True),
    "http_rule": ("HTTP mode, one set-header rule (c50)", "req/s", True),
    "http_xff": ("HTTP -H X-Forwarded-For (c50)", "req/s", True),
    "newconn_proxy_off": ("new conn, no PROXY header (c50)", "req/s", True),
    "newconn_proxy_v1": ("new conn, PROXY v1 header (c50)", "req/s", True),
    "newconn_proxy_v2": ("new conn, PROXY v2 header (c50)", "req/s", True),
}
# rows whose values are also given against another row of the same target:
# what the PROXY header costs
AGAINST = {"newconn_proxy_v1": "newconn_proxy_off",
           "newconn_proxy_v2": "newconn_proxy_off"}
TARGET_ORDER = ("direct", "ours", "idlers", "pen", "haproxy")   # idlers: ours, idlers 4
RATIOS = (("ours", "pen"), ("ours", "haproxy"), ("haproxy", "pen"), ("idlers", "ours"),
          ("idlers", "haproxy"))
# Below these a value is noise or rounding, and a ratio to it means nothing.
RATIO_FLOOR = {"KiB": 0.5, "us": 2.0}


def median(values):
    return statistics.median(values) if values else None


def summarise(results):
    """Fill value (median of samples) and the ratios; returns ratio dict."""
    ratios = {}
    for name, per_target in results.items():
        for entry in per_target.values():
            entry["value"] = median(entry["samples"])
        floor = RATIO_FLOOR.get(SCENARIOS.get(name, ("", ""))[1], 0)
        for top, bottom in RATIOS:
            a = per_target.get(top, {}).get("value")
            b = per_target.get(bottom, {}).get("value")
            if a is not None and b and b > floor:
                ratios.setdefault(name, {})[f"{top}/{bottom}"] = a / b
    for name, base in AGAINST.items():
        for target, entry in results.get(name, {}).items():
            off = results.get(base, {}).get(target, {}).get("value")
            if entry.get("value") is not None and off:
                ratios.setdefault(name, {})[f"{target} on/off"] = \
                    entry["value"] / off
    return ratios


def fmt(value, unit):
    if value is None:
        return "-"
    if unit == "KiB":
        return f"{value:,.2f}"
    if unit == "MB/s":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def table(results, ratios, targets):
    """The text table: one row per scenario, one column per target."""
    cols = [t for t in TARGET_ORDER if t in targets]
    rcols = [f"{a}/{b}" for a, b in RATIOS if a in targets and b in targets]
    head = (f"{'scenario':<32}{'unit':>6}"
            + "".join(f"{c:>11}" for c in cols)
            + "".join(f"{r:>{max(14, len(r) + 2)}}" for r in rcols))
    lines = [head, "-" * len(head)]
    notes = []
    for name, (label, unit, higher) in SCENARIOS.items():
        per_target = results.get(name)
        if not per_target:
            continue
        row = f"{label:<32}{unit:>6}"
        for col in cols:
            entry = per_target.get(col)
            cell = "n/a" if entry is None else fmt(entry.get("value"), unit)
            if entry and entry.get("failed"):
                cell = "FAILED"
                notes.append(f"{col} {name}: {entry['failed']}")
            elif entry and entry.get("errors"):
                cell += "!"
                notes.append(f"{col} {name}: {entry['errors']} errors "
                             f"(wrk connect/read/write/status/timeout or "
                             f"UDP datagrams lost)")
            row += f"{cell:>11}"
        for rcol in rcols:
            value = ratios.get(name, {}).get(rcol)
            row += f"{'-' if value is None else f'{value:.2f}':>{max(14, len(rcol) + 2)}}"
        lines.append(row)
    for name in AGAINST:
        pairs = [(k, v) for k, v in ratios.get(name, {}).items()
                 if k.endswith(" on/off")]
        if pairs:
            lines.append(f"{SCENARIOS[name][0]:<32}{'on/off':>6}  " + ", ".join(
                f"{k.split()[0]} {v:.2f}" for k, v in pairs))
    lines.append("")
    lines.append("Values are medians over rounds. Ratios are a/b: above 1 "
                 "is better for req/s and MB/s,")
    lines.append("below 1 is better for added latency and KiB.")
    lines.append("'direct' is straight to one nginx backend; in the latency "
                 "rows it shows the round trip")
    lines.append("of one request from a Python client, the others what they "
                 "add to it (taking turns).")
    lines.append("Memory is the growth of the balancer's VmRSS divided by the "
                 "idle connections, once they")
    lines.append("are open and again after one HTTP request went through "
                 "each (kernel socket buffers are")
    lines.append("not in RSS); no ratio is shown where the denominator is "
                 "about zero.")
    if "idlers" in targets:
        lines.append("'idlers' is ours with `idlers 4`, beside a plain ours, the "
                     "C pen and HAProxy started")
        lines.append("afresh for the idlers rows; new-conn latency is connect, "
                     "request and response on a new")
        lines.append("connection each time, one client taking turns.")
    for note in notes:
        lines.append("note: " + note)
    return "\n".join(lines)


def write_json(path, doc):
    with open(path, "w") as out:
        json.dump(doc, out, indent=2, sort_keys=False)
        out.write("\n")


def draw_png(path, results, targets, title):
    """A bar chart per scenario; returns None or why it was skipped."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ("matplotlib is not installed (pip install matplotlib, "
                "or pip install '.[bench]'): no PNG written")
    names = [n for n in SCENARIOS if results.get(n)]
    # The direct baseline goes into each title, not a bar: next to 8 GB/s
    # of sendfile the balancers' bars would be too small to compare.
    cols = [t for t in TARGET_ORDER if t in targets and t != "direct"]
    colours = {"direct": "#999999", "ours": "#2a7ab0", "pen": "#e08a1e",
               "haproxy": "#4a9a4a", "idlers": "#7fb8e0"}
    ncols = 4
    nrows = (len(names) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.3 * nrows),
                             squeeze=False)
    for ax, name in zip(axes.flat, names):
        label, unit, higher = SCENARIOS[name]
        shown = [c for c in cols if results[name].get(c, {}).get("value")
                 is not None]
        values = [results[name][c]["value"] for c in shown]
        bars = ax.bar(shown, values, color=[colours[c] for c in shown])
        ax.bar_label(bars, labels=[fmt(v, unit) for v in values], fontsize=8)
        better = "higher" if higher else "lower"
        direct = results[name].get("direct", {}).get("value")
        base = f"; direct {fmt(direct, unit)}" if direct is not None else ""
        ax.set_title(f"{label}\n{unit}, {better} is better{base}",
                     fontsize=9)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.15)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
