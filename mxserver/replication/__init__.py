"""Replication between the processes of a cluster (issue 19): the bus, the writer's publisher,
the sync worker's client.

The writer (``main``) publishes small hints after each commit ("stream S persisted up to P",
change records that say whom a change wakes, cache invalidations) on an
:class:`~mxserver.replication.bus.IReplicationBus`; a ``sync`` worker reads what is new from the
database and republishes it on its own local streams, so its caches and notifier work as in a
single process. Hints are hints: the database is the truth, and a lost hint is caught up by the
next one or by the client's periodic check.
"""
