"""The web console, served by the API process under /console: models, compare, jobs,
batches, spend, and (for admin keys) keys and providers.

Server-rendered Jinja2 templates, with htmx (vendored in `static/`, no CDN) for the parts
that update in place: the models' health, a batch's progress, a provider test, and the
forms that answer with a fragment. One small script reads the compare page's job events.
So the console is Python and HTML, with no build step and no JavaScript toolchain to keep:
a page is a route in a `pages_*.py` module and a template beside it.

Every figure comes from the JSON API, called in-process as the signed-in key
(`internal.py`), so the console shows exactly what that key may see. Sign-in and CSRF are
in `auth.py`; Spend and Keys read their data through `admin_api.py` only.
"""
