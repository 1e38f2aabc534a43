"""Timing workers of `experiments.bench.peers`: one process per tool, each in its own Python environment.

Protocol (stdlib only, so it runs in any environment): the worker builds its programs, compiling and
warming each up, then prints one JSON line ``{"ready": {program: startup seconds}}``; afterwards each
line it reads names a program, which it runs for one timed chunk of env steps and answers with
``{"program": name, "seconds": s}``; ``quit`` ends it. A worker idles on stdin between chunks, so
interleaved rounds time one tool at a time.
"""
