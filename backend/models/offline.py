"""Keep every Hugging Face library off the network.

huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported, and diffusers copies the
value into its own modules at import time. So the flag must be in the environment before the
first `import diffusers` / `import transformers` / `import huggingface_hub` anywhere in the
process. The backend package sets them when it is imported, before any of its modules can import
those libraries; ensure_offline() is the check for a process that may have imported them first.
"""

from __future__ import annotations

import os
import sys

# Variables the libraries really read (diffusers has no offline variable of its own: it uses
# huggingface_hub's). HF_DATASETS_OFFLINE costs nothing and covers an indirect `datasets` import.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
}


class OfflineError(RuntimeError):
    """huggingface_hub was imported before the offline flag was set; it may reach the network."""


def set_offline_env() -> None:
    """Put the offline flags in os.environ (never raises)."""
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value


def ensure_offline() -> None:
    """Put the offline flags in os.environ; raise if huggingface_hub already read them unset."""
    set_offline_env()
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and not getattr(constants, "HF_HUB_OFFLINE", False):
        raise OfflineError(
            "huggingface_hub was imported before HF_HUB_OFFLINE=1 was set, so it may try the "
            "network. Import backend (or call backend.models.offline.ensure_offline()) "
            "before anything that imports diffusers, transformers or huggingface_hub, or start "
            "the backend with HF_HUB_OFFLINE=1 in its environment."
        )


def is_offline() -> bool:
    """True when huggingface_hub is (or, once imported, will be) in offline mode."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
