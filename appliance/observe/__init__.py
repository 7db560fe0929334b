"""Observability: JSON logs (syslog, journald), StatsD metrics, sd_notify, status file."""
