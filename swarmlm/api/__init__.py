"""The HTTP gateway: OpenAI's API over a swarm, with provenance in every answer, and a dashboard.

`swarmlm api` (cli.py) starts it; app.py assembles the routes. The top-level README shows how to
point an existing OpenAI client at a swarm.
"""
