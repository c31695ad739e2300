"""Every side effect of the journey: the read model, the task inbox, calls to partner agencies."""
