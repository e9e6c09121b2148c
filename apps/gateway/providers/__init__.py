"""Provider adapters: one package per provider kind, one registry.

Layout (see CONTRIBUTING.md, "Adding a provider"):

* ``registry.py`` — every kind, declared once; everything else derives from it;
* ``contract.py`` — what a provider supplies (the translator hooks, the stream translator)
  and what the route stage calls (``Adapter``);
* ``base.py`` — the one base adapter: post, error mapping, translation, usage, send, and
  the one stream loop;
* ``pool.py`` (pooled upstream connections, ``http1.py``), ``errors.py`` (shared error mapping),
  ``options.py`` (typed options), ``sse.py`` (event framing), ``chat_format.py`` (the
  OpenAI side of every translation);
* ``<kind>/`` — ``translate.py`` (pure), ``adapter.py`` (the hooks around the I/O),
  ``errors.py`` where the wire has its own error shape, ``spec.py`` (the declaration and
  typed options; no I/O imported).
"""
