"""Several mxserver processes on one Postgres database (issue 19): which process serves which
request (:mod:`routes`), and the tools that start and front a cluster."""
