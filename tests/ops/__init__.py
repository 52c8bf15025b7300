"""Tests of operations: config, logs, metrics, init, systemd."""
