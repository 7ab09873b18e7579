"""An admission service that only reconciles: the reconciler's and the verifier's passes.

Reconciling and verifying decide nothing new, so OPA is an address nothing
listens on (any question to it would fail the test) and the key ring is a
fresh one no token was sealed with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from tokensvc.cluster.opa import OpaClient
from tokensvc.cluster.service import AdmissionService
from tokensvc.cluster.submitters import Submitter
from tokensvc.core.keys import KeyRing, new_key
from tokensvc.core.replay import MemoryReplayCache
from tokensvc.core.validate import TokenValidator


def reconciling_service(
    submitter: Submitter,
    *,
    namespace: str,
    audit: Callable[[Mapping[str, Any]], None],
    clock: Callable[[], float] = time.time,
) -> AdmissionService:
    """An AdmissionService over ``submitter`` writing audit lines to ``audit``.

    ``clock`` replaces the service's clock (to stand past a deadline).
    """
    return AdmissionService(
        validator=TokenValidator(
            KeyRing((new_key("active"),)), realm="test", replay=MemoryReplayCache()
        ),
        opa=OpaClient("http://127.0.0.1:1"),
        submitter=submitter,
        namespace=namespace,
        audit=audit,
        clock=clock,
        threads=2,
    )
