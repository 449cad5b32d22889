"""trackrelay's Kubernetes operator: ``trackrelay operator`` or ``kopf run -m trackrelay_operator``.

Importing the package registers the kopf handlers (``handlers.py``); every
Kubernetes call lives in ``kube.py``, the spec's meaning in ``spec.py``, and
the decisions are the shared controller's (``trackrelay.control.controller``).
"""

from trackrelay_operator import handlers

__all__ = ["handlers"]
