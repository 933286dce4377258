"""Issue 27: the docs' sample outputs are produced by the code.

Every fenced block marked ``<!-- sample: NAME -->`` in docs/*.md and README.md is what
scripts/doc-samples.py prints for sample NAME: the test runs the generator (a real
chain on a real veth, in a private mount namespace) into a copy of the docs and
compares each marked block with the committed one, after the generator's own
normalisation of ids, times and ports (its docstring lists the rules), and with the
figures no run repeats masked (``comparable``: a live view's duration, a profile's
costs). A changed
output fails here with one line: run scripts/doc-samples.py. No placeholder text
(``LIVE_EXCERPT``, ``TODO``, ...) is left in the docs.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import shutil
import subprocess
import sys
import time

from conftest import REPO, require_kernel

_spec = importlib.util.spec_from_file_location("doc_samples", REPO / "scripts" / "doc-samples.py")
ds = importlib.util.module_from_spec(_spec)
sys.modules["doc_samples"] = ds  # its dataclasses look their module up there
_spec.loader.exec_module(ds)

HINT = "— fix: run scripts/doc-samples.py (as root, in the checkout) and commit the docs"
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9]*_EXCERPT\b|\bTODO\b|\bFIXME\b|\bTBD\b|"
                         r"<(?:placeholder|output|insert)[^>]*>|\bXXX\b(?!X)")


def marked(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in ds.MARKED.finditer(text):
        assert m.group("name") not in out, f"sample {m.group('name')} marked twice in one file"
        out[m.group("name")] = m.group("body")
    return out


def committed() -> dict[str, dict[str, str]]:
    return {rel: marked((REPO / rel).read_text()) for rel in ds.DOCS if (REPO / rel).exists()}


def test_every_marker_names_a_sample_and_every_sample_is_marked():
    texts = {rel: (REPO / rel).read_text() for rel in ds.DOCS if (REPO / rel).exists()}
    seen: list[str] = []
    for rel, text in texts.items():
        markers = re.findall(r"(?m)^[ ]*<!-- sample: ([\w-]+) -->[ ]*$", text)
        found = marked(text)
        # a marker whose block the pattern does not take (no fence right after it) is stale
        assert sorted(markers) == sorted(found), f"{rel}: malformed sample marker(s) " \
            f"{sorted(set(markers) - set(found))} — fix: put the fenced block right after it"
        seen += markers
    assert sorted(seen) == ds.sample_names(), \
        f"marked {sorted(seen)}, generated {ds.sample_names()}"
    assert len(seen) >= 20


def test_no_placeholder_text_in_the_docs():
    for rel in ds.DOCS:
        path = REPO / rel
        if not path.exists():
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = PLACEHOLDER.search(line)
            assert not m, f"{rel}:{n}: placeholder {m.group(0)!r} — fix: write the real text"


def test_committed_samples_equal_a_fresh_run(tmp_path):
    require_kernel()
    for rel in ds.DOCS:
        if (REPO / rel).exists():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / rel, tmp_path / rel)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "doc-samples.py"),
                           "--docs-root", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not marked anywhere" not in proc.stdout, proc.stdout
    fresh = {rel: marked((tmp_path / rel).read_text()) for rel in committed()}
    stale = []
    for rel, blocks in committed().items():
        for name, body in blocks.items():
            if ds.comparable(name, fresh[rel][name]) != ds.comparable(name, body):
                diff = "".join(difflib.unified_diff(body.splitlines(True),
                                                    fresh[rel][name].splitlines(True),
                                                    "committed", "fresh run", n=1))
                stale.append(f"{rel}: sample {name} is not what the code prints now {HINT}\n"
                             f"{diff}")
    assert not stale, "\n".join(stale)
    # the generator does what the docs say it does: real outputs, not empty blocks
    assert all(body.strip() for blocks in fresh.values() for body in blocks.values())
    print(f"doc-samples: {sum(map(len, fresh.values()))} blocks in {took:.1f} s")


def test_a_misspelt_marker_is_refused_in_one_line(tmp_path):
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "admin-guide.md"
    doc.write_text("x\n<!-- sample: ag-stauts -->\n```console\nold\n```\n")
    blocks = {name: f"# {name}" for name in ds.sample_names()}
    try:
        ds.rewrite(tmp_path, blocks)
    except SystemExit as e:
        msg = str(e)
    else:
        raise AssertionError("a marker naming no sample was accepted")
    assert "no sample named 'ag-stauts'" in msg and " — fix: use one of " in msg, msg
    assert "\n" not in msg and "old" in doc.read_text()  # one line; the file untouched
    # a known name is rewritten in place, at the marker's indentation
    doc.write_text("  <!-- sample: ag-plan -->\n  ```console\n  old\n  ```\n")
    assert ds.rewrite(tmp_path, blocks) == ["ag-plan"]
    assert doc.read_text() == "  <!-- sample: ag-plan -->\n  ```console\n  # ag-plan\n  ```\n"
