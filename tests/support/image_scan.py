"""What is known to be vulnerable in an image, from what this machine can reach.

No CVE database is reachable here (grype's and trivy's feeds, NVD, OSV and Debian's
security tracker are not), so the scan asks the two registries that are:

- **Debian packages** (``dpkg-query`` in the image) against the security and updates
  suites of the image's release (``deb.debian.org``): a package whose installed version
  is older than the one there has a published fix (a DSA/DLA, or a point update) the
  image lacks.
- **Python packages** (the image's ``/opt/trackrelay`` environment) against PyPI's JSON
  API, whose ``vulnerabilities`` list (from the PyPA advisory database) is for a
  project's latest release: a package at that release is checked, one behind it is
  reported as behind (and not checked).

    python -m tests.support.image_scan localhost/trackrelay/trackrelay:e2e [--json out.json]

Exit status 1 when anything is found (a fix not applied, or a known vulnerability).
"""

from __future__ import annotations

import argparse
import json
import lzma
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field

DEBIAN = "http://deb.debian.org"
SUITES = ("{release}-security", "{release}-updates")
SUITE_ROOT = {"{release}-security": "debian-security", "{release}-updates": "debian"}
VENV_PYTHON = "/opt/trackrelay/bin/python"
# what the environment holds (pip itself need not be there)
DISTRIBUTIONS = (
    "import importlib.metadata as m, json; print(json.dumps(["
    "{'name': d.metadata['Name'], 'version': d.version} for d in m.distributions()]))"
)


@dataclass
class Findings:
    image: str
    release: str
    debian_packages: int = 0
    debian_behind: list[dict[str, str]] = field(default_factory=list)
    python_packages: int = 0
    python_checked: int = 0
    python_behind: list[dict[str, str]] = field(default_factory=list)
    python_vulnerable: list[dict[str, object]] = field(default_factory=list)
    python_unknown: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.debian_behind or self.python_vulnerable)


def in_image(image: str, *argv: str) -> str:
    done = subprocess.run(
        ["podman", "run", "--rm", "--network=none", "--entrypoint", argv[0], image, *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise SystemExit(f"image_scan: {' '.join(argv)} in {image} failed: {done.stderr.strip()}")
    return done.stdout


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        body: bytes = response.read()
        return body


def suite_versions(release: str) -> dict[str, str]:
    """Binary package -> newest version in the release's security and updates suites."""
    newest: dict[str, str] = {}
    for template in SUITES:
        suite = template.format(release=release)
        root = SUITE_ROOT[template]
        url = f"{DEBIAN}/{root}/dists/{suite}/main/binary-amd64/Packages.xz"
        text = lzma.decompress(fetch(url)).decode()
        for stanza in text.split("\n\n"):
            fields = dict(
                line.split(": ", 1)
                for line in stanza.splitlines()
                if ": " in line and line[0] != " "
            )
            name, version = fields.get("Package"), fields.get("Version")
            if name and version and (name not in newest or newer(version, newest[name])):
                newest[name] = version
    return newest


def newer(a: str, b: str) -> bool:
    """Debian's own version order: is ``a`` later than ``b``?"""
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0


def behind(installed: dict[str, str], fixes: dict[str, str]) -> list[dict[str, str]]:
    """The installed packages (name -> version) older than a suite's ``fixes``."""
    return [
        {"package": name, "installed": version, "fixed": fixes[name]}
        for name, version in sorted(installed.items())
        if name in fixes and newer(fixes[name], version)
    ]


def scan(image: str) -> Findings:
    release = in_image(image, "sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME").strip()
    found = Findings(image, release)
    installed = {}
    fields = "${db:Status-Abbrev}|${Package} ${Version}\n"
    for line in in_image(image, "dpkg-query", "-W", "-f", fields).splitlines():
        status, package = line.split("|", 1)
        name, version = package.split(" ", 1)
        if status.strip() == "ii":  # installed (not a package of which only config is left)
            installed[name] = version
    found.debian_packages = len(installed)
    found.debian_behind = behind(installed, suite_versions(release))
    has_venv = in_image(image, "sh", "-c", f"test -x {VENV_PYTHON} && echo yes || echo no")
    if has_venv.strip() != "yes":  # a store's image: Debian's packages alone
        return found
    listed = json.loads(in_image(image, VENV_PYTHON, "-c", DISTRIBUTIONS))
    found.python_packages = len(listed)
    for package in listed:
        name, version = package["name"], package["version"]
        try:
            project = json.loads(fetch(f"https://pypi.org/pypi/{name}/json"))
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            found.python_unknown.append(f"{name} {version}")  # this project itself, say
            continue
        latest = project["info"]["version"]
        if version != latest:
            found.python_behind.append({"package": name, "installed": version, "latest": latest})
            continue
        found.python_checked += 1
        for vuln in project.get("vulnerabilities", []):
            found.python_vulnerable.append(
                {
                    "package": name,
                    "version": version,
                    "id": vuln.get("id"),
                    "aliases": vuln.get("aliases", []),
                    "fixed_in": vuln.get("fixed_in", []),
                }
            )
    return found


def report(found: Findings) -> str:
    lines = [
        f"image {found.image} (Debian {found.release})",
        f"  Debian packages: {found.debian_packages}; with a fix in {found.release}-security"
        f" or -updates not applied: {len(found.debian_behind)}",
    ]
    lines += [f"    {b['package']} {b['installed']} -> {b['fixed']}" for b in found.debian_behind]
    lines.append(
        f"  Python packages: {found.python_packages}; at their latest release and checked:"
        f" {found.python_checked}; known vulnerabilities: {len(found.python_vulnerable)}"
    )
    lines += [
        f"    {v['package']} {v['version']}: {v['id']} {v['aliases']}"
        for v in found.python_vulnerable
    ]
    if found.python_unknown:
        lines.append(f"  not on PyPI: {', '.join(found.python_unknown)}")
    if found.python_behind:
        lines.append(f"  behind their latest release (not checked): {len(found.python_behind)}")
        lines += [
            f"    {b['package']} {b['installed']} (latest {b['latest']})"
            for b in found.python_behind
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image")
    parser.add_argument("--json", help="also write the findings here")
    args = parser.parse_args()
    found = scan(args.image)
    print(report(found))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(asdict(found), out, indent=2)
    return 1 if found.found else 0


if __name__ == "__main__":
    sys.exit(main())
