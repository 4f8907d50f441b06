"""From loaded runs to the static site: index.html (jinja2, autoescaped) plus its assets folder."""

from __future__ import annotations

import json
import shlex
import shutil
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from cache_conformance.records import registry
from cache_conformance.report.changes import SEVERITY, changes, direction, outcome
from cache_conformance.report.charts import format_number, line_chart
from cache_conformance.report.load import Run, target_id
from cache_conformance.repro import script

HERE = Path(__file__).parent
ENV_PREFIX = "py311-transformers-"
SNAPSHOT_SUITES = {"snapshots", *registry.load().suites["snapshots"].former_names}
LABELS = {"passed": "pass", "failed": "FAIL", "xfailed": "xfail", "xpassed": "XPASS", "error": "ERROR",
          "skipped": "skip", "not run": "n/r", "crashed": "CRASH"}
MEANINGS = {
    "passed": "passed",
    "failed": "failed (not expected)",
    "xfailed": "expected fail: a known upstream problem (expectations file)",
    "xpassed": "passed although expected to fail (strict: the run fails)",
    "error": "error in setup or teardown",
    "skipped": "skipped",
    "not run": "not run (the check did not exist or was deselected)",
    "crashed": "the release failed to install or its run crashed",
}
DEVICE_ORDER = ["cpu", "cuda", "mps"]
DTYPE_ORDER = ["float32", "bfloat16", "float16"]
MESSAGE_SHOWN = 800
SCRIPTS = "repro"  # the site's folder of standalone reproductions
ALL = "all"


def write_site(runs: list[Run], errors: list[str], output: Path) -> Path:
    """Write output/index.html and output/assets/; returns the page's path."""
    output.mkdir(parents=True, exist_ok=True)
    shutil.copytree(HERE / "assets", output / "assets", dirs_exist_ok=True)
    page = output / "index.html"
    contents = context(runs, errors)
    page.write_text(render(contents))
    if contents["scripts"]:
        (output / SCRIPTS).mkdir(exist_ok=True)
    for name, text in contents["scripts"].items():
        (output / SCRIPTS / name).write_text(text)
    return page


def render(contents: dict) -> str:
    environment = Environment(loader=PackageLoader("cache_conformance.report"), autoescape=select_autoescape(),
                              trim_blocks=True, lstrip_blocks=True)
    return environment.get_template("index.html").render(**contents)


def context(runs: list[Run], errors: list[str]) -> dict:
    """What the page shows; "scripts": the standalone reproductions its failing cells link to, by file name."""
    columns = [column(n, run) for n, run in enumerate(runs)]
    details = [detail(col, check) for col in columns for check in sorted(col["by_check"])]
    views = [ALL, *ran_targets(runs)]
    groups = []
    for suite, checks in suites_and_checks(runs).items():
        rows = [{"check": check, "cells": {view: [cell(col, check, view) for col in columns] for view in views}}
                for check in checks]
        groups.append({"suite": suite, "title": registry.load().title(suite), "rows": rows})
    return {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "columns": columns,
        "views": views,
        "groups": groups,
        "details": details,
        "scripts": dict(item["script"][1:] for item in details if item["script"]),
        "crashes": [col for col in columns if col["run"].crashed],
        "changed": what_changed(columns),
        "memory": memory_charts(columns),
        "drift": drift(columns),
        "deprecations": deprecations(columns),
        "api_surface": api_surface(columns),
        "selftests": [col for col in columns if col["run"].selftest],
        "header": header(columns),
        "errors": errors,
        "labels": LABELS,
        "meanings": MEANINGS,
    }


def column(index: int, run: Run) -> dict:
    by_check: dict[str, dict[str, dict]] = defaultdict(dict)
    for (check, target), record in run.tests.items():
        by_check[check][target] = record
    counts = defaultdict(int)
    for record in run.tests.values():
        counts[outcome(record)] += 1
    return {"index": index, "run": run, "release": run.release, "by_check": by_check, "counts": dict(counts),
            "notes": notes(run), "env": run.info.get("tox_env") or ENV_PREFIX + minor(run.release),
            "unreleased": run.unreleased}


def minor(release: str) -> str:
    return ".".join(release.split(".")[:2])


def notes(run: Run) -> list[str]:
    """What a reader must know before trusting a column."""
    found = []
    if run.crashed:
        found.append(f"crashed: {run.crashed}")
    if run.unreleased:
        found.append(f"unreleased: {run.release} is a development build (transformers' main branch); it gates "
                     "nothing and is never adopted")
    if run.info.get("injected_fault"):
        found.append(f"fault {run.info['injected_fault']} was injected: not a conformance result")
    if run.info.get("expectations") == "ignored":
        found.append("run without expectations (--no-expectations)")
    if run.info.get("provisional"):
        found.append(f"provisional: {run.release} is newer than {run.info.get('adopted')}, the adopted release; "
                     f"{run.info.get('carried', 0)} expected failures are carried from it (xfail marked *)")
    command = run.info.get("command", "")
    if " -k " in f" {command} " or "::" in command:
        found.append(f"partial run: {command}")
    return found


def ran_targets(runs: list[Run]) -> list[str]:
    """Targets that ran (not only skipped) somewhere, device, then dtype, then attention order."""
    ran = {target for run in runs for (_, target), r in run.tests.items() if target and r["outcome"] != "skipped"}
    return sorted(ran, key=target_order)


def target_order(target: str) -> tuple:
    dtype, device, attn = (target.split("-") + ["", "", ""])[:3]
    return (_rank(DEVICE_ORDER, device), device, _rank(DTYPE_ORDER, dtype), dtype, attn)


def _rank(order: list[str], value: str) -> int:
    return order.index(value) if value in order else len(order)


def suites_and_checks(runs: list[Run]) -> dict[str, list[str]]:
    checks: dict[str, set[str]] = defaultdict(set)
    for run in runs:
        for record in run.tests.values():
            checks[record["suite"]].add(record["check"])
    ordered = sorted(checks, key=lambda s: (registry.load().order(s), s))
    return {suite: sorted(checks[suite]) for suite in ordered}


def detail_id(col: dict, check: str) -> str:
    if col["run"].crashed:
        return f"crash-{col['index']}"
    return f"d-{col['index']}-{sorted(col['by_check']).index(check)}" if check in col["by_check"] else ""


def cell(col: dict, check: str, view: str) -> dict:
    """What one matrix cell shows: the worst outcome over the view's targets, with a count when they differ."""
    if col["run"].crashed:
        return {"outcome": "crashed", "count": "", "link": detail_id(col, check), "carried": ""}
    records = col["by_check"].get(check, {})
    if view != ALL:
        records = {t: r for t, r in records.items() if t in (view, "")}
    outcomes = [outcome(r) for r in records.values()]
    ran = [o for o in outcomes if o != "skipped"] or outcomes
    if not ran:
        return {"outcome": "not run", "count": "", "link": "", "carried": ""}
    worst = min(ran, key=SEVERITY.index)
    same = sum(o == worst for o in ran)
    carried = {r["carried_from"] for r in records.values() if outcome(r) == worst == "xfailed" and r.get("carried_from")}
    return {"outcome": worst, "count": f"{same}/{len(ran)}" if same != len(ran) else "",
            "link": detail_id(col, check), "carried": ", ".join(sorted(carried))}


def detail(col: dict, check: str) -> dict:
    """A cell's detail: per target the outcome, message, metrics against tolerance, expectation, command; the first
    failing target whose call a script can make has the cell's standalone script (one per cell keeps the site small:
    the targets' calls differ only in dtype, device and attention)."""
    run = col["run"]
    entries, skipped, reasons = [], defaultdict(list), []
    records = col["by_check"][check]
    scripted = cell_script(run, records)
    for target in sorted(records, key=target_order):
        record = records[target]
        if record["outcome"] == "skipped":
            skipped[record.get("message", "")].append(target or "(no target)")
            continue
        metrics = record.get("metrics") or {}
        message = record.get("message", "")
        expectation = {k: record[k] for k in ("reason", "evidence", "reference", "releases") if record.get(k)}
        if expectation and expectation not in reasons:
            reasons.append(expectation)  # shown once, above the targets it applies to
        entries.append({
            "target": target or "(no target)",
            "outcome": outcome(record),
            "message": message[:MESSAGE_SHOWN],
            "cut": max(0, len(message) - MESSAGE_SHOWN),
            "metrics": metric_lines(metrics),
            "chart": series_chart(metrics, f"{check} on {run.release}, {target}"),
            "expected": record.get("expected", "pass") + (
                f" (carried from {record['carried_from']}, release not adopted)" if record.get("carried_from") else ""),
            "reason_no": reasons.index(expectation) + 1 if expectation else 0,
            "command": reproduce(col, record),
            "script": scripted[1] if scripted and scripted[0] == target else "",
        })
    return {"id": detail_id(col, check), "check": check, "release": run.release, "entries": entries,
            "reasons": reasons, "skipped": dict(skipped), "path": str(run.path), "script": scripted}


def cell_script(run: Run, records: dict[str, dict]) -> tuple[str, str, str] | None:
    """(target, file name, text) of a cell's standalone script (cache_conformance/repro), the cell being one check's
    records by target on one release: made from its first failing target, in the page's target order, whose call
    a script can make; None where there is none (or its checkpoint is not here: the cell keeps its rerun command)."""
    for target in sorted(records, key=target_order):
        record = records[target]
        if script.why_not_scriptable(record) is not None:
            continue
        expectation = {key: record[key] for key in ("reason", "reference") if record.get(key)}
        try:
            return target, script.file_name(record, run.release), script.render(record, run.info,
                                                                                 expectation=expectation)
        except script.ReproError:
            return None
    return None


def reproduce(col: dict, record: dict) -> str:
    """The command that reruns this one test the way the results file was made."""
    extra = []
    if col["run"].info.get("expectations") == "ignored":
        extra.append("--no-expectations")
    if col["run"].info.get("injected_fault"):
        extra += ["--inject-fault", col["run"].info["injected_fault"]]
    return shlex.join(["tox", "-e", col["env"], "--", "-n", "0", record["id"], *extra])


def metric_lines(metrics: dict) -> list[str]:
    """Metrics as sentences: a difference against its tolerance, bytes against a threshold, then the rest."""
    rest = {k: v for k, v in metrics.items() if k not in ("series", "series_unit", "call")}  # the call: its script
    lines = []
    if isinstance(rest.get("coverage"), dict):
        lines.append(coverage_line(rest.pop("coverage")))
    if "max_abs_diff" in rest and "atol" in rest:
        diff, atol, rtol = rest.pop("max_abs_diff"), rest.pop("atol"), rest.pop("rtol", 0)
        lines.append(f"max abs diff {diff:.4g} against tolerance atol {atol} + rtol {rtol}·|expected|")
    if "bytes_per_step" in rest:
        per_step = rest.pop("bytes_per_step")
        threshold = rest.pop("detection_threshold_bytes_per_step", None)
        lines.append(f"{format_number(per_step, 'bytes')} per step"
                     + (f" against detection threshold {format_number(threshold, 'bytes')} per step"
                        if isinstance(threshold, int | float) else ""))
    lines += [f"{key}: {json.dumps(value)[:300]}" for key, value in rest.items()]
    return lines


def coverage_line(coverage: dict) -> str:
    """What a strategy check's inputs reached, beside the regimes it certifies (cache_conformance/grading/coverage.py)."""
    reached = coverage.get("regimes") or {}
    certifies = coverage.get("certifies") or []
    shown = ", ".join(f"{'*' if name in certifies else ''}{name} {count}" for name, count in reached.items())
    figures = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in coverage.items()
                        if name not in ("regimes", "certifies"))
    return (f"coverage: reached {shown or 'no regime'} (certifies {', '.join(certifies) or '-'}; * a certified "
            f"regime){'; ' + figures if figures else ''}")


def series_chart(metrics: dict, title: str):
    series = metrics.get("series")
    if not isinstance(series, dict):
        return ""
    lines = {name: [v if isinstance(v, int | float) else None for v in values]
             for name, values in series.items() if isinstance(values, list)}
    return line_chart(lines, unit=str(metrics.get("series_unit", "")), title=title)


def what_changed(columns: list[dict]) -> list[dict]:
    """Per release, the tests whose outcome differs from the nearest earlier release that ran."""
    found, previous = [], None
    for col in columns:
        run = col["run"]
        if run.crashed:
            found.append({"col": col, "previous": previous, "crashed": run.crashed, "kinds": {}})
            continue
        if previous is not None:
            grouped: dict[tuple, list[str]] = defaultdict(list)
            for change in changes(previous["run"], run):
                grouped[(change.check, change.old_outcome, change.new_outcome)].append(target_id(change.params))
            kinds = {"newly failing": [], "newly passing": [], "other": []}
            for (check, old, new), targets in grouped.items():
                kinds[direction(old, new)].append({
                    "check": check, "old": old, "new": new, "targets": [t or "(no target)" for t in sorted(targets, key=target_order)],
                    "link": detail_id(col, check) or detail_id(previous, check)})
            found.append({"col": col, "previous": previous, "crashed": "", "kinds": kinds})
        previous = col
    return found


def memory_charts(columns: list[dict]) -> list[dict]:
    """For each check that records a per-step series: one small chart per release (its first target)."""
    rows = defaultdict(list)
    for col in columns:
        for check, records in sorted(col["by_check"].items()):
            with_series = [(t, r) for t, r in records.items() if isinstance((r.get("metrics") or {}).get("series"),
                                                                            dict)]
            if with_series:
                target, record = min(with_series, key=lambda item: target_order(item[0]))
                rows[check].append({"release": col["release"], "target": target, "outcome": outcome(record),
                                    "chart": series_chart(record["metrics"], f"{check} on {col['release']}")})
    return [{"check": check, "charts": charts} for check, charts in rows.items()]


def drift(columns: list[dict]) -> dict:
    """Per release and dtype, the largest snapshot max_abs_diff: how far each release drifts from the snapshots."""
    table: dict[str, list[float | None]] = {}
    for n, col in enumerate(columns):
        for record in col["run"].tests.values():
            value = (record.get("metrics") or {}).get("max_abs_diff")
            if record["suite"] not in SNAPSHOT_SUITES or not isinstance(value, int | float):
                continue
            row = table.setdefault(record["params"].get("dtype", "(no dtype)"), [None] * len(columns))
            row[n] = value if row[n] is None else max(row[n], value)
    ordered = dict(sorted(table.items(), key=lambda item: _rank(DTYPE_ORDER, item[0])))
    releases = [col["release"] for col in columns]
    return {"table": ordered, "releases": releases,
            "chart": line_chart(ordered, labels=releases, width=max(320, 40 * len(columns)), height=140,
                                title="largest snapshot max abs diff per release") if ordered else ""}


def deprecations(columns: list[dict]) -> dict:
    """Per release (newest first), the deprecations users' ordinary cache calls were told of (metrics.deprecations
    of the deprecations suite): information about what breaks next, not failures. {"announced": [{release,
    entries}], "quiet": [releases that recorded the calls and announced nothing]}."""
    found, quiet = [], []
    for col in reversed(columns):
        if col["run"].crashed:
            continue
        announced: dict[tuple, set[str]] = defaultdict(set)
        recorded = False
        for (check, _), record in col["run"].tests.items():
            entries = (record.get("metrics") or {}).get("deprecations")
            if not isinstance(entries, list):
                continue
            recorded = True
            for entry in entries:
                if isinstance(entry, dict) and isinstance(entry.get("message"), str):
                    key = (entry.get("kind", ""), entry["message"], entry.get("removal", ""))
                    announced[key].add(check.split("::")[-1])
        if recorded and not announced:
            quiet.append(col["release"])
        elif announced:
            found.append({"release": col["release"], "entries": [
                {"kind": kind, "message": message, "removal": removal or "not named", "calls": sorted(calls)}
                for (kind, message, removal), calls in sorted(announced.items(), key=lambda item: item[0][1])
            ]})
    return {"announced": found, "quiet": quiet}


def api_surface(columns: list[dict]) -> dict:
    """What each release offers under each member of the cache contract a user calls (metrics.api of the
    cache-contract suite): {"releases": [...], "rows": [{"member": "StaticCache.crop", "cells": [{"signature":
    "(max_length)" or None where the release lacks it or "" where it was not recorded, "deprecated": the release
    says it is deprecated, "changed": differs from the release before, "removed_undeprecated": gone here although
    no earlier release deprecated it (a finding)}]}]}."""
    releases = [col for col in columns if not col["run"].crashed]
    offered: dict[str, dict[int, dict]] = defaultdict(dict)
    for n, col in enumerate(releases):
        for record in col["run"].tests.values():
            api = (record.get("metrics") or {}).get("api")
            if isinstance(api, dict) and isinstance(api.get("owner"), str) and isinstance(api.get("member"), str):
                known = offered[f"{api['owner']}.{api['member']}"]
                if "state" in api or n not in known:  # a member's own record (with its state) over another's
                    known[n] = api
    rows = []
    for member in sorted(offered):
        cells, before, deprecated_before = [], "", False
        for n in range(len(releases)):
            api = offered[member].get(n)
            signature = api.get("signature") if api else ""
            deprecated = bool(api) and api.get("state") == "deprecated"
            removed = signature is None and before not in ("", None)
            cells.append({"signature": signature, "deprecated": deprecated,
                          "changed": n > 0 and "" not in (before, signature) and signature != before,
                          "removed_undeprecated": removed and not deprecated_before})
            deprecated_before = deprecated_before or deprecated
            before = signature if signature != "" else before
        rows.append({"member": member, "cells": cells})
    return {"releases": [col["release"] for col in releases], "rows": rows}


def header(columns: list[dict]) -> dict:
    """Run info shared by every run in one line each; what differs is in the per-release table."""
    ran = [col["run"].info for col in columns if not col["run"].crashed and "torch" in col["run"].info]

    def values(key: str) -> str:
        return ", ".join(sorted({str(info.get(key, "?")) for info in ran})) or "-"

    devices = sorted({d for info in ran for d, state in (info.get("devices") or {}).items() if state == "available"})
    started = sorted(info["started"] for info in ran if info.get("started"))
    return {"torch": values("torch"), "python": values("python"), "platform": values("platform"),
            "suite_commit": values("suite_commit"), "devices": ", ".join(devices) or "-",
            "dates": f"{started[0]} .. {started[-1]}" if started else "-",
            "releases": len(columns), "crashed": sum(bool(col["run"].crashed) for col in columns)}
