"""Every page works under the Content-Security-Policy, with nothing it blocks.

The `page` fixture fails a test on any CSP message in the console; these visit what the other
browser tests do not (the API docs, the admin, the settings pages) and check the header itself.
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import csp_violations

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_every_page_sends_the_policy(page, live_server, login):
    login()
    for path in ("/", "/jobs/new/", "/keys/", "/settings/", "/api/docs/"):
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy, path
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, path


def test_the_swagger_docs_render_under_the_policy(page, live_server, login):
    login()
    page.goto(f"{live_server.url}/api/docs/")
    page.get_by_text("/api/v1/jobs", exact=False).first.wait_for()
    page.locator(".opblock").first.click()  # expanding an operation uses Swagger UI's scripts
    page.locator(".opblock-body").first.wait_for()


def test_the_docs_fetch_nothing_from_elsewhere_and_redoc_leads_there(page, live_server, login):
    login()
    outside: list[str] = []
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith(live_server.url) else None,
    )
    page.goto(f"{live_server.url}/api/redoc/")
    assert page.url == f"{live_server.url}/api/docs/"
    page.get_by_text("/api/v1/jobs", exact=False).first.wait_for()
    page.wait_for_load_state("networkidle")
    assert [u for u in outside if not u.startswith(("data:", "blob:"))] == []


def test_the_admin_works_under_the_policy(browser, live_server, media, django_user_model):
    from tests.conftest import PASSWORD

    django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)
    context = browser.new_context()
    page = context.new_page()
    violations = csp_violations(page)
    page.goto(f"{live_server.url}/admin/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/admin/")
    for path in ("/admin/auth/user/", "/admin/auth/user/add/", "/admin/apikeys/apikey/"):
        assert page.goto(f"{live_server.url}{path}").status == 200, path
        page.wait_for_load_state("networkidle")
    context.close()
    assert violations == [], violations
