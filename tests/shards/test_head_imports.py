"""Loading a head stays cheap: every ring node, gateway and SDK client process loads one."""

import subprocess
import sys

from shards.pack import pack

from .tiny import make_tiny_model

LOAD_HEAD = """
import sys
from shards.store import ShardStore
ShardStore(sys.argv[1]).load_head()
print("torch._dynamo" in sys.modules)
"""


def test_loading_a_head_does_not_import_torch_dynamo(tmp_path):
    """A head is built on the meta device, then loaded: a random init there (nn.Embedding's own) imports
    torch._dynamo, 2-4 CPU-s in each such process."""
    pack(make_tiny_model("llama-gqa-tied", tmp_path / "hf"), tmp_path / "store")
    out = subprocess.run([sys.executable, "-c", LOAD_HEAD, str(tmp_path / "store")], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False"]
