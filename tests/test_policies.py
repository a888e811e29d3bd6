"""Authorization policies: the default rules, loading by dotted path, and their errors."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from django.test import override_settings

from django_presence.exceptions import PresenceImproperlyConfigured
from django_presence.policies import DefaultPolicy, OpenPolicy, get_policy_class


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
