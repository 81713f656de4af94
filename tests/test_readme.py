"""The README and docs/ as a reader meets them: every relative link leads to a file (and
heading) inside the repository, and the README's model-server recipe works as written."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import httpx
import pytest

from tests.conftest import upload_file, wait_terminal
from tests.mock_llm import DEFAULT_REPLY, MockLLM
from tests.stack import ROOT, Proc, Stack, free_port, run_docqa, unique_id, wait_http

PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
# [text](target) and [text](target "title"), not images' alt text; <https://...> autolinks are
# absolute and need no check.
_INLINE = re.compile(r"(?<!\!)\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"(?m)^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_FENCE = re.compile(r"(?ms)^(```|~~~).*?^\1")


def _links(page: Path) -> list[str]:
    text = _FENCE.sub("", page.read_text())  # links inside code blocks are not links
    text = re.sub(r"`[^`\n]*`", "", text)
    return _INLINE.findall(text) + _REFERENCE.findall(text)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats -1, -2."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"(?m)^#{1,6}\s+(.+?)\s*#*\s*$", _FENCE.sub("", page.read_text())):
        text = re.sub(r"`|\*\*|__|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
        slug = "".join(c for c in text if c in "-_ " or unicodedata.category(c)[0] in "LN").replace(
            " ", "-"
        )
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_the_pages_exist() -> None:
    assert ROOT / "README.md" in PAGES
    assert len(PAGES) > 5, "the reference lives in docs/"


def test_the_readme_fits_a_few_screens() -> None:
    assert len((ROOT / "README.md").read_bytes()) < 12 * 1024


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves_inside_the_repository(page: Path) -> None:
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # https:, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        try:
            resolved.relative_to(ROOT)
        except ValueError:
            broken.append(f"{target}: outside the repository")
            continue
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, broken


def test_the_link_checker_catches_what_it_should(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        '# A title\n## Logs, for people\n[a](x.md) [c](../up.md "t")\n'
        "![img](pic.png) `[not](code.md)`\n```\n[not](fenced.md)\n```\n[r]: ref.md\n"
    )
    assert _links(page) == ["x.md", "../up.md", "ref.md"]
    assert _anchors(page) == {"a-title", "logs-for-people"}


def _recipe() -> dict[str, str]:
    """The `DOCQA_*=...` settings of the README's Ollama recipe, as written there."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- recipe: ollama[^>]*-->\s*```sh\n(.*?)```", readme, re.DOTALL)
    assert block, "the README has the recipe, marked for this test"
    settings = dict(re.findall(r"\b(DOCQA_[A-Z_]+)=(\S+)", block.group(1)))
    assert set(settings) == {"DOCQA_LLM_BASE_URL", "DOCQA_LLM_MODEL"}, settings
    return settings


async def test_the_readmes_model_server_recipe_answers_through_the_model(
    stack: Stack,
    client: httpx.AsyncClient,
    mock_llm: MockLLM,
    fresh_pdf: Path,
    tmp_path: Path,
) -> None:
    # The recipe's settings as written, with only Ollama's address swapped for the stand-in
    # OpenAI-compatible server's: docqa must ask that model, by the name in the recipe.
    if not stack.local:
        pytest.skip("starts an API of its own on the test's database")
    recipe = _recipe()
    ollama = httpx.URL(recipe["DOCQA_LLM_BASE_URL"])
    assert (ollama.host, ollama.port, ollama.path) == ("127.0.0.1", 11434, "/v1")
    mock = httpx.URL(mock_llm.base_url)
    base_url = str(ollama.copy_with(host=mock.host, port=mock.port))
    env = stack.env | recipe | {"DOCQA_LLM_BASE_URL": base_url, "DOCQA_WORKER": "false"}
    env["DOCQA_LOCAL_PORT"] = str(free_port())
    proc = Proc(["serve", "--port", env["DOCQA_LOCAL_PORT"]], env, tmp_path / "serve.log")
    proc.start()
    try:
        url = f"http://127.0.0.1:{env['DOCQA_LOCAL_PORT']}"
        wait_http(f"{url}/readyz", proc)
        doc_id = unique_id("recipe")
        assert (await upload_file(client, fresh_pdf, document_id=doc_id)).status_code == 200
        assert (await wait_terminal(client, doc_id))["status"] == "ready"
        key = httpx.URL(stack.base_url).username or None
        auth = ["--api-key", key] if key else []
        question = f"What is {doc_id} about?"
        answer = run_docqa("ask", question, "--doc", doc_id, *auth, env=env)
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.startswith(DEFAULT_REPLY), "found on DOCQA_LOCAL_PORT, model wrote"
        seen = [r["body"] for r in await mock_llm.requests(question)]
        assert seen
        assert {body["model"] for body in seen} == {recipe["DOCQA_LLM_MODEL"]}
        status = run_docqa("status", "--json", *auth, env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout)["llm"]["model"] == recipe["DOCQA_LLM_MODEL"]
    finally:
        proc.stop()
