"""A forwarder that delays and paces differently from what its lab declares: the self-check must notice.

    python skewed_forwarder.py RTT_SCALE MBIT_SCALE SPEC_JSON
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from wanlab_forwarder import serve  # noqa: E402
from wanlab_spec import LabSpec  # noqa: E402

if __name__ == "__main__":
    rtt_scale, mbit_scale, spec = float(sys.argv[1]), float(sys.argv[2]), LabSpec.from_json(sys.argv[3])
    sys.exit(serve(dataclasses.replace(spec, rtt_ms=spec.rtt_ms * rtt_scale, mbit=spec.mbit * mbit_scale)))
