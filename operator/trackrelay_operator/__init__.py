"""trackrelay's Kubernetes operator (kopf handlers and Kubernetes adapters).

The handlers arrive with the operator work; the package exists so the layout,
packaging and type checks cover it from the start.
"""
