"""trackrelay's Kubernetes operator: ``trackrelay operator`` or ``kopf run -m trackrelay_operator``.

Importing the package registers the kopf handlers (``main.py``, each delegating
to ``handlers/handle_*.py``); the operator's state lives in kopf's memo
(``memo.py``), every Kubernetes call in ``kube.py``, the spec's meaning in
``spec.py``, one pipeline's loop in ``runner.py``, and the decisions are the
shared controller's (``trackrelay.control.controller``).
"""

from trackrelay_operator import main

__all__ = ["main"]
