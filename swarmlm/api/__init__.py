"""The HTTP gateway: OpenAI's API over a swarm, with provenance in every answer, and a dashboard.

`swarmlm api` (cli.py) starts it; app.py assembles the routes. README.md beside this file shows
how to point an existing OpenAI client at a swarm.
"""
