"""The regression issue of a new release: the checks that passed on the release before it and fail on it, and
those that now fail in another way."""

from __future__ import annotations

from typing import NamedTuple

from packaging.version import Version

from cache_conformance.releases import ReleasesError
from cache_conformance.report import changes, direction
from cache_conformance.report.changes import FAILING, outcome
from cache_conformance.report.load import target_id
from cache_conformance.report.page import SCRIPTS, cell_script

MESSAGE_LIMIT = 300
# The development head's one issue, found again by this title; what the dev-head job installs (tox.ini).
DEV_HEAD_TITLE = "Development head: checks that pass on the newest release fail on transformers main"
DEV_HEAD = "transformers @ git+https://github.com/huggingface/transformers@main"
SCRIPTS_INLINE = 3  # standalone scripts shown in the issue's body; the others are linked (the site has them all)


class Issue(NamedTuple):
    title: str
    body: str  # markdown
    scripts: dict[str, str]  # the new failures' standalone reproductions, by file name


def regression_issue(runs: list, release: str, site: str) -> Issue | None:
    """The issue listing the checks that passed on the release before `release` and fail on it, and
    those that failed before and now fail in another way (`changed_failures`), or None when there are neither.
    `runs` are the merged results (load_results), in version order. Each of those failures whose call a script can
    make again comes with its standalone reproduction (cache_conformance/repro): the first few in the body, every
    one linked on the site and returned for the workflow to attach."""
    position = next((i for i, run in enumerate(runs) if run.release == release), None)
    if position is None:
        raise ReleasesError(f"no results for transformers {release} in the merged results")
    new_run = runs[position]
    # runs are in version order; a development build is compared with releases, never a release with it
    earlier = [run for run in runs[:position] if not run.crashed and not run.unreleased]
    if not earlier:
        return None
    previous_run = earlier[-1]
    flipped = [change for change in changes(previous_run, new_run)
               if direction(change.old_outcome, change.new_outcome) == "newly failing"]
    changed = changed_failures(previous_run, new_run)
    if not flipped and not changed:
        return None
    previous = previous_run.release
    results_link = f"{site}results/{new_run.path.name}"
    header = f"| check | dtype | device | attention | {previous} | {release} | message on {release} |"
    lines = []
    if flipped:
        lines.append(f"transformers {release} fails {len(flipped)} check(s) that passed on {previous}, the release "
                     "before it in the published results.")
    if changed:
        lines.append(f"transformers {release} fails {len(changed)} check(s) in another way than on {previous}: "
                     "another exception, or a message that the check's expectation does not explain.")
    lines += ["", f"Report: {site} · results file: {results_link}"]
    tables = [("Newly failing", [(change.check, change.params, change.old_outcome, change.new_outcome)
                                 for change in flipped]),
              ("Failing in another way", changed)]
    scripted = {}  # check -> (target, its script) or None
    for heading, rows in tables:
        if not rows:
            continue
        lines += ["", f"### {heading}", "", header, "|---|---|---|---|---|---|---|"]
        for check, params, old_cell, new_cell in rows:
            record = new_run.tests[(check, target_id(params))]  # failing: the new run has it
            lines.append(
                f"| `{check}` | {params.get('dtype', '')} | {params.get('device', '')} | {params.get('attn', '')} "
                f"| {old_cell} | {new_cell} | {_table_text(record.get('message', ''))} |"
            )
            if check not in scripted:  # the report's one script of this cell, which the link below finds on the site
                scripted[check] = cell_script(new_run, {target: r for (c, target), r in new_run.tests.items()
                                                        if c == check})
    scripts = dict(made[1:] for made in scripted.values() if made)
    if scripts:
        lines += ["", "### Standalone reproductions", "",
                  ("Each script needs only torch and transformers, builds the checkpoint itself and exits 1 where the "
                   "finding holds, 0 where it does not."), ""]
        lines += [f"- [{name}]({site}{SCRIPTS}/{name})" for name in scripts]
        for name, text in list(scripts.items())[:SCRIPTS_INLINE]:
            lines += ["", f"<details><summary>{name}</summary>", "", "```python", text.rstrip(), "```", "",
                      "</details>"]
    if new_run.unreleased:
        lines += ["", (f"Reproduce: `TRANSFORMERS_DEV=\"{DEV_HEAD}\" tox -e py311-transformers-dev` (the development "
                       "head moves: a failure that is gone there was fixed or reverted)."), "",
                  "Opened by the releases workflow's development-head job; it updates this issue on each run."]
        return Issue(DEV_HEAD_TITLE, "\n".join(lines) + "\n", scripts)
    minor = f"{Version(release).major}.{Version(release).minor}"
    lines += [
        "",
        (f"Reproduce: `echo transformers=={release} > constraints.txt && UV_CONSTRAINT=constraints.txt "
         f"tox -e py311-transformers-{minor}` (`py311-transformers-latest` for a minor without its own environment)."),
        "",
        "Opened by the releases workflow; it updates this issue when it runs this release again.",
    ]
    return Issue(f"Release regression: transformers {release}", "\n".join(lines) + "\n", scripts)


def dev_head_issue(runs: list, site: str) -> Issue | None:
    """The one issue of the development head: the checks that pass on the newest release and fail on the newest
    unreleased run (and those failing in another way), or None when there are none or there is no such run."""
    unreleased = [run for run in runs if run.unreleased and not run.crashed]
    return regression_issue(runs, unreleased[-1].release, site) if unreleased else None


def changed_failures(previous_run, new_run) -> list[tuple[str, dict, str, str]]:
    """(check, params, outcome before, outcome now) of every check that failed on the previous release (expected or
    not) and now fails red in another way: another exception type, or a failure its expectation does not explain
    (on a release not adopted yet, the expectation carried from the adopted one). Outcomes say the exception."""
    found = []
    for key, record in sorted(new_run.tests.items()):
        old = previous_run.tests.get(key)
        red = (record["outcome"], record.get("raw_outcome")) == ("failed", "failed")
        if old is None or outcome(old) not in FAILING or not red:
            continue
        if record.get("mismatch") or record.get("raised") != old.get("raised"):
            found.append((key[0], record["params"], f"{outcome(old)} ({old.get('raised', '?')})",
                          f"failed ({record.get('raised', '?')})"))
    return found


def _table_text(message: str) -> str:
    """Upstream text inside one Markdown table cell: one line, no pipes or backticks, bounded length."""
    text = " ".join(message.split()).replace("|", "\\|").replace("`", "'")
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"
