"""``rtcheck audit``: protocol compliance across the centres of a trial.

- :mod:`.run`: the command, its settings and its outputs;
- :mod:`.discovery`: finding the courses of each centre in the submission folders;
- :mod:`.work`: checking one course (in a worker process);
- :mod:`.executors`: serial, process-pool and Dask execution;
- :mod:`.db`: the results database that makes a re-run incremental;
- :mod:`.privacy`: pseudonyms and scrubbing of patient data;
- :mod:`.summary` and :mod:`.html`: compliance by centre, as JSON and HTML.
"""
