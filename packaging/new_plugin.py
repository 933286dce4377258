#!/usr/bin/env python3
"""Create a new xdphooks plugin directory from plugins/template/.

    packaging/new_plugin.py NAME --licence SPDX [--maintainer "Name <email>"]
                            [--summary TEXT] [--description TEXT] [--dest DIR] [--force]

Copies the template's BPF source, hook module, Makefile, rpm spec and debian/
to DIR (default plugins/NAME), renaming "example" to NAME in file names and
contents, and puts the summary and description into the spec and
debian/control. The package is yours, not the template's: its maintainer
(--maintainer, else $DEBFULLNAME <$DEBEMAIL>, as dch does), its licence
(--licence, an SPDX identifier: the spec, debian/copyright and the sources'
SPDX lines) and today's date in both changelogs. The result builds as it is:
`make`, rpmbuild, dpkg-buildpackage, or
`packaging/build-all.sh --plugin-dir DIR --only NAME`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "plugins" / "template"
EXAMPLE = re.compile(r"\bexample\b(?!\.invalid)")  # the name, not the example.invalid addresses
DEBIAN_FILES = {"changelog", "control", "copyright", "rules", "source"}  # + debian/*.xdphooks


def template_files() -> list[Path]:
    """The template's sources: not its README, build outputs or debhelper leftovers."""
    out = []
    for src in sorted(TEMPLATE.rglob("*")):
        rel = src.relative_to(TEMPLATE)
        if not src.is_file() or rel.name == "README.md" or rel.suffix == ".o" \
                or "__pycache__" in rel.parts:
            continue
        if rel.parts[0] == "debian" and rel.parts[1] not in DEBIAN_FILES \
                and rel.suffix != ".xdphooks":
            continue
        out.append(rel)
    return out


def describe(rel: Path, text: str, summary: str, description: str) -> str:
    """Put the summary and description into the spec and debian/control."""
    if rel.suffix == ".spec":
        text = re.sub(r"(?m)^(Summary:\s*).*$", lambda m: m.group(1) + summary, text)
        body = textwrap.fill(description, 72)
        text = re.sub(r"(?s)(%description\n).*?(\n\n%prep)", lambda m: m[1] + body + m[2], text)
    elif rel.as_posix() == "debian/control":
        paras = [textwrap.fill(p, 72) for p in description.split("\n\n")]
        body = "\n .\n".join("\n".join(" " + ln for ln in p.splitlines()) for p in paras)
        text = re.sub(r"(?m)^Description:.*(\n .*)*", lambda m: f"Description: {summary}\n{body}",
                      text)
    return text


@dataclass(frozen=True)
class Owner:
    """Who the new package is by, under which licence, made when (not the template's)."""

    maintainer: str  # "Name <email>"
    licence: str  # SPDX identifier
    when: float  # seconds since the epoch


TEMPLATE_LICENCE = "GPL-2.0-only"
COMMON_LICENCES = {"GPL-2.0-only": "GPL-2", "GPL-2.0-or-later": "GPL-2",
                   "GPL-3.0-only": "GPL-3", "GPL-3.0-or-later": "GPL-3",
                   "Apache-2.0": "Apache-2.0", "MPL-2.0": "MPL-2.0",
                   "LGPL-2.1-only": "LGPL-2.1", "LGPL-2.1-or-later": "LGPL-2.1"}


def personalise(rel: Path, text: str, owner: Owner) -> str:
    """The template's maintainer, licence and changelog dates replaced by the owner's."""
    t = time.gmtime(owner.when)
    if rel.suffix == ".spec":
        text = re.sub(r"(?m)^(License:\s*).*$", lambda m: m.group(1) + owner.licence, text)
        text = re.sub(r"(?m)^\* \w{3} \w{3} \d\d \d{4} .*? - ",
                      lambda m: f"* {time.strftime('%a %b %d %Y', t)} {owner.maintainer} - ",
                      text)
    elif rel.as_posix() == "debian/control":
        text = re.sub(r"(?m)^Maintainer:.*$", f"Maintainer: {owner.maintainer}", text)
    elif rel.as_posix() == "debian/changelog":
        text = re.sub(r"(?m)^ -- .*$", f" -- {owner.maintainer}  "
                      + time.strftime("%a, %d %b %Y %H:%M:%S +0000", t), text)
    elif rel.as_posix() == "debian/copyright":
        common = COMMON_LICENCES.get(owner.licence)
        body = (f" On Debian systems, see /usr/share/common-licenses/{common}." if common
                else f" See https://spdx.org/licenses/{owner.licence}.html")
        text = re.sub(r"(?m)^Copyright:.*$",
                      f"Copyright: {time.strftime('%Y', t)} {owner.maintainer}", text)
        text = re.sub(r"(?ms)^License:.*?(?=\n\S|\Z)", f"License: {owner.licence}\n{body}",
                      text).rstrip("\n") + "\n"
    text = text.replace(f"SPDX-License-Identifier: {TEMPLATE_LICENCE}",
                        f"SPDX-License-Identifier: {owner.licence}")
    return text


def create(name: str, summary: str, description: str, dest: Path, force: bool,
           owner: Owner | None = None) -> list[Path]:
    ident = name.replace("-", "_")  # the C function name
    written = []
    for rel in template_files():
        src = TEMPLATE / rel
        text = EXAMPLE.sub(ident if rel.name.endswith(".bpf.c") else name, src.read_text())
        text = describe(rel, text, summary, description)
        if owner is not None:
            text = personalise(rel, text, owner)
        out = dest / EXAMPLE.sub(name, rel.as_posix())
        if out.exists() and not force and out.read_text() != text:
            raise SystemExit(f"{out} exists and differs (use --force)")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.chmod(src.stat().st_mode & 0o755)  # debian/rules stays executable
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="plugin name: the module, object, program and package name")
    ap.add_argument("--summary", help='one line; default "xdphooks plugin: NAME"')
    ap.add_argument("--description", help="longer text; default: the summary")
    ap.add_argument("--dest", type=Path, help="default: plugins/NAME in this checkout")
    ap.add_argument("--force", action="store_true", help="overwrite files that differ")
    ap.add_argument("--maintainer", help='"Name <email>"; default: $DEBFULLNAME <$DEBEMAIL>')
    ap.add_argument("--licence", "--license", dest="licence",
                    help="the package's SPDX licence identifier, e.g. GPL-2.0-only (the BPF "
                         "object's license string must stay GPL-compatible to use GPL-only "
                         "helpers)")
    args = ap.parse_args(argv)
    maintainer = args.maintainer or (
        f"{os.environ['DEBFULLNAME']} <{os.environ['DEBEMAIL']}>"
        if os.environ.get("DEBFULLNAME") and os.environ.get("DEBEMAIL") else "")
    if not re.fullmatch(r"[^<>\n]+ <[^<>@\s]+@[^<>\s]+>", maintainer):
        ap.error("the package needs its maintainer: --maintainer 'Name <email>', or set "
                 "DEBFULLNAME and DEBEMAIL")
    if not args.licence or not re.fullmatch(r"[A-Za-z0-9.+() -]+", args.licence):
        ap.error("the package needs its licence: --licence SPDX-ID (e.g. GPL-2.0-only, MIT)")
    when = float(os.environ.get("SOURCE_DATE_EPOCH") or time.time())
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,31}", args.name):
        ap.error("NAME: a lower-case letter, then lower-case letters, digits and '-', at most 32")
    summary = args.summary or f"xdphooks plugin: {args.name}"
    description = (args.description or summary).strip()
    for p in create(args.name, summary, description, args.dest or REPO / "plugins" / args.name,
                    args.force, Owner(maintainer.strip(), args.licence, when)):
        print(p.relative_to(REPO) if p.is_relative_to(REPO) else p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
