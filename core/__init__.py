"""The ground floor: what every other package shares and nothing of ours is imported by.

`settings` (the process's configuration from the environment), `types` (the one chat
request and response shape), `providers` (the one table of providers), `errors` (the
closed sets of job-level errors), `clock` (timestamps) and `redis` (the shared Redis
clients). Everything above (`routing`, `jobstore`, `workers`, `api`, `llmqueue`) may import
from here; this package imports only the standard library and third-party packages.
"""
