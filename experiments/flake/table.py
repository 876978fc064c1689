"""The README's table of the takeover test's runs (#32 item 5), counted from `results.txt`: `python table.py`."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).with_name("results.txt")
SETTING = ("commit", "cpu", "cpus", "subprocess_threads", "isa", "mkl_dynamic", "beside")


def runs(text: str) -> list[dict[str, str]]:
    """One dict of the key=value fields per line of results.txt; a line without every field is an error."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = dict(f.split("=", 1) for f in line.split())
        if missing := [k for k in (*SETTING, "run", "rc", "differ") if k not in fields]:
            raise ValueError(f"{RESULTS}:{number}: no {', '.join(missing)} in {line!r}")
        rows.append(fields)
    return rows


def table(rows: list[dict[str, str]]) -> str:
    """A row per setting, in the order first run: runs, failures (rc 1, with the weight files that differed) and
    other exits (a timeout, an error before the test ran), which count as neither."""
    settings = list(dict.fromkeys(tuple(r[k] for k in SETTING) for r in rows))
    lines = ["| commit | CPU | holder and waiter threads | kernels | MKL_DYNAMIC | beside it | runs | failed | "
             "weights that differ | other exits |", "|---|---|---|---|---|---|---|---|---|---|"]
    for setting in settings:
        group = [r for r in rows if tuple(r[k] for k in SETTING) == setting]
        failed = [r for r in group if r["rc"] == "1"]
        differ = sorted({f for r in failed for f in r["differ"].split(",")}) or ["none"]
        other = sorted(r["rc"] for r in group if r["rc"] not in ("0", "1"))
        commit, cpu, cpus, threads, isa, dynamic, beside = setting
        lines.append(f"| {commit} | {cpu.replace('_', ' ')}, {cpus} CPUs | {threads} | {isa} | {dynamic} | {beside} | "
                     f"{len(group)} | {len(failed)} | {', '.join(differ)} | {', '.join(other) or 'none'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(runs(RESULTS.read_text())))
