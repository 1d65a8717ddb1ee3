"""``rtcheck serve``: the DICOM node that checks every course a planning system sends.

- :mod:`.wire`: what a received object must be before it is stored (well formed, valid UIDs);
- :mod:`.store`: received objects on disk (written with :mod:`rtcheck.durable`);
- :mod:`.ledger`: which course exports have their report;
- :mod:`.scheduler`: when each course is checked, in worker processes;
- :mod:`.worker`: a check in a worker process, and writing its report;
- :mod:`.server`: the Storage SCP itself and the ``serve`` command;
- :mod:`.config`: the node's settings (command line and YAML);
- :mod:`.events`: its one-line-per-event log.
"""
