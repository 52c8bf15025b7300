"""`swarmlm node init`: a new node's state folder with a commented config and its identity key.

A volunteer runs this once, reads the file, and starts the node with the command it prints;
the key is created here (not at first start) so the peer ID is known before joining.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ledger.keys import Identity

from .config import commented_toml
from .errors import NodeError

CONFIG_NAME = "node.toml"
IDENTITY_NAME = "identity.key"  # where NodeConfig looks by default: STATE_DIR/identity.key


@dataclass(frozen=True)
class InitResult:
    config: Path
    identity: Path
    peer_id: str
    new_identity: bool


def init_node(directory: Path, force: bool = False) -> InitResult:
    """Write DIRECTORY/node.toml (state_dir = DIRECTORY) and create the identity if there is none.

    An existing node.toml is kept unless `force`; an existing identity is always kept, since
    it is the node's peer ID and the key of its ledger.
    """
    directory = directory.expanduser().absolute()  # the file must not depend on where `node run` starts
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = directory / CONFIG_NAME
    try:
        with open(config, "w" if force else "x") as f:
            f.write(commented_toml({"state_dir": str(directory)}))
    except FileExistsError:
        raise NodeError(f"{config} already exists; edit it, or give --force to replace it with a fresh "
                        "commented file (the identity is kept either way)") from None
    identity_path = directory / IDENTITY_NAME
    existed = identity_path.exists()
    identity = Identity.load_or_create(identity_path)
    return InitResult(config, identity_path, identity.peer_id, not existed)


def start_instructions(result: InitResult) -> str:
    """What to run next, with the real paths, ready to paste."""
    identity = "created" if result.new_identity else "kept the existing"
    run = f"swarmlm node run --config {result.config}"
    return (f"wrote {result.config} (every option, commented: edit what you need)\n"
            f"{identity} identity {result.identity}\n"
            f"peer ID {result.peer_id}\n\n"
            f"Start the node, joining a swarm through any of its peers:\n"
            f"  {run} --initial-peers /ip4/HOST/tcp/PORT/p2p/PEER_ID\n"
            f"or start a new swarm of your own:\n"
            f"  {run} --new-swarm\n"
            f"(flags and SWARMLM_* environment variables override the file)\n"
            f"and check on it:\n  swarmlm node status --config {result.config}\n")

