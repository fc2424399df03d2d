"""The client library: talk to a running deployment through its broker and databases.

Open the real stores and transport from settings (`connect`), submit requests and watch
their outcomes (`orders`, `events`), seed stock and funds (`seed`), read and act on sagas
(`status`, `admin`, `cancel`), and read dead letters (`deadletters`). ``sagactl``, the
console, the local-run harness and the benchmark all use it; none of it parses arguments.
"""
