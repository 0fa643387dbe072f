"""The commands the README and the docs site tell a user to type, read from the pages themselves.

A page marks a block it promises works as printed with a comment directly before it:

    <!-- as-typed: scoring (tests/test_scoring_as_typed.py runs every line, in the venv `make run` makes) -->
    ```bash
    ...
    ```

The name after `as-typed:` is the block's; the rest of the comment says which test runs it. The tests take
their lines from here (never a copy), so a page and what is tested cannot drift apart, and
tests/unit/test_docs.py checks that every marked block is taken by some test. The lines run in the venv
`make run` makes (`TypedStore.shell` in tests/conftest.py sources .venv/bin/activate, and `make test` keeps
the development packages in .venv-dev), unless the page says otherwise.
"""

import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The pages a user reads: the front door, the docs site, and the two rooms' own READMEs the site links to.
# (docs/reference/ links to the last two: each page is read once, under its real path.)
PAGES = list(
    dict.fromkeys(
        page.resolve()
        for page in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
        + [REPO_ROOT / "server" / "README.md", REPO_ROOT / "kubernetes" / "README.md"]
    )
)
# The same shape /work/shared/hooks/before-stop and the docs' authors use: the marker, then the block.
MARKED_BLOCK = re.compile(
    r"^[ \t]*<!--\s*as-typed:\s*(?P<name>[\w.-]+)(?P<note>[^>]*)-->\s*```(?:bash|sh)\n(?P<body>.*?)```",
    re.S | re.M,
)


@dataclass(frozen=True)
class TypedBlock:
    name: str
    page: Path
    lines: tuple[str, ...]  # each command as printed, its trailing `  # comment` cut off

    def line(self, prefix: str) -> str:
        """The one line of the block that starts with `prefix` (a whole word), as printed."""
        word = re.escape(prefix.rstrip()) + r"( |$)"
        matches = [line for line in self.lines if re.match(word, line)]
        assert len(matches) == 1, f"{self.where}: the block has {matches} for {prefix!r}"
        return matches[0]

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)} (as-typed: {self.name})"


def command_lines(body: str) -> tuple[str, ...]:
    """A block's commands: blank lines dropped, a comment after two spaces cut, indentation stripped."""
    return tuple(line.split("  #")[0].strip() for line in body.splitlines() if line.strip())


def all_blocks(pages: list[Path] | None = None) -> list[TypedBlock]:
    """Every marked block of the pages, in page order."""
    blocks = []
    for page in PAGES if pages is None else pages:
        if page.exists():
            for match in MARKED_BLOCK.finditer(page.read_text()):
                blocks.append(TypedBlock(match["name"], page, command_lines(match["body"])))
    return blocks


def typed_block(name: str) -> TypedBlock:
    """The marked block called `name`: exactly one in all the pages."""
    found = [block for block in all_blocks() if block.name == name]
    assert len(found) == 1, f"as-typed block {name!r}: found {[b.where for b in found]} (want exactly one)"
    return found[0]


def make_dry_run(line: str) -> str:
    """What a `make ...` line, as a page prints it, would run (make -n: nothing runs; a recipe line with
    $(MAKE) still recurses, dry too). Not the variables of a `make test` the caller may run under: make
    passes them on to sub-makes."""
    make, *arguments = shlex.split(line)
    assert make == "make", line
    env = {
        k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTEST_ARGS")
    }
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", *arguments],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
