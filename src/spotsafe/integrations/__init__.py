"""One line for framework users: Hugging Face Trainer, Lightning and Accelerate.

Each integration is its own module and extra, imported only when asked for, so that
``import spotsafe`` never imports a framework:

- :mod:`spotsafe.integrations.transformers` (``pip install 'spotsafe[transformers]'``):
  ``SpotsafeTrainer``, a drop-in ``transformers.Trainer``, and ``SpotsafeCallback``.
- :mod:`spotsafe.integrations.lightning` (``spotsafe[lightning]``): ``SpotsafeCallback``.
- :mod:`spotsafe.integrations.accelerate` (``spotsafe[accelerate]``): ``train_state`` and
  ``AcceleratedGuard``.

All three save through :class:`spotsafe.Checkpointer` (verified, manifest last, retention),
stop through :class:`spotsafe.Guard` (signals and cloud notices, exit 75), and take the store
from ``store=`` or ``$SPOTSAFE_STORE``.

Importing an integration without its framework installed raises an ImportError that names the
extra to install.

Example:
    >>> from spotsafe.integrations import install_hint
    >>> install_hint("lightning")
    "spotsafe.integrations.lightning needs lightning: pip install 'spotsafe[lightning]'"
"""

from __future__ import annotations

__all__ = ["install_hint"]


def install_hint(framework: str) -> str:
    """The one line that says which extra brings ``framework``."""
    return (
        f"spotsafe.integrations.{framework} needs {framework}: pip install 'spotsafe[{framework}]'"
    )
