# gunicorn for the baseline: sync workers (one request at a time each), as many as keystile has.
import os

bind = os.environ.get("BIND", "127.0.0.1:8001")
workers = int(os.environ.get("WORKERS", "1"))
worker_class = "sync"
backlog = 2048
timeout = 30
graceful_timeout = 20
accesslog = "-"  # keystile's Hypercorn logs every request too; same cost on both sides
errorlog = "-"
loglevel = "warning"
