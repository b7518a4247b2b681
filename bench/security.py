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
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from bench.common import command_line, machine_line, now_line, write_section

TITLE = "## Security scans (bench/security.py)"
ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _runtime_deps() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = set()
    for spec in project.get("dependencies", []):
        match = re.match(r"[A-Za-z0-9_.-]+", spec)
        if match:
            names.add(match.group(0).lower().replace("_", "-"))
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
    }


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
                "vulnerability service was unreachable (this machine has no route to PyPI's JSON "
                "API or osv.dev): the result is *not audited*, not clean."
            )
        lines.append("")
        if vulnerable:
            runtime = _runtime_deps()
            lines += ["| package | version | id | fix versions | reachable |",
                      "| --- | --- | --- | --- | --- |"]  # fmt: skip
            for dep in vulnerable:
                reach = "yes (runtime dependency)" if dep["name"].lower() in runtime else (
                    "no (dev/bench tool only)")  # fmt: skip
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
