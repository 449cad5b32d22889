"""Process plumbing every long-running command shares: signals, ports, retry pacing, clients.

Neither a service nor the one-machine runner: ``forwarder/``, ``orders/`` and
``local/`` all build on it, so none of them has to import another.
"""
