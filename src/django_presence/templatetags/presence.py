"""Template tags for server-rendered pages: ``{% load presence %}``.

Two lines show live presence on a page:

- ``{% presence_script %}``, once (in the base template): the stylesheet of the dots,
  ``presence.js`` and ``presence-auto.js``, which opens the ``ws/user/`` connection with
  the page's session cookie (or a token fetched from ``token_url``), subscribes to every
  user a dot shows and updates the dots as users come and go. It renders nothing for an
  anonymous visitor, whom ``ws/user/`` would refuse.
- ``{% presence_dot user %}``, wherever a user is shown: a ``<span>`` whose
  ``data-online`` holds the user's state read from the backend while the page renders,
  so the page is right before the socket opens.

Which users a visitor may watch is the policy's (``DJANGO_PRESENCE["POLICY"]``): the
default lets a user watch only themselves; ``PresenceOnlyPolicy`` lets every logged-in
user watch everyone (docs/adopting.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django import template
from django.templatetags.static import static
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext

from ..services import user_online_service

logger = logging.getLogger(__name__)
register = template.Library()

#: The class of the dots, styled by ``django_presence/presence.css``.
DOT_CLASS = "presence-dot"


def _state(user_id: Any, online: Any) -> str:
    """``"true"``/``"false"``, or ``""`` (unknown) when the backend cannot say."""
    if isinstance(online, bool):
        return "true" if online else "false"
    if online is not None:
        return "true" if user_id in online else "false"
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # An async view renders in the event loop: no blocking read there.
        logger.debug("Rendered the presence dot of user %s as unknown (async code)", user_id)
        return ""
    try:
        if not user_online_service.is_user_online(user_id):
            return "false"
        # Online: shown so only when the user is not invisible (others see them offline).
        presence = user_online_service.get_presence([user_id]).get(user_id)
        return "false" if presence is None or presence.status == "invisible" else "true"
    except Exception as e:  # A page must render with the backend down.
        logger.warning("Rendered the presence dot of user %s as unknown: %s", user_id, e)
        return ""


@register.simple_tag
def presence_dot(user: Any, css_class: str = "", online: Any = None) -> SafeString:
    """A user's live dot: ``<span class="presence-dot" data-presence-user="7" ...>``.

    ``user`` is a user or a user id. The span carries ``data-online`` (``"true"``,
    ``"false"``, or ``""`` when the backend could not be read), the titles presence.js
    shows for each state, and ``role="img"`` with an ``aria-label``; ``css_class`` adds
    classes of yours. presence.js keeps ``data-online`` (and ``data-last-seen``) up to date.

    The state is read from the backend, one round trip per dot. ``online`` gives it
    instead: ``True``/``False``, or the ids online among many users, read once by the view
    (``online=online_ids`` with ``user_online_service.get_online_user_ids(ids)``): a list
    of a hundred users then costs one round trip, not a hundred. In async code (an async
    view renders in the event loop) a dot without ``online`` renders unknown, and
    presence.js fills it in.
    """
    user_id = getattr(user, "pk", user)
    if user_id is None or user_id == "":
        return SafeString("")
    state = _state(user_id, online)
    online, offline = gettext("Online"), gettext("Offline")
    title = {"true": online, "false": offline}.get(state, "")
    classes = f"{DOT_CLASS} {css_class}".strip()
    return format_html(
        '<span class="{}" data-presence-user="{}" data-online="{}" '
        'data-title-online="{}" data-title-offline="{}" title="{}" role="img" '
        'aria-label="{}"></span>',
        classes,
        user_id,
        state,
        online,
        offline,
        title,
        title,
    )


@register.simple_tag(takes_context=True)
def presence_script(
    context: template.Context,
    url: str = "/ws/user/",
    token_url: str = "",
    storage: str = "",
    css: bool = True,
) -> SafeString:
    """Load and start presence.js for the logged-in user; nothing for anonymous visitors.

    ``url`` is the ``ws/user/`` route (relative: ``ws://`` or ``wss://`` from the page's
    origin). By default the socket authenticates with the page's session cookie (Channels'
    ``AuthMiddlewareStack``); with ``token_url`` the client fetches a token there (JSON
    with ``token`` or ``access``) before each connection and sends it as a subprotocol
    (``JWTAuthMiddleware``). ``storage="session"`` keeps stream positions across reloads.
    ``css=False`` leaves out the dots' stylesheet. The scripts are ``defer``, so the tag
    may go in ``<head>`` or at the end of ``<body>``; the client is
    ``window.DjangoPresence.client``.
    """
    user = _user(context)
    if user is None or not getattr(user, "is_authenticated", False):
        return SafeString("")
    attributes = [("data-url", url)]
    if token_url:
        attributes.append(("data-token-url", token_url))
    if storage:
        attributes.append(("data-storage", storage))
    tags = []
    if css:
        tags.append(
            format_html(
                '<link rel="stylesheet" href="{}">', static("django_presence/presence.css")
            )
        )
    tags.append(
        format_html('<script src="{}" defer></script>', static("django_presence/presence.js"))
    )
    tags.append(
        format_html(
            '<script src="{}"{} defer></script>',
            static("django_presence/presence-auto.js"),
            format_html_join("", ' {}="{}"', attributes),
        )
    )
    return SafeString("\n".join(tags))


def _user(context: template.Context) -> Any:
    request = context.get("request")
    user = getattr(request, "user", None)
    return user if user is not None else context.get("user")
