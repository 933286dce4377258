"""The man page, the shell completions and the docs keep up with the CLI.

The parser in xdphooks/cli.py is the reference: every command and every long
option must be documented in man/xdphooks.8 (under its command's section) and
offered by both completion scripts (under its command), and the completions
must offer nothing the parser does not know. Fast, no root, no kernel.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from xdphooks import cli

REPO = Path(__file__).resolve().parent.parent
MAN = REPO / "man" / "xdphooks.8"
BASH = REPO / "completions" / "xdphooks.bash"
ZSH = REPO / "completions" / "_xdphooks"
GLOBAL = ""  # key of the top-level parser in the maps below


# --- the reference: what the parser accepts --------------------------------------


def _long_options(parser: argparse.ArgumentParser) -> set[str]:
    out = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        out |= {o for o in action.option_strings if o.startswith("--")}
    return out


def cli_options() -> dict[str, set[str]]:
    """{"": global long options, COMMAND: its long options (without --help)}."""
    parser = cli._parser()
    out = {GLOBAL: _long_options(parser)}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sp in sub.choices.items():
        out[name] = _long_options(sp) - {"--help"}
    return out


OPTIONS = cli_options()
COMMANDS = sorted(c for c in OPTIONS if c != GLOBAL)
OPTION_RE = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _mentions(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def test_parser_walk_finds_everything():
    # Guards the walk itself: if cli.py changes shape, fail here, not vacuously below.
    assert {"reconcile", "plan", "status", "teardown", "doctor", "trace", "watch",
            "events"} <= set(COMMANDS)
    assert {"--root", "--bpffs", "--disable", "--help"} <= OPTIONS[GLOBAL]
    assert "--takeover" in OPTIONS["reconcile"]


# --- man page --------------------------------------------------------------------


def man_sections() -> dict[str, str]:
    """Man source as plain text, split into {"": global part, COMMAND: its .SS section}."""
    src = MAN.read_text()
    text = re.sub(r"\\f[BIRP]|\\&|\\\|", "", src).replace("\\-", "-")
    out = {GLOBAL: ""}
    current = GLOBAL
    for line in text.splitlines():
        m = re.match(r"^\.S([SH])\s+(.*)$", line)
        if m:
            title = m.group(2).strip().strip('"')
            if m.group(1) == "S" and title in OPTIONS:
                current = title
                out[current] = ""
                continue
            current = GLOBAL  # any other section belongs to the whole page
        out[current] += line + "\n"
    return out


def test_man_documents_every_command_and_option():
    sections = man_sections()
    whole = "".join(sections.values())
    missing = [f"section .SS {c}" for c in COMMANDS if c not in sections]
    missing += [f"global {o}" for o in sorted(OPTIONS[GLOBAL]) if not _mentions(whole, o)]
    for cmd in COMMANDS:
        body = sections.get(cmd, "")
        missing += [f"{cmd} {o}" for o in sorted(OPTIONS[cmd]) if not _mentions(body, o)]
    assert not missing, f"{MAN.relative_to(REPO)} does not document: {', '.join(missing)}"


def test_man_renders_without_warnings():
    man = shutil.which("man")
    if man is None:
        pytest.skip("MAN PAGE RENDERING NOT CHECKED: man(1) is missing "
                    "(apt-get install man-db groff-base)")
    proc = subprocess.run([man, "--warnings", "-l", str(MAN)], capture_output=True, text=True,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
                               "MANWIDTH": "80", "MAN_DISABLE_SECCOMP": "1"}, timeout=60)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    assert "reconcile" in proc.stdout


# --- completions -----------------------------------------------------------------


def bash_sections() -> dict[str, str]:
    text = BASH.read_text()
    out = {GLOBAL: re.search(r'global_opts="([^"]*)"', text).group(1)}
    out["commands"] = re.search(r'commands="([^"]*)"', text).group(1)
    for m in re.finditer(r'^\s*([a-z]+)\)\s*opts="([^"]*)"', text, re.M):
        out[m.group(1)] = m.group(2)
    return out


def zsh_sections() -> dict[str, str]:
    text = ZSH.read_text()
    top = re.search(r"_arguments -C(.*?)\n\n", text, re.S)
    out = {GLOBAL: top.group(1) if top else ""}
    out["commands"] = " ".join(re.findall(r"^\s*['\"]([a-z]+):", text, re.M))
    args = text[text.index("case $words[1] in"):]
    for m in re.finditer(r"^\s*([a-z]+)\)\n(.*?);;", args, re.M | re.S):
        out[m.group(1)] = m.group(2)
    return out


@pytest.mark.parametrize("script", ["bash", "zsh"])
def test_completion_matches_parser(script):
    sections = bash_sections() if script == "bash" else zsh_sections()
    problems = []
    offered = set(sections["commands"].split())
    problems += [f"command {c} not offered" for c in COMMANDS if c not in offered]
    problems += [f"unknown command {c} offered" for c in sorted(offered - set(COMMANDS))]
    for key in [GLOBAL] + COMMANDS:
        where = key or "global"
        if key not in sections:
            problems.append(f"no option list for {where}")
            continue
        have = set(OPTION_RE.findall(sections[key])) - {"--help"}
        want = OPTIONS[key] - {"--help"}
        problems += [f"{where}: {o} missing" for o in sorted(want - have)]
        problems += [f"{where}: {o} is not an option of the CLI" for o in sorted(have - want)]
    if not _mentions(sections[GLOBAL], "--help"):
        problems.append("global: --help missing")
    path = BASH if script == "bash" else ZSH
    assert not problems, f"{path.relative_to(REPO)}: {'; '.join(problems)}"


def test_bash_completion_syntax():
    proc = subprocess.run(["bash", "-n", str(BASH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bash_completion_completes():
    # Source it and ask for a command's options the way bash does on TAB.
    script = (f"source {BASH}\n"
              "COMP_WORDS=(xdphooks status --); COMP_CWORD=2; _xdphooks\n"
              'printf "%s\\n" "${COMPREPLY[@]}"\n'
              "COMP_WORDS=(xdphooks --root /x re); COMP_CWORD=3; _xdphooks\n"
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", script],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == (OPTIONS["status"] | {"--help"}) | {"reconcile"}


def test_zsh_completion_syntax():
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("ZSH COMPLETION SYNTAX NOT CHECKED: zsh is missing (apt-get install zsh)")
    proc = subprocess.run([zsh, "-n", str(ZSH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- links in the docs -----------------------------------------------------------

DOCS = [REPO / "README.md", REPO / "SECURITY.md", *sorted((REPO / "docs").glob("*.md"))]
LINK_RE = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc):
    assert doc.exists(), f"{doc.relative_to(REPO)} is missing"
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)  # code blocks are not links
    broken = []
    for target in LINK_RE.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # URL, mailto:, in-page anchor
        path = target.split("#", 1)[0]
        if not (doc.parent / path).exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)}: broken links {broken}"


def test_readme_lists_the_documentation():
    readme = (REPO / "README.md").read_text()
    for rel in ("docs/plugin-guide.md", "docs/admin-guide.md", "docs/architecture.md",
                "docs/protocol.md", "docs/status-json.md", "SECURITY.md", "man/xdphooks.8"):
        assert f"]({rel})" in readme, f"README.md does not link {rel}"
