"""The HTTP API: authentication, authorisation, validation, and commands to the case workflows."""
