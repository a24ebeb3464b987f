"""Key management over real HTTP (/v1/keys, admin keys only) and from the CLI on a fresh
database (`llmqueue keys create --admin` makes the first admin; the secret alone on stdout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal

import httpx
import psycopg
import pytest

from tests.conftest import PG_ADMIN_URL
from tests.integration.conftest import Stack


def test_a_member_cannot_manage_keys(stack: Stack) -> None:
    for method, path in (
        ("POST", "/v1/keys"),
        ("GET", "/v1/keys"),
        ("GET", "/v1/keys/key_x"),
        ("POST", "/v1/keys/key_x/revoke"),
        ("PUT", "/v1/keys/key_x/budget"),
        ("PATCH", "/v1/keys/key_x"),
    ):
        r = stack.client.request(method, path, json={"name": "x"} if method == "POST" else {})
        assert r.status_code == 403, (method, path, r.text)
        error = r.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "permission_error",
            "admin_required",
            "Authorization",
        )
        assert "llmqueue keys create --admin" in error["message"]


def test_create_shows_the_secret_once_and_the_new_key_works(admin_stack: Stack) -> None:
    r = admin_stack.client.post(
        "/v1/keys",
        json={
            "name": "etl",
            "budget": {"limit_usd": "5", "period": "month", "soft_limit_usd": "4"},
            "rpm": 60,
            "tpm": 100000,
            "alert_webhook_url": "https://example.com/alerts",
        },
    )
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created.pop("secret")
    assert secret.startswith("lq_") and created["prefix"] == secret[:10]
    assert created["role"] == "member" and created["active"] is True
    assert (created["rpm"], created["tpm"]) == (60, 100000)
    budget = created["budget"]
    assert (Decimal(budget["limit_usd"]), budget["period"], Decimal(budget["soft_limit_usd"])) == (
        5,
        "month",
        4,
    )
    assert Decimal(budget["remaining_usd"]) == 5 and budget["resets_at"] is not None

    listed = admin_stack.client.get("/v1/keys").json()["data"]
    assert secret not in json.dumps(listed)  # never again
    assert {k["id"]: k for k in listed}[created["id"]] == created
    assert admin_stack.client.get(f"/v1/keys/{created['id']}").json() == created

    new = Stack(admin_stack.api_url, secret, admin_stack.emulator)
    own = new.client.get("/v1/keys/self")
    assert own.status_code == 200 and own.json()["id"] == created["id"]


def test_bad_key_fields_name_the_field(admin_stack: Stack) -> None:
    cases = [
        ({"name": ""}, "name"),
        ({"name": "x", "role": "owner"}, "role"),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "alert_webhook_url": "ftp://x"}, "alert_webhook_url"),
        ({"name": "x", "budget": {"limit_usd": "-1"}}, "budget.limit_usd"),
        ({"name": "x", "budget": {"limit_usd": "1", "period": "year"}}, "budget.period"),
        ({"name": "x", "budget": {"limit_usd": "1", "soft_limit_usd": "2"}}, "budget"),
    ]
    for body, param in cases:
        r = admin_stack.client.post("/v1/keys", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["param"] == param, (body, r.json())
    assert admin_stack.client.get("/v1/keys/key_nope").json()["error"]["code"] == "key_not_found"


def test_set_budget_patch_and_revoke(admin_stack: Stack) -> None:
    created = admin_stack.client.post("/v1/keys", json={"name": "temp"}).json()
    key_id, secret = created["id"], created["secret"]
    member = Stack(admin_stack.api_url, secret, admin_stack.emulator)

    r = admin_stack.client.put(f"/v1/keys/{key_id}/budget", json={"limit_usd": "2.5", "period": "day"})
    assert r.status_code == 200 and r.json()["budget"]["period"] == "day"
    r = admin_stack.client.post(f"/v1/keys/{key_id}/budget", json={"limit_usd": "3"})  # POST too
    assert Decimal(r.json()["budget"]["limit_usd"]) == 3 and r.json()["budget"]["period"] == "lifetime"
    r = admin_stack.client.put(f"/v1/keys/{key_id}/budget", json={"limit_usd": None})
    assert r.status_code == 200 and r.json()["budget"] is None

    r = admin_stack.client.patch(f"/v1/keys/{key_id}", json={"rpm": 10, "name": "renamed"})
    assert (r.json()["rpm"], r.json()["name"], r.json()["tpm"]) == (10, "renamed", None)
    r = admin_stack.client.patch(f"/v1/keys/{key_id}", json={"rpm": None})
    assert r.json()["rpm"] is None and r.json()["name"] == "renamed"
    r = admin_stack.client.patch(f"/v1/keys/{key_id}", json={"role": "admin"})
    assert r.json()["role"] == "admin"

    assert member.client.get("/v1/jobs").status_code == 200
    r = admin_stack.client.post(f"/v1/keys/{key_id}/revoke")
    assert r.status_code == 200 and r.json()["active"] is False and r.json()["revoked_at"]
    assert key_id not in {
        k["id"] for k in admin_stack.client.get("/v1/keys?include_revoked=false").json()["data"]
    }


def test_the_last_admin_cannot_be_revoked_or_demoted(admin_stack: Stack) -> None:
    keys = admin_stack.client.get("/v1/keys").json()["data"]
    own_id = admin_stack.client.get("/v1/keys/self").json()["id"]
    # Leave this admin the only active one: revoke every other active admin from the earlier tests.
    for key in keys:
        if key["role"] == "admin" and key["active"] and key["id"] != own_id:
            assert admin_stack.client.post(f"/v1/keys/{key['id']}/revoke").status_code == 200
    for method, path, body in (
        ("POST", f"/v1/keys/{own_id}/revoke", None),
        ("PATCH", f"/v1/keys/{own_id}", {"role": "member"}),
    ):
        r = admin_stack.client.request(method, path, json=body)
        assert r.status_code == 409, r.text
        assert (
            r.json()["error"]["code"] == "last_admin"
            and "keys create --admin" in r.json()["error"]["message"]
        )
    assert admin_stack.client.get("/v1/keys/self").json()["active"] is True


# ---------------------------------------------------------------- the CLI, on a fresh database


@pytest.fixture
def fresh_database() -> Iterator[dict[str, str]]:
    name = f"llmq_keys_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {**os.environ, "DATABASE_URL": f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", "COLUMNS": "200"}
    try:
        yield env
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def keys_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmqueue.cli", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_on_an_empty_database(fresh_database: dict[str, str]) -> None:
    env = fresh_database
    unmigrated = keys_cli(env, "list")
    assert unmigrated.returncode == 2 and "llmqueue migrate" in unmigrated.stderr
    assert (
        subprocess.run(
            [sys.executable, "-m", "llmqueue.cli", "migrate"], env=env, capture_output=True
        ).returncode
        == 0
    )

    first = keys_cli(env, "create", "--name", "ops", "--admin")
    assert first.returncode == 0, first.stderr
    secret = first.stdout.strip()
    assert first.stdout == secret + "\n" and secret.startswith("lq_")  # the secret alone on stdout
    assert "admin key" in first.stderr and secret not in first.stderr

    member = keys_cli(
        env,
        "create",
        "--name",
        "app",
        "--budget",
        "10",
        "--period",
        "week",
        "--soft-limit",
        "8",
        "--rpm",
        "30",
    )
    assert member.returncode == 0, member.stderr
    listed = json.loads(keys_cli(env, "list", "--json").stdout)
    assert [(k["name"], k["role"]) for k in listed] == [("ops", "admin"), ("app", "member")]
    app = listed[1]
    budget = app["budget"]
    assert (Decimal(budget["limit_usd"]), budget["period"], Decimal(budget["soft_limit_usd"])) == (
        10,
        "week",
        8,
    )
    assert app["rpm"] == 30 and secret not in json.dumps(listed)
    table = keys_cli(env, "list").stdout
    assert "ops" in table and "$0 of $10 week" in table

    changed = keys_cli(env, "set-budget", app["id"], "--limit", "20", "--period", "month")
    assert changed.returncode == 0 and "$20 month" in changed.stderr
    removed = keys_cli(env, "set-budget", app["id"], "--none")
    assert removed.returncode == 0 and "no budget" in removed.stderr
    assert json.loads(keys_cli(env, "list", "--json").stdout)[1]["budget"] is None

    last = keys_cli(env, "revoke", listed[0]["id"])
    assert last.returncode == 2 and "last active admin" in last.stderr
    assert keys_cli(env, "revoke", app["id"]).returncode == 0
    assert json.loads(keys_cli(env, "list", "--json", "--active").stdout)[0]["name"] == "ops"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("create", "--budget", "ten"), "--budget/--limit must be a non-negative amount"),
        (("create", "--budget", "1", "--soft-limit", "2"), "--soft-limit 2 is above the budget 1"),
        (("create", "--period", "day"), "need a budget"),
        (("create", "--alert-webhook", "example.com"), "--alert-webhook must be an http(s) URL"),
        (("set-budget", "key_nope", "--limit", "1"), "no API key 'key_nope'"),
        (("set-budget", "key_nope"), "either --limit USD"),
        (("revoke", "key_nope"), "no API key 'key_nope'"),
    ],
)
def test_cli_mistakes_name_the_fix(database: str, args: tuple[str, ...], says: str) -> None:
    result = keys_cli({**os.environ, "COLUMNS": "200"}, *args)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert result.stdout == ""


def test_the_openapi_lists_the_key_routes(stack: Stack) -> None:
    paths = httpx.get(f"{stack.api_url}/openapi.json").json()["paths"]
    assert {"post", "get"} <= set(paths["/v1/keys"])
    assert "put" in paths["/v1/keys/{key_id}/budget"] and "patch" in paths["/v1/keys/{key_id}"]
    assert "post" in paths["/v1/keys/{key_id}/revoke"] and "get" in paths["/v1/spend"]
