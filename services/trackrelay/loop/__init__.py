"""The control loop shell shared by local mode and the operator: observe, decide (``control``),
act. Only observing and acting differ between the two."""
