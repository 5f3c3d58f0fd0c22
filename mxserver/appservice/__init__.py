"""Application services (application-service-api.md).

- :mod:`~mxserver.appservice.registration`: the registration files (``app_service_config_files``),
  their namespaces, and the registry every other part asks (tokens, exclusivity, interest);
- :mod:`~mxserver.appservice.api`: the homeserver's requests to an application service
  (transactions, user and alias queries, third-party lookups, ping);
- :mod:`~mxserver.appservice.reader`: the reader of the room event stream (and of the ephemeral
  streams) that picks what each application service is interested in and queues it, persisted;
- :mod:`~mxserver.appservice.sender`: each application service as a destination of the shared
  delivery mechanism (:mod:`mxserver.delivery.destinations`), sending the queue in transactions;
- :mod:`~mxserver.appservice.queries`: asking application services about unknown users and
  aliases, third-party lookups and the ping.
"""
