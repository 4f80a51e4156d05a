"""Telemetry: traces (`tracing`), Prometheus metrics (`metrics`) and log lines (`logs`).

Nothing here is switched on at import: the entry points (the CLI, the server's app, the
queue worker) install what the settings ask for. Traces leave the process only when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set; metrics are served by the server's `GET /metrics`.
"""
