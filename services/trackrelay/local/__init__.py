"""One-machine mode: embedded Redis, process supervision, ``trackrelay up`` and the demo."""
