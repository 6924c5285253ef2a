"""The newcomer's path (issue 19): a README that fits a screen before "Use it", docs/ pages it links, links that
resolve, the setup block CI runs, and first commands that the `ilf` parser accepts as written."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = ["method", "usage", "models", "training", "benchmarks", "results", "worlds", "compatibility", "architecture"]


def _links(text: str) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http", "#", "mailto"))]


def test_the_first_screen_comes_before_use_it():
    head = README.split("\n## Use it\n")[0]
    assert len(head.splitlines()) <= 80
    for part in ("## Set up", "ilf demo", "```python", "| family (diffusers class) |", "<!-- verdict:begin -->",
                 "<!-- verdict:end -->", "https://arxiv.org/abs/2501.13107", "**Status.**"):
        assert part in head, part
    assert README.count("<!-- verdict:begin -->") == 1 and README.count("<!-- verdict:end -->") == 1
    assert README.index("<!-- verdict:begin -->") < README.index("<!-- verdict:end -->")


def test_the_setup_block_is_the_two_commands_ci_runs():
    block = README.split("<!-- setup:begin -->")[1].split("<!-- setup:end -->")[0]
    commands = [line for line in block.strip().splitlines() if not line.startswith("```")]
    assert commands == ['pip install -e ".[test]"', "HF_HUB_OFFLINE=1 python -m pytest"]


def test_every_docs_page_exists_and_is_linked_from_the_readme():
    for page in PAGES:
        assert (ROOT / "docs" / f"{page}.md").is_file(), page
        assert f"](docs/{page}.md)" in README, page


def test_every_relative_link_resolves():
    broken = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in _links(md.read_text()):
            if not (md.parent / target.split("#")[0]).exists():
                broken.append(f"{md.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_first_commands_parse_as_written():
    from ilf.cli import build_parser

    block = README.split("## Try it")[1].split("```bash")[1].split("```")[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert len(commands) == 3 and all(c.startswith("ilf ") for c in commands)
    parser = build_parser()
    for c in commands:
        args = parser.parse_args(shlex.split(c)[1:])
        assert callable(args.func)


def test_the_showcase_prompt_is_one_the_world_draws():
    prompt = re.search(r'ilf generate --world shapes --feedback shipped --prompt "([^"]+)"', README).group(1)
    table = (ROOT / "docs" / "showcase-prompts.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith(f"| {prompt} |"))
    assert row.rstrip().endswith("| yes |")


def test_the_load_feedback_signature_is_shown_as_it_is():
    import inspect

    import ilf

    shown = re.search(r"`ilf\.load_feedback(\([^`]*\))`", README).group(1)
    parts, star = [], False
    for prm in inspect.signature(ilf.load_feedback).parameters.values():
        if prm.kind is prm.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        parts.append(prm.name + ("" if prm.default is prm.empty else f"={prm.default!r}"))
    assert shown == "(" + ", ".join(parts) + ")"
