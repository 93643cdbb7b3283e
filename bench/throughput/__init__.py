"""Encode throughput of bertrec against its peers (``python -m bench.throughput``).

``cli`` runs it and writes the record; ``settings`` says what a run covers; ``systems``
builds every system from ``bertrec_systems``, ``peers`` and ``openvino_peer`` (on
``base``); ``timing`` runs the sweep, the final runs, latency and fidelity.
"""
