"""twistd plugin: ``twistd -n mxserver [--config FILE] ...``.

Kept import-light: twistd scans every plugin on start-up, so the real work
lives in ``mxserver.tap``, named here by its dotted path.
"""

from twisted.application.service import ServiceMaker

mxserver = ServiceMaker(
    "mxserver",
    "mxserver.tap",
    "A Matrix homeserver",
    "mxserver",
)
