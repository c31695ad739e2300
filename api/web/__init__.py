"""The web workspace: server-rendered pages for caseworkers, partner agencies and supervisors, on
the API's own origin and through the same rules, scope and audit as ``/v1``."""
