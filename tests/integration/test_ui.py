"""The web page in a real browser: Debian's headless Chromium driven by Playwright, against
real uvicorn, the real graph and real Postgres (the models are scripted fakes).

Start a run from the form and watch its tokens arrive, approve it from the inbox and see the
answer and its report; reject with a reason; edit a plan with an error, see the error next
to its field, fix it and see the run go on; the inbox dropping a thread someone else
answered; with keys required, the key prompt and one tenant's threads only. Every page is
saved as a screenshot under the test's temporary directory.
"""

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from app.auth import Keys
from app.settings import Settings
from retrievers.ingest import ingest
from retrievers.service import open_collection
from tests.fakes import MakeModel
from tests.integration.server_harness import RunningServer, running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUESTION = "What is A? What is B?"
WAIT_MS = 30_000

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless (the tests never download a browser of their own)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/setup.sh does)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context (its own session storage) and page, failing on script errors."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    yield opened
    await context.close()
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture(scope="module")
def secured(settings: Settings, embedded_url: str) -> Iterator[RunningServer]:
    """The server with API keys required, on this session's database."""
    with running_server(settings.model_copy(update={"auth": "required"}), embedded_url) as s:
        yield s


async def _shot(page: Page, tmp_path: Path, name: str) -> None:
    await page.screenshot(path=tmp_path / f"{name}.png", full_page=True)


async def _queue(
    api: RunningServer, body: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30, headers=headers) as client:
        response = await client.post("/api/v1/runs", json=body)
    assert response.status_code == 202, response.text
    run: dict[str, Any] = response.json()
    return run


async def _pending_card(page: Page, api: RunningServer, thread_id: str) -> Any:
    await page.goto(f"{api.base_url}/ui/approvals")
    card = page.locator(f'section.pending[data-thread-id="{thread_id}"]')
    await expect(card).to_be_visible()
    return card


def _step(page: Page, step_id: str) -> Any:
    return page.locator(f'#t-steps .step[data-step-id="{step_id}"]')


async def test_a_run_started_from_the_form_streams_is_approved_in_the_inbox_and_answers(
    api: RunningServer, page: Page, make_model: MakeModel, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    # The second model call (step s2) waits for the gate: s1's tokens are on the page while
    # the run still runs.
    spec, model = make_model(
        reply="Step answer {n} arrives token by token.", gate_file=str(gate), gate_from_call=2
    )
    await page.goto(f"{api.base_url}/ui")
    await expect(page).to_have_url(f"{api.base_url}/ui/runs")
    await page.locator("nav").get_by_role("link", name="Start a run").click()
    form = page.locator("#new-run")
    await form.locator("[name=question]").fill(QUESTION)
    await form.locator("[name=approval]").select_option("always")
    await form.locator("[name=mode]").select_option("plan")
    await form.locator("[name=model]").fill(spec)
    await _shot(page, tmp_path, "new-run")
    await form.get_by_role("button", name="Start").click()

    await page.wait_for_url("**/ui/threads/**")
    thread_id = await page.locator("#thread").get_attribute("data-thread-id")
    assert thread_id
    await expect(page.locator("#t-status")).to_have_text("interrupted")
    await expect(page.locator("#t-dag svg g.node")).to_have_count(2)
    await expect(page.locator("#t-approval")).to_contain_text("Approve the plan")

    card = await _pending_card(page, api, thread_id)
    await expect(card).to_contain_text("What is A?")
    await expect(page.locator("#inbox-count")).not_to_have_text("0")
    await _shot(page, tmp_path, "approvals")
    await card.get_by_role("button", name="Approve").click()

    await page.wait_for_url(f"**/ui/threads/{thread_id}")
    s1 = _step(page, "s1")
    await expect(s1.locator("pre.output")).to_contain_text("arrives token by token")
    await expect(page.locator('#t-dag g.node[data-step-id="s2"]')).to_have_class(
        "node node-running"
    )
    await expect(page.locator("#t-status")).to_have_text("running")
    await expect(page.locator("#t-answer-card")).to_be_hidden()
    await _shot(page, tmp_path, "thread-streaming")
    gate.touch()

    await expect(page.locator("#t-status")).to_have_text("done")
    await expect(page.locator("#t-answer")).not_to_be_empty()
    await expect(page.locator('#t-dag g.node[data-step-id="s2"]')).to_have_class("node node-done")
    await expect(page.locator("#t-critic")).to_contain_text("accept")
    await expect(page.locator("#t-report table.report")).to_contain_text("reasoning")
    await expect(page.locator("#t-report svg.chart rect.bar-tokens").first).to_be_visible()
    await expect(page.locator("#t-history")).to_contain_text("v1 (rules)")
    await expect(page.locator("#t-report")).to_contain_text("plan approve by local")
    await _shot(page, tmp_path, "thread-done")
    assert model.calls >= 2

    await page.locator("nav").get_by_role("link", name="Runs").click()
    row = page.locator(f'#runs tr[data-thread-id="{thread_id}"]')
    await expect(row).to_contain_text("done")
    await expect(row).to_contain_text(QUESTION)
    await _shot(page, tmp_path, "runs")
    await page.locator("#status-filter").select_option("rejected")
    await expect(page).to_have_url(f"{api.base_url}/ui/runs?status=rejected")
    await expect(row).to_have_count(0)
    await page.locator("#status-filter").select_option("done")
    await expect(row).to_be_visible()


async def test_a_rejection_with_a_reason_and_a_thread_answered_elsewhere_leaving_the_inbox(
    api: RunningServer, page: Page, make_model: MakeModel, tmp_path: Path
) -> None:
    spec, _ = make_model(reply="Not needed.")
    body = {"question": QUESTION, "model": spec, "approval": "always", "mode": "plan"}
    rejected = await _queue(api, body)
    elsewhere = await _queue(api, body)
    card = await _pending_card(page, api, rejected["thread_id"])
    other = page.locator(f'section.pending[data-thread-id="{elsewhere["thread_id"]}"]')
    await expect(other).to_be_visible()

    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        answered = await client.post(f"/api/v1/approvals/{elsewhere['thread_id']}/approve")
    assert answered.status_code == 200, answered.text
    await expect(other).to_have_count(0)

    reason = f"too costly ({uuid.uuid4().hex[:6]})"
    await card.locator("[name=reason]").fill(reason)
    await card.get_by_role("button", name="Reject").click()
    await page.wait_for_url(f"**/ui/threads/{rejected['thread_id']}")
    await expect(page.locator("#t-status")).to_have_text("rejected")
    await expect(page.locator("#thread")).to_contain_text(reason)
    await expect(_step(page, "s1")).to_contain_text("not run")
    await _shot(page, tmp_path, "thread-rejected")


async def test_the_inbox_shows_each_deadline_and_flags_an_escalated_gate(
    api: RunningServer, page: Page, make_model: MakeModel, tmp_path: Path
) -> None:
    """A gate with an hour to wait shows the time left and what happens then; a gate whose
    one-second deadline escalates it stays in the inbox, flagged, its deadline passed."""
    spec, _ = make_model(reply="Later.")
    body = {"question": QUESTION, "model": spec, "approval": "always", "mode": "plan"}
    later = await _queue(api, {**body, "approval_timeout": "1h"})
    soon = await _queue(api, {**body, "approval_timeout": 1, "approval_timeout_action": "escalate"})
    card = await _pending_card(page, api, later["thread_id"])
    await expect(card.locator(".time-left")).to_contain_text("left (then reject)")
    await expect(card.locator(".status-escalated")).to_be_hidden()
    await expect(card.locator(".deadline")).to_contain_text("then reject")

    flagged = page.locator(f'section.pending[data-thread-id="{soon["thread_id"]}"]')
    await expect(flagged.locator(".status-escalated")).to_be_visible()
    await expect(flagged.locator(".time-left")).to_have_text("· deadline passed")
    await _shot(page, tmp_path, "approvals-deadlines")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        for run in (later, soon):  # leave the inbox as it was found
            answered = await client.post(f"/api/v1/approvals/{run['thread_id']}/reject")
            assert answered.status_code == 200, answered.text


async def test_an_edited_plan_shows_each_error_next_to_its_field_until_it_is_fixed(
    api: RunningServer, page: Page, make_model: MakeModel, tmp_path: Path
) -> None:
    spec, _ = make_model(reply="Edited answer {n}.")
    run = await _queue(api, {"question": QUESTION, "model": spec, "approval": "always"})
    card = await _pending_card(page, api, run["thread_id"])
    await card.get_by_role("button", name="Edit the plan").click()
    rows = card.locator(".step-row")
    await expect(rows).to_have_count(2)
    submit = card.get_by_role("button", name="Run the edited plan")

    await rows.nth(0).locator("[name=instruction]").fill("")
    await submit.click()
    await expect(rows.nth(0).locator('.field-error[data-for="instruction"]')).to_contain_text(
        "at least 1 character"
    )
    await rows.nth(0).locator("[name=instruction]").fill("Say what A is, briefly.")
    await rows.nth(1).locator("[name=depends_on]").fill("s9")
    await submit.click()
    depends = rows.nth(1).locator('.field-error[data-for="depends_on"]')
    await expect(depends).to_contain_text("unknown step 's9'")
    await expect(rows.nth(0).locator('.field-error[data-for="instruction"]')).to_be_empty()
    await _shot(page, tmp_path, "plan-editor-error")

    await rows.nth(1).locator("[name=depends_on]").fill("s1")
    await submit.click()
    await page.wait_for_url(f"**/ui/threads/{run['thread_id']}")
    await expect(page.locator("#t-status")).to_have_text("done")
    await expect(page.locator("#t-history")).to_contain_text("(edit)")
    await expect(page.locator("#t-dag path.edge")).to_have_count(1)
    await expect(_step(page, "s1")).to_contain_text("Say what A is, briefly.")
    await _shot(page, tmp_path, "thread-edited")


async def test_a_rag_step_s_citations_open_onto_the_quoted_chunk(
    api: RunningServer,
    page: Page,
    settings: Settings,
    embedded_url: str,
    make_model: MakeModel,
    tmp_path: Path,
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pandas.md").write_text(
        "Giant pandas eat bamboo almost exclusively: shoots, stems and leaves, "
        "up to 38 kilograms a day."
    )
    collection = f"ui_{uuid.uuid4().hex[:10]}"
    async with open_collection(settings, collection, create=True, url=embedded_url) as (
        store,
        embedder,
    ):
        await ingest(store, embedder, [docs], chunk_size=500, chunk_overlap=50)
    spec, _ = make_model(reply="They eat bamboo [1].")
    run = await _queue(
        api,
        {
            "question": "What do giant pandas eat?",
            "model": spec,
            "approval": "never",
            "collection": collection,
        },
    )
    await page.goto(f"{api.base_url}/ui/threads/{run['thread_id']}")
    await expect(page.locator("#t-status")).to_have_text("done")
    citation = page.locator("#t-steps .step .citations details").first
    await expect(citation).to_contain_text("pandas.md")
    quote = citation.locator("blockquote.quote")
    await expect(quote).to_be_hidden()
    await citation.locator("summary").first.click()
    await expect(quote).to_contain_text("bamboo")
    await _shot(page, tmp_path, "thread-citations")


async def test_with_keys_required_the_page_asks_for_one_and_shows_its_tenant_only(
    secured: RunningServer, page: Page, keys: Keys, make_model: MakeModel, tmp_path: Path
) -> None:
    spec, _ = make_model(reply="Tenant answer.")
    body = {"question": QUESTION, "model": spec, "approval": "always", "mode": "plan"}
    _, ours = await keys.create(f"ui-{uuid.uuid4().hex[:6]}", ["runs", "approvals"])
    _, theirs = await keys.create(f"ui-{uuid.uuid4().hex[:6]}", ["runs", "approvals"])
    mine = await _queue(secured, body, {"Authorization": f"Bearer {ours}"})
    hidden = await _queue(secured, body, {"Authorization": f"Bearer {theirs}"})

    await page.goto(f"{secured.base_url}/ui/approvals")
    dialog = page.locator("#key-dialog")
    await expect(dialog).to_be_visible()
    await page.locator("#key-input").fill("agk_0000000000000000_not-a-real-key-at-all")
    await page.get_by_role("button", name="Use this key").click()
    await expect(page.locator("#key-error")).to_contain_text("unknown API key")
    await _shot(page, tmp_path, "key-prompt")
    await page.locator("#key-input").fill(ours)
    await page.get_by_role("button", name="Use this key").click()
    await expect(dialog).to_be_hidden()

    pending = page.locator("section.pending")
    await expect(
        pending.and_(page.locator(f'[data-thread-id="{mine["thread_id"]}"]'))
    ).to_be_visible()
    await expect(pending).to_have_count(1)
    await (
        page.locator("nav").get_by_role("link", name="Runs").click()
    )  # the key stays in the session
    await expect(page.locator(f'#runs tr[data-thread-id="{mine["thread_id"]}"]')).to_be_visible()
    await expect(page.locator("#runs tbody tr")).to_have_count(1)
    await expect(page.locator("#key-dialog")).to_be_hidden()
    await _shot(page, tmp_path, "runs-tenant")

    await page.goto(f"{secured.base_url}/ui/threads/{hidden['thread_id']}")
    await expect(page.locator("#t-error")).to_contain_text("unknown thread")
    await expect(page.locator("#t-dag svg")).to_have_count(0)
