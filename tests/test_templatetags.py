"""{% load presence %}: the live dot (its state from the backend) and the client's scripts."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.template import Context, Template
from django.test import RequestFactory, override_settings

from django_presence.services import user_online_service

pytestmark = pytest.mark.django_db(transaction=True)


def render(source: str, **context: Any) -> str:
    return Template("{% load presence %}" + source).render(Context(context))


@pytest.fixture
def alice(presence: dict[str, Any]) -> Any:
    return get_user_model().objects.create(username="alice")


def dot_state(html: str) -> str:
    match = re.search(r'data-online="([^"]*)"', html)
    assert match, html
    return match[1]


def test_the_dot_shows_the_state_the_backend_holds(alice: Any) -> None:
    html = render("{% presence_dot user %}", user=alice)
    assert f'data-presence-user="{alice.pk}"' in html
    assert 'class="presence-dot"' in html
    assert dot_state(html) == "false"
    assert 'title="Offline"' in html
    connection = user_online_service.add_user_connection(alice.pk)
    try:
        html = render("{% presence_dot user %}", user=alice)
        assert dot_state(html) == "true"
        assert 'title="Online"' in html
        assert 'aria-label="Online"' in html
        # A user id works as well as a user; classes of your own are added.
        html = render('{% presence_dot uid css_class="big" %}', uid=alice.pk)
        assert 'class="presence-dot big"' in html
        assert dot_state(html) == "true"
    finally:
        user_online_service.remove_user_connection(alice.pk, connection, grace=0)
    assert dot_state(render("{% presence_dot user %}", user=alice)) == "false"


def test_the_dot_carries_the_titles_presence_auto_js_switches(alice: Any) -> None:
    html = render("{% presence_dot user %}", user=alice)
    assert 'data-title-online="Online"' in html
    assert 'data-title-offline="Offline"' in html
    assert html.startswith("<span")
    assert html.endswith("></span>")


def test_the_dot_is_unknown_when_the_backend_cannot_answer(
    alice: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def down(user_id: Any) -> bool:
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(user_online_service, "is_user_online", down)
    html = render("{% presence_dot user %}", user=alice)
    assert dot_state(html) == ""
    assert 'title=""' in html
    assert "Redis is down" in caplog.text


def test_the_dot_escapes_and_skips_nothing(presence: dict[str, Any]) -> None:
    assert render("{% presence_dot user %}", user=SimpleNamespace(pk=None)) == ""
    html = render("{% presence_dot uid %}", uid='"><script>')
    assert "<script>" not in html
    assert "&quot;&gt;&lt;script&gt;" in html


def request_for(user: Any) -> Any:
    request = RequestFactory().get("/")
    request.user = user
    return request


@override_settings(STATIC_URL="/static/")
def test_the_script_starts_the_client_for_a_logged_in_user(alice: Any) -> None:
    html = render("{% presence_script %}", request=request_for(alice))
    assert '<link rel="stylesheet" href="/static/django_presence/presence.css">' in html
    assert '<script src="/static/django_presence/presence.js" defer></script>' in html
    assert (
        '<script src="/static/django_presence/presence-auto.js" data-url="/ws/user/" defer>'
        "</script>" in html
    )
    # presence.js comes first: deferred scripts run in document order.
    assert html.index("presence.js") < html.index("presence-auto.js")


def test_the_script_takes_a_token_url_and_options(alice: Any) -> None:
    html = render(
        '{% presence_script url="/realtime/user/" token_url="/api/token/" storage="session" '
        "css=False %}",
        request=request_for(alice),
    )
    assert 'data-url="/realtime/user/"' in html
    assert 'data-token-url="/api/token/"' in html
    assert 'data-storage="session"' in html
    assert "presence.css" not in html


def test_the_script_renders_nothing_for_anonymous_visitors(alice: Any) -> None:
    assert render("{% presence_script %}", request=request_for(AnonymousUser())) == ""
    assert render("{% presence_script %}") == ""
    # Without a request in the context, the auth context processor's user is used.
    assert "presence-auto.js" in render("{% presence_script %}", user=alice)


def test_two_lines_in_a_real_template_with_the_context_processors(alice: Any) -> None:
    from django.template import engines

    template = engines["django"].from_string(
        "{% load presence %}{% presence_script %}<p>{{ other }} {% presence_dot other %}</p>"
    )
    html = template.render({"other": alice}, request_for(alice))
    assert "presence-auto.js" in html
    assert f'data-presence-user="{alice.pk}"' in html


@override_settings(STATIC_URL="https://cdn.example.com/s/")
def test_the_script_follows_static_url(alice: Any) -> None:
    html = render("{% presence_script %}", request=request_for(alice))
    assert 'src="https://cdn.example.com/s/django_presence/presence.js"' in html


def test_the_view_may_give_the_state_of_many_dots_at_once(alice: Any) -> None:
    online_ids = {alice.pk}
    source = "{% for u in users %}{% presence_dot u online=online_ids %}{% endfor %}"
    html = render(source, users=[alice, 424242], online_ids=online_ids)
    assert re.findall(r'data-online="([^"]*)"', html) == ["true", "false"]
    assert dot_state(render("{% presence_dot user online=False %}", user=alice)) == "false"
    assert dot_state(render("{% presence_dot user online=True %}", user=alice)) == "true"


async def test_in_an_async_view_a_dot_without_its_state_is_unknown(alice: Any) -> None:
    # Rendering in the event loop must not block it on the backend: the dot waits for
    # presence.js instead.
    html = render("{% presence_dot user %}", user=alice)
    assert dot_state(html) == ""
    assert dot_state(render("{% presence_dot user online=True %}", user=alice)) == "true"
