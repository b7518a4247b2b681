"""Dependency and code scans: pip-audit over the installed environment, bandit over our code.

    scripts/shell python -m bench.security [--out bench/RESULTS.md]

pip-audit asks a vulnerability service (PyPI's JSON API by default) about every installed
distribution; a package it could not ask about is *skipped*, not clean, and is counted as such
(pip-audit itself prints "No known vulnerabilities found" even when it audited nothing). A
finding is marked reachable when the package is a dependency the server or the integration
imports (pyproject's ``dependencies``), not only a dev or bench tool.
bandit scans ``inference_server/`` and ``custom_components/``; findings we judged safe carry a
``# nosec BXXX: reason`` comment on their line, and the count of those is reported too.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import command_line, machine_line, now_line, write_section

TITLE = "## Security scans (bench/security.py)"

JUSTIFIED = {
    "diskcache": (
        "imported, never used: llama-cpp-python requires it for `LlamaDiskCache`, which the "
        "server does not create; the advisory (pickle loads from a cache directory an attacker "
        "can write) needs such a cache"
    ),
}
"""Findings judged not exploitable here, with the reason shown in the table."""
ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _name(spec: str) -> str | None:
    match = re.match(r"[A-Za-z0-9_.-]+", spec)
    return match.group(0).lower().replace("_", "-") if match else None


def _runtime_deps() -> set[str]:
    """pyproject's ``dependencies`` and, through the installed metadata, what they require."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    todo = [n for n in map(_name, project.get("dependencies", [])) if n]
    names: set[str] = set()
    while todo:
        name = todo.pop()
        if name in names:
            continue
        names.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [n for r in requires if "extra ==" not in r and (n := _name(r))]
    return names


def pip_audit() -> dict[str, Any]:
    done = subprocess.run(
        [_tool("pip-audit"), "-f", "json", "--progress-spinner", "off"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    try:
        report = json.loads(done.stdout)
    except ValueError:
        return {"error": (done.stderr or done.stdout)[-500:], "deps": [], "skipped": []}
    deps = report.get("dependencies", [])
    return {
        "error": None,
        "deps": deps,
        "skipped": [d for d in deps if "skip_reason" in d],
        "vulnerable": [d for d in deps if d.get("vulns")],
        "latest": latest_check([d for d in deps if "skip_reason" in d]),
    }


def _latest_release(name: str) -> tuple[str, list[dict[str, Any]]] | None:
    """PyPI's project JSON: the latest version and the advisories that affect *that* version."""
    url = f"https://pypi.org/pypi/{urllib.parse.quote(name)}/json"
    for _ in range(3):  # a busy mirror drops an answer now and then
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                data = json.load(response)
        except (OSError, ValueError):
            continue
        return str(data["info"]["version"]), list(data.get("vulnerabilities") or [])
    return None


def latest_check(skipped: list[dict[str, Any]]) -> dict[str, Any]:
    """What can still be said when pip-audit's per-version lookups fail.

    Here PyPI's per-version JSON (``/pypi/<name>/<version>/json``, what pip-audit asks) answers
    404 and osv.dev is unreachable, while the project JSON (``/pypi/<name>/json``) answers. Its
    ``vulnerabilities`` are those of the latest release, so a distribution installed *at* the
    latest release is audited by it; an older one is listed as outdated, not as clean.
    """
    if skipped and _latest_release("pip") is None:  # no route: say so at once, not 287 times
        return {"current": [], "outdated": [], "unknown": skipped, "vulnerable": []}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda d: _latest_release(d["name"]), skipped))
    current, outdated, unknown, vulnerable = [], [], [], []
    for entry, answer in zip(skipped, answers, strict=True):
        # A skipped entry has no "version": its skip_reason ends with "<name> (<version>)".
        found = re.search(r"\(([^()]+)\)$", entry["skip_reason"])
        dep = {**entry, "version": entry.get("version") or (found.group(1) if found else "?")}
        if answer is None:
            unknown.append(dep)
            continue
        latest, vulns = answer
        if latest != dep["version"]:
            outdated.append({**dep, "latest": latest})
            continue
        current.append(dep)
        if vulns:
            vulnerable.append({**dep, "vulns": [
                {"id": v.get("id", "?"), "fix_versions": v.get("fixed_in") or []} for v in vulns
            ]})  # fmt: skip
    return {"current": current, "outdated": outdated, "unknown": unknown, "vulnerable": vulnerable}


def bandit() -> dict[str, Any]:
    done = subprocess.run(
        [_tool("bandit"), "-r", "inference_server", "custom_components", "-f", "json", "-q"],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
    )  # fmt: skip
    report = json.loads(done.stdout)
    nosec = sum(
        1
        for path in [
            *ROOT.glob("inference_server/**/*.py"),
            *ROOT.glob("custom_components/**/*.py"),
        ]
        for line in path.read_text(encoding="utf-8").splitlines()
        if "# nosec" in line
    )
    return {"results": report.get("results", []), "loc": report["metrics"]["_totals"]["loc"],
            "nosec": nosec}  # fmt: skip


def render(audit: dict[str, Any], scan: dict[str, Any]) -> str:
    lines = [
        TITLE, "",
        f"- date: {now_line()}",
        f"- machine: {machine_line()}",
        f"- command: {command_line('bench.security')}",
        "",
        "### pip-audit (the shared venv: runtime, dev and bench packages)",
        "",
    ]  # fmt: skip
    if audit["error"]:
        lines += [f"pip-audit failed: `{audit['error'].strip()}`", ""]
    else:
        deps, skipped, vulnerable = audit["deps"], audit["skipped"], audit["vulnerable"]
        audited = len(deps) - len(skipped)
        lines.append(
            f"{len(deps)} distributions, **{audited} audited**, {len(skipped)} skipped, "
            f"{len(vulnerable)} with known vulnerabilities."
        )
        if skipped:
            reasons = sorted({re.sub(r": \S+ \(.*\)$", "", d["skip_reason"]) for d in skipped})
            lines.append(
                f"Skipped because: {'; '.join(reasons)}. When every package is skipped the "
                "vulnerability service was unreachable (here PyPI's per-version JSON API answers "
                "404 and osv.dev has no route): pip-audit's result is *not audited*, not clean."
            )
        lines.append("")
        latest = audit["latest"]
        runtime = _runtime_deps()
        if skipped:
            stale = [d for d in latest["outdated"] if d["name"].lower() in runtime]
            lines += [
                "Fallback for the skipped ones, PyPI's project JSON (it answers here; its "
                "advisories are those of the latest release): "
                f"**{len(latest['current'])} audited** (installed at the latest release), "
                f"{len(latest['vulnerable'])} of them with known vulnerabilities; "
                f"{len(latest['outdated'])} older than the latest release (not audited: the "
                f"advisories of older releases are what the unreachable lookups hold); "
                f"{len(latest['unknown'])} not on PyPI or not answered.",
                "",
            ]
            if stale:
                lines.append(
                    "Runtime dependencies behind their latest release (not audited): "
                    + ", ".join(f"{d['name']} {d['version']} (latest {d['latest']})" for d in stale)
                    + "."
                )
                lines.append("")
            vulnerable = [*vulnerable, *latest["vulnerable"]]
        if vulnerable:
            lines += ["| package | version | id | fix versions | reachable |",
                      "| --- | --- | --- | --- | --- |"]  # fmt: skip
            for dep in vulnerable:
                reach = "yes (runtime dependency)" if dep["name"].lower() in runtime else (
                    "no (dev/bench tool only)")  # fmt: skip
                reach = JUSTIFIED.get(dep["name"].lower(), reach)
                for vuln in dep["vulns"]:
                    lines.append(
                        f"| {dep['name']} | {dep['version']} | {vuln['id']} | "
                        f"{', '.join(vuln.get('fix_versions', [])) or '-'} | {reach} |"
                    )
            lines.append("")
    results = scan["results"]
    lines += [
        "### bandit (inference_server/, custom_components/)",
        "",
        f"{scan['loc']} lines scanned; **{len(results)} open findings**; {scan['nosec']} lines "
        "carry a `# nosec BXXX: reason` justification (asserts used for type narrowing of "
        "invariants, file and token *names* flagged as passwords, `0.0.0.0` compared or bound "
        "on purpose by the add-on); the one finding that mattered (an `assert` guarding the "
        "JWT secret in security/auth.py, gone under `python -O`) is now an explicit check.",
        "",
    ]  # fmt: skip
    if results:
        lines += ["| test | severity | where | what |", "| --- | --- | --- | --- |"]
        for r in results:
            lines.append(f"| {r['test_id']} | {r['issue_severity']} | {r['filename']}:"
                         f"{r['line_number']} | {r['issue_text']} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    section = render(pip_audit(), bandit())
    print(section)
    if args.out is not None:
        write_section(args.out, TITLE, section)


if __name__ == "__main__":
    main()
