"""Helpers shared by the unit and integration tests (``tests`` is on pytest's pythonpath).

- :mod:`support.toolpaths`: the pinned Go-built tools (OPA, conftest, Regal);
- :mod:`support.opa`: a real OPA serving the signed bundle of policies/;
- :mod:`support.app_server`: the HTTP app on a real uvicorn server on loopback,
  in a thread of the test process (no root needed);
- :mod:`support.raw_http`: hostile clients speaking raw bytes over TCP.
- :mod:`support.binding`: tokens as a mint daemon would seal them;
- :mod:`support.reconciler`: an admission service for reconciler and verifier passes.
"""
