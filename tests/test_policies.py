"""Authorization policies: the default rules, loading by dotted path, and their errors."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import override_settings

from django_presence.exceptions import PresenceImproperlyConfigured
from django_presence.policies import (
    DefaultPolicy,
    OpenPolicy,
    PresenceOnlyPolicy,
    get_policy_class,
)


async def test_the_default_policy_relates_a_user_to_nobody_but_themselves() -> None:
    policy = DefaultPolicy()
    user = SimpleNamespace(pk=1, is_staff=False)
    assert await policy.can_message(user, 1)
    assert await policy.can_watch(user, 1)
    assert not await policy.can_message(user, 2)
    assert not await policy.can_watch(user, 2)
    assert not await policy.can_join_group(user, "any-valid-name")


async def test_are_related_opens_watching_and_messaging() -> None:
    class Team(DefaultPolicy):
        async def are_related(self, user: Any, target_id: Any) -> bool:
            return bool(target_id in (user.pk, 2))

    user = SimpleNamespace(pk=1, is_staff=False)
    assert await Team().can_watch(user, 2)
    assert await Team().can_message(user, 2)
    assert not await Team().can_watch(user, 3)


async def test_the_open_policy_lets_users_message_watch_and_join() -> None:
    policy = OpenPolicy()
    user = SimpleNamespace(pk=1, is_staff=False)
    assert await policy.can_message(user, 2)
    assert await policy.can_watch(user, 2)
    assert await policy.can_join_group(user, "any-valid-name")
    assert await policy.can_send_to_group(user, "any-valid-name")
    assert not await policy.can_broadcast(user)


@pytest.mark.parametrize(("is_staff", "allowed"), [(True, True), (False, False), (None, False)])
async def test_default_policy_lets_only_staff_broadcast(is_staff: Any, allowed: bool) -> None:
    user = SimpleNamespace(pk=1) if is_staff is None else SimpleNamespace(pk=1, is_staff=is_staff)
    assert await DefaultPolicy().can_broadcast(user) is allowed


class ProjectPolicy(DefaultPolicy):
    """A project's policy, named by its dotted path."""


def test_policy_class_comes_from_the_setting(settings: Any) -> None:
    with override_settings(DJANGO_PRESENCE={}):
        assert get_policy_class() is DefaultPolicy  # the default
    with override_settings(DJANGO_PRESENCE={"POLICY": f"{__name__}.ProjectPolicy"}):
        assert get_policy_class() is ProjectPolicy
    with override_settings(DJANGO_PRESENCE={"POLICY": ProjectPolicy}):
        assert get_policy_class() is ProjectPolicy


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("myproject.nope.Policy", "could not be imported"),
        ("no_dots", "could not be imported"),
        (f"{__name__}.test_policy_class_comes_from_the_setting", "must name a class"),
        (42, "must be a class or its dotted path"),
        (None, "must be a class or its dotted path"),
    ],
)
def test_bad_policy_setting_names_the_key_and_value(value: Any, message: str) -> None:
    with (
        override_settings(DJANGO_PRESENCE={"POLICY": value}),
        pytest.raises(PresenceImproperlyConfigured, match=message) as info,
    ):
        get_policy_class()
    assert "DJANGO_PRESENCE['POLICY']" in str(info.value)
    assert repr(value) in str(info.value)


# -- presence only, through the consumer --------------------------------------------------


async def test_presence_only_policy_allows_watching_and_nothing_else() -> None:
    policy = PresenceOnlyPolicy()
    staff = SimpleNamespace(pk=1, is_staff=True)
    assert await policy.can_watch(staff, 2)
    assert not await policy.can_message(staff, 2)
    assert not await policy.can_join_group(staff, "any-valid-name")
    assert not await policy.can_send_to_group(staff, "any-valid-name")
    assert not await policy.can_broadcast(staff)


async def _presence_only_session(alice: Any, bob: Any, admin: Any, consumer: Any = None) -> None:
    """Alice watches Bob live; messages, groups and broadcasts are forbidden."""
    from tests.test_user_consumer import close_all, open_socket, receive, receive_type, request

    tab = await open_socket(alice, consumer)
    staff = await open_socket(admin, consumer)
    await request(tab, "subscribe_presence", {"user_ids": [bob.pk]})
    state = await receive_type(tab, "presence_state")
    assert str(bob.pk) in json.dumps(state)
    bob_tab = await open_socket(bob, consumer)
    changed = await receive_type(tab, "status_changed")
    assert changed["data"]["is_online"] is True, changed
    for socket, type, data in [
        (tab, "direct_message", {"target_user_id": bob.pk, "message": "x"}),
        (tab, "join_group", {"group": "lobby"}),
        (staff, "broadcast", {"message": "x"}),
    ]:
        await request(socket, type, data)
        assert (await receive(socket))["data"]["code"] == "forbidden", type
    await close_all(tab, staff, bob_tab)


@pytest.mark.django_db(transaction=True)
async def test_presence_only_policy_from_settings(presence: dict[str, Any]) -> None:
    alice, bob, admin = await _make_users()
    path = "django_presence.policies.PresenceOnlyPolicy"
    with override_settings(DJANGO_PRESENCE={**presence, "POLICY": path}):
        await _presence_only_session(alice, bob, admin)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "policy", [PresenceOnlyPolicy, "django_presence.policies.PresenceOnlyPolicy"]
)
async def test_presence_only_route_from_the_routing_helper(
    presence: dict[str, Any], policy: Any
) -> None:
    from django_presence.routing import presence_urlpatterns

    [route] = presence_urlpatterns("ws/", policy=policy)
    consumer = route.callback.consumer_class  # type: ignore[attr-defined]
    assert consumer.policy_class is PresenceOnlyPolicy
    alice, bob, admin = await _make_users()
    await _presence_only_session(alice, bob, admin, consumer)


def test_the_routing_helper_refuses_a_policy_that_is_not_a_class() -> None:
    from django_presence.routing import presence_urlpatterns

    with pytest.raises(TypeError, match="policy must be a policy class"):
        presence_urlpatterns(policy=42)


async def _make_users() -> list[Any]:
    from django.contrib.auth import get_user_model

    model = get_user_model()
    return [
        await model.objects.acreate(username="alice"),
        await model.objects.acreate(username="bob"),
        await model.objects.acreate(username="admin", is_staff=True),
    ]
