"""The pure domain core: validation, enrichment, windows, sketches, de-duplication.

Nothing here imports faust, aiokafka or prometheus_client, and nothing reads
the clock: ``now`` is always a parameter. Tests of it need no broker.
"""
