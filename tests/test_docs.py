"""The front page and docs/: the README short, every relative link and anchor pointing at something, and the
config reference the schema's own."""

import re

from dropout_lab import reference

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    heads = [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def broken_links(pages) -> list[str]:
    bad = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{page.name}: {target} (no such heading)")
    return bad


def test_every_relative_link_and_anchor_points_at_something():
    assert not broken_links(PAGES), "\n".join(broken_links(PAGES))


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading\n")
    page.write_text("[ok](there.md#a-heading) [gone](missing.md) [no anchor](there.md#nothing) "
                    "![img](img.png) [web](https://example.org)\n```\n[in code](nowhere.md)\n```\n")
    found = broken_links([page])
    assert len(found) == 3 and "missing.md" in found[0] and "#nothing" in found[1] and "img.png" in found[2]


def test_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 15_000
    for needed in ("make run", "make test", "make gpu-check", "resume-point", "docs/"):
        assert needed in readme


def test_the_config_reference_is_the_schemas():
    page = (ROOT / "docs" / "config.md").read_text()
    assert reference.generated() in page, "docs/config.md is stale: run python -m dropout_lab.reference"
    rows = [line for line in reference.generated().splitlines() if line.startswith("| `")]
    assert len(rows) > 50 and all(not line.endswith("|  |") for line in rows)  # every key says what it is
    assert "| `optim.max_norm` |" in page and "| `conv_keep` |" in page
