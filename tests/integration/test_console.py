"""The console in a real browser (Playwright, Debian's Chromium) on the real stack: the API
over HTTP, a Celery worker process, Postgres, Redis and the emulator behind the official SDKs.

Each test signs in as a person would, through the form, and saves a screenshot of each page
it reaches (`console_support.screenshots()`).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
from playwright.sync_api import Page

from api.console.base import usd
from routing.catalog import get_catalog
from tests.integration.conftest import Stack, make_key
from tests.integration.console_support import admin_key, shot, sign_in

COMPARED = ("claude-haiku-4-5", "gpt-4o-mini", "mistral-small-latest")
BATCH_MODEL = "gpt-4o-mini"
BATCH_DOCUMENTS = 6


def price(value: Decimal | None) -> str:
    return "-" if value is None else f"${value:f}"


def test_sign_in_keeps_the_key_in_an_unreadable_httponly_cookie(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.api_url}/console/jobs")
    page.wait_for_url("**/console/login?next=/console/jobs")
    shot(page, "01-sign-in")
    page.fill("input[name=api_key]", "lq_not-a-key")
    page.click("form button[type=submit]")
    assert "invalid API key" in page.inner_text(".problem")

    page.fill("input[name=api_key]", stack.key)
    page.click("form button[type=submit]")
    page.wait_for_url("**/console/jobs")
    assert "test" in page.inner_text("header .who")
    (session,) = [c for c in page.context.cookies() if c["name"] == "llmqueue_console"]
    assert session["httpOnly"] and session["sameSite"] == "Lax" and session["path"] == "/console"
    assert stack.key not in session["value"] and stack.key[3:20] not in session["value"]
    assert page.evaluate("document.cookie") == ""  # nothing a script can read

    page.click("header button:has-text('Sign out')")
    page.wait_for_url("**/console/login")
    page.goto(f"{stack.api_url}/console/models")
    page.wait_for_url("**/console/login?next=/console/models")


def test_forms_without_the_sessions_csrf_token_are_refused(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=30) as browserless:
        browserless.get("/console/login")
        form_token = browserless.cookies["llmqueue_console_login"]
        refused = browserless.post("/console/login", data={"api_key": stack.key, "login_token": "forged"})
        assert refused.status_code == 403
        signed_in = browserless.post("/console/login", data={"api_key": stack.key, "login_token": form_token})
        assert signed_in.status_code == 303
        body = {"prompt": "hi", "models": list(COMPARED[:2])}
        assert browserless.post("/console/compare", data=body).status_code == 403
        assert browserless.post("/console/compare", data={**body, "csrf_token": "x"}).status_code == 403
        page_html = browserless.get("/console/compare").text
        token = page_html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        accepted = browserless.post("/console/compare", data={**body, "csrf_token": token})
        assert accepted.status_code == 200 and accepted.text.count('class="answer"') == 2
        browserless.cookies.set("llmqueue_console", "tampered", path="/console")
        assert browserless.get("/console/models").status_code == 303


def test_models_page_lists_every_catalog_model_with_its_prices(stack: Stack, page: Page) -> None:
    sign_in(page, stack.api_url, stack.key)
    shot(page, "02-models")
    catalog = get_catalog()
    rows = page.locator("table.models tbody tr[data-model]")
    assert rows.count() == len(catalog.models)
    for model in catalog.models.values():
        row = page.locator(f"tr[data-model='{model.id}']")
        assert row.locator(".price-input").inner_text() == price(model.input_price)
        assert row.locator(".price-output").inner_text() == price(model.output_price)
        assert row.locator(".price-cached").inner_text() == price(model.cached_input_price)
        for deployment in catalog.deployments_of(model.id):
            assert deployment.name in row.inner_text()

    page.select_option("select[name=provider]", "anthropic")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**provider=anthropic*")
    shown = {r.get_attribute("data-model") for r in page.locator("tr[data-model]").all()}
    assert shown == {m.id for m in catalog.models.values() if m.provider == "anthropic"}


def test_compare_streams_three_models_side_by_side_with_their_costs(stack: Stack, page: Page) -> None:
    stack.emulator.configure({p: {"stream_chunk_ms": 40} for p in ("openai", "anthropic", "mistral")})
    sign_in(page, stack.api_url, stack.key, "/console/compare")
    page.fill("textarea[name=prompt]", "Name three reasons to put a queue in front of an LLM provider.")
    page.fill("input[name=max_tokens]", "120")
    for model in COMPARED:
        page.check(f"input[name=models][value='{model}']")
    page.click("#compare-form button[type=submit]")
    # answers arrive piece by piece: a column is seen with some text while still streaming
    page.wait_for_function(
        "[...document.querySelectorAll('.answer.streaming .text')].some(t => t.textContent.length > 0)"
    )
    page.wait_for_function("document.querySelectorAll('.answer .figures .cost').length == 3")
    shot(page, "03-compare")

    columns = page.locator(".answer[data-job]")
    assert columns.count() == 3
    for i in range(3):
        column = columns.nth(i)
        job = stack.job(column.get_attribute("data-job") or "")
        assert job["status"] == "succeeded" and job["model"] == column.get_attribute("data-model")
        assert column.locator(".text").inner_text() == job["result"]
        assert column.locator(".cost").inner_text() == usd(job["cost_usd"], 8)
        assert Decimal(job["cost_usd"]) > 0
        assert column.locator(".latency").inner_text() != "-"
    assert {columns.nth(i).get_attribute("data-model") for i in range(3)} == set(COMPARED)
    strategies = page.locator(".previews tr[data-strategy]")
    assert strategies.count() == 5
    assert all(strategies.nth(i).locator("strong").count() == 1 for i in range(5))  # each picked one


def test_a_document_batch_from_the_browser_runs_to_completion_with_live_progress(
    stack: Stack, page: Page, tmp_path: Path
) -> None:
    # The calls end one by one, half a second apart, so progress has steps to show.
    stack.emulator.configure({BATCH_MODEL: {"script": [{"latency_ms": 500 * n} for n in range(1, 7)]}})
    documents = []
    for n in range(1, BATCH_DOCUMENTS + 1):
        path = tmp_path / f"report-{n}.txt"
        path.write_text(f"Report {n}: the queue absorbed a burst of {n * 100} requests without loss.\n")
        documents.append(str(path))
    sign_in(page, stack.api_url, stack.key, "/console/batches")
    shot(page, "04-batches")
    page.set_input_files("input[name=files]", documents)
    page.fill("textarea[name=prompt]", "One line on this report:\n\n{document}")
    page.select_option("select[name=model]", BATCH_MODEL)
    page.click("#new-batch button[type=submit]")
    page.wait_for_url("**/console/batches/batch_*")
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page
    batch_id = page.url.rsplit("/", 1)[1]
    shot(page, "05-batch-running")

    seen: list[str] = []
    while True:
        box = page.locator(".progress-box")
        status = box.get_attribute("data-status")
        done = box.locator(".done-count").inner_text()
        if not seen or seen[-1] != done:
            seen.append(done)
        if status == "completed":
            break
        assert len(seen) < 100 and status in ("in_progress", "finalizing"), (status, seen)
        page.wait_for_timeout(150)
    assert page.evaluate("window.__sameDocument") is True
    partial = [
        s for s in seen if s not in (f"0 / {BATCH_DOCUMENTS}", f"{BATCH_DOCUMENTS} / {BATCH_DOCUMENTS}")
    ]
    assert partial, f"no step between none and all was shown: {seen}"
    assert seen[-1] == f"{BATCH_DOCUMENTS} / {BATCH_DOCUMENTS}"
    shot(page, "06-batch-completed")

    batch = stack.client.get(f"/v1/document_batches/{batch_id}").json()
    assert batch["counts"]["succeeded"] == BATCH_DOCUMENTS
    assert page.locator(".batch-cost").inner_text() == usd(batch["cost_usd"], 8)
    csv = page.request.get(f"{stack.api_url}/console/batches/{batch_id}/results.csv")
    assert csv.status == 200 and csv.text().count("\n") == BATCH_DOCUMENTS + 1
    assert (
        "report-1.txt" in page.request.get(f"{stack.api_url}/console/batches/{batch_id}/results.jsonl").text()
    )

    # The key has no other jobs: all it spent is this batch, by model and in total.
    page.goto(f"{stack.api_url}/console/spend?by=model")
    shot(page, "07-spend")
    assert page.locator(".spend-total").inner_text() == usd(batch["cost_usd"], 8)
    assert page.locator(f"tr[data-group='{BATCH_MODEL}'] .cost").inner_text() == usd(batch["cost_usd"], 8)
    assert page.locator("svg.chart rect.bar").count() == 1

    page.goto(f"{stack.api_url}/console/jobs?batch_id={batch_id}")
    shot(page, "08-jobs")
    assert page.locator("table.jobs tbody tr").count() == BATCH_DOCUMENTS
    page.locator("table.jobs tbody a").first.click()
    page.wait_for_url("**/console/jobs/job_*")
    shot(page, "09-job")
    assert "One line on this report" in page.inner_text(".messages")
    assert page.locator("svg.chart rect").count() >= 1  # its attempt on the timeline


def test_one_key_cannot_open_another_keys_job(stack: Stack, page: Page) -> None:
    theirs = stack.submit({"messages": [{"role": "user", "content": "private"}], "model": "gpt-4o-mini"})
    job_id = theirs.json()["id"]
    stack.wait(job_id)
    sign_in(page, stack.api_url, make_key("someone-else"))
    response = page.goto(f"{stack.api_url}/console/jobs/{job_id}")
    assert response is not None and response.status == 404
    assert f"no job '{job_id}' for this API key" in page.inner_text(".problem")
    shot(page, "10-another-keys-job")
    for path in (f"/console/jobs/{job_id}/events", f"/console/jobs/{job_id}/card"):
        assert page.request.get(f"{stack.api_url}{path}").status == 404
    page.goto(f"{stack.api_url}/console/jobs")
    assert job_id not in page.content()

    sign_in(page, stack.api_url, stack.key, f"/console/jobs/{job_id}")  # its owner opens it
    assert "private" in page.inner_text(".messages")


def test_admin_pages_are_for_admin_keys_and_the_provider_test_answers(stack: Stack, page: Page) -> None:
    sign_in(page, stack.api_url, stack.key)
    assert page.locator("header nav a:has-text('Providers')").count() == 0
    for path in ("/console/admin/providers", "/console/admin/keys"):
        response = page.goto(f"{stack.api_url}{path}")
        assert response is not None and response.status == 403
    page.context.clear_cookies()

    sign_in(page, stack.api_url, admin_key(), "/console/admin/providers")
    providers = {p.get_attribute("data-provider") for p in page.locator("section.provider").all()}
    assert providers == set(get_catalog().providers())
    row = page.locator("tr:has(code:text-is('openai/gpt-4o-mini'))")
    row.locator("button:has-text('Test')").click()
    row.locator(".test.ok").wait_for()
    assert "(emulator)" in row.locator(".test").inner_text()
    shot(page, "11-providers")
    response = page.goto(f"{stack.api_url}/console/admin/keys")
    assert response is not None and response.status == 200
    shot(page, "12-keys")
