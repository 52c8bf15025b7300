"""A discrete-event simulator of a volunteer swarm that runs the production policies.

Block selection and rebalancing (node/selection.py), chain planning (routing/planner.py), bans with
backoff (routing/view.py `Bans`) and the failover runner's decisions (routing/chain.py) are imported,
not copied; the simulator supplies what the daemon and the SDK would measure: hardware speed from a
roofline (hardware.py) and the daemon's continuous batching (batching.py, after node/scheduler.py),
round trips between regions (network.py), volunteer lifetimes (churn.py), and clients (workload.py).
`bound.py` is the yardstick: a linear program over the nodes present, with the fastest chain through
each node (chains.py) inside it; `batch_bound.py` the tighter one, each node's batching inside it too;
`yardstick.py` assembles both from where the nodes sit, each time the simulation samples them.
Run it with `python scripts/swarmsim.py --scenario hetero-200 --hours 1`.
"""
