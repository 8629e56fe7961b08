"""When a certificate is renewed: at ⅔ of its life, with jitter (DESIGN §5).

One rule, and one loop (:func:`keep_renewed`), for every long-lived identity: agents, a
joined bastion's labd link, labd replicas.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import NoReturn

import trio

from lab.errors import LabError

# Renew when this share of the certificate's lifetime has passed ...
RENEW_AT = 2 / 3
# ... give or take this much, so identities enrolled together do not renew together.
RENEW_JITTER = 0.10
# A failing renewal is retried after 30 s, doubling up to an hour (times a random 0.5-1).
RETRY_FIRST = 30.0
RETRY_MAX = 3600.0


def renewal_delay(
    not_before: datetime,
    not_after: datetime,
    rng: random.Random,
    *,
    now: datetime | None = None,
) -> float:
    """Seconds from ``now`` until the certificate should be renewed (never negative).

    The target is ⅔ of the lifetime after ``not_before``; the wait until then is scaled by a
    random factor in [0.9, 1.1] from ``rng``. Overdue certificates give 0 (renew now).
    """
    now = now or datetime.now(UTC)
    target = not_before + (not_after - not_before) * RENEW_AT
    wait = (target - now).total_seconds()
    if wait <= 0:
        return 0.0
    return wait * rng.uniform(1 - RENEW_JITTER, 1 + RENEW_JITTER)


def retry_delay(failures: int, rng: random.Random) -> float:
    """Seconds to wait after ``failures`` failed renewals in a row (full-ish jitter)."""
    cap: float = min(RETRY_MAX, RETRY_FIRST * 2.0**failures)
    return rng.uniform(0.5, 1.0) * cap


async def keep_renewed(
    validity: Callable[[], tuple[datetime, datetime]],
    renew: Callable[[], Awaitable[object]],
    *,
    rng: random.Random,
    log: logging.Logger,
    what: str,
    min_interval: float = 0.0,
) -> NoReturn:
    """Renew a certificate at ⅔ of its life (with jitter), for ever.

    ``validity()`` gives the current certificate's ``(not_before, not_after)``, read again
    before every wait; ``renew()`` renews it (and logs or announces the new one). A renewal
    that raises a :class:`LabError` is logged as a warning on ``log`` naming ``what`` and
    retried after :func:`retry_delay` (30 s doubling to an hour) while the old certificate
    serves on; anything else propagates. ``min_interval`` is the shortest wait between two
    renewals (a guard should the lifetime be tiny). Runs until cancelled; a renewal cancelled
    midway may or may not have replaced the certificate.
    """
    failures = 0
    while True:
        delay = renewal_delay(*validity(), rng)
        wait = retry_delay(failures, rng) if failures else min_interval
        await trio.sleep(max(delay, wait))
        try:
            await renew()
        except LabError as exc:
            failures += 1
            log.warning("%s: certificate renewal failed: %s", what, exc.message)
            continue
        failures = 0


__all__ = ["RENEW_AT", "RENEW_JITTER", "keep_renewed", "renewal_delay", "retry_delay"]
