"""The one place litellm is imported, lazily (``import policyopt`` must stay light).

Its own module so that :mod:`policyopt.lm.base`, :mod:`policyopt.lm.limits` and
:mod:`policyopt.lm.credentials` all reach litellm without importing one another.
"""

from __future__ import annotations

import os
from typing import Any


def _litellm() -> Any:
    """Import litellm with its network look-ups off (the bundled price list is used)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm
