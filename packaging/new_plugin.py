#!/usr/bin/env python3
"""Render the packaging of an xdphooks plugin into plugins/NAME/.

    packaging/new_plugin.py NAME --summary TEXT [--description TEXT] [--force]

Writes Makefile, xdphooks-NAME.spec (from rpm/xdphooks-plugin.spec.in) and
debian/ (from deb/plugin-template/). NAME.bpf.c and NAME.py are yours to write
(plugins/template/ is a complete example to copy instead).
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEB_TEMPLATE = REPO / "deb" / "plugin-template"
RPM_TEMPLATE = REPO / "rpm" / "xdphooks-plugin.spec.in"


def deb_description(text: str) -> str:
    paras = [textwrap.fill(p, 72) for p in text.strip().split("\n\n")]
    lines = []
    for i, p in enumerate(paras):
        if i:
            lines.append(" .")
        lines += [" " + line for line in p.splitlines()]
    return "\n".join(lines)


def render(name: str, summary: str, description: str, dest: Path, force: bool) -> list[Path]:
    subst = {"@NAME@": name, "@SUMMARY@": summary}
    files: dict[Path, str] = {}
    for src in sorted(DEB_TEMPLATE.rglob("*")):
        if src.is_file():
            rel = Path(str(src.relative_to(DEB_TEMPLATE)).replace("@NAME@", name))
            files[rel] = src.read_text()
    files[Path(f"xdphooks-{name}.spec")] = RPM_TEMPLATE.read_text()
    written = []
    for rel, text in files.items():
        for k, v in subst.items():
            text = text.replace(k, v)
        if rel.name == "control":
            text = text.replace("@DESCRIPTION@", deb_description(description))
        else:
            text = text.replace("@DESCRIPTION@", textwrap.fill(description.strip(), 72))
        out = dest / rel
        if out.exists() and not force and out.read_text() != text:
            raise SystemExit(f"{out} exists and differs (use --force)")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        if rel.name == "rules":
            out.chmod(0o755)
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--summary", required=True)
    ap.add_argument("--description", default="")
    ap.add_argument("--dest", type=Path, help="default: plugins/NAME")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", args.name):
        ap.error("NAME: lower-case letters, digits and '-', at most 32")
    for p in render(args.name, args.summary, args.description or args.summary,
                    args.dest or REPO / "plugins" / args.name, args.force):
        print(p.relative_to(REPO) if p.is_relative_to(REPO) else p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
