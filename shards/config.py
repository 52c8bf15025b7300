"""The architecture description of a Llama-family model, parsed strictly from a Hugging Face config.

Every field our blocks depend on is explicit here; anything we do not implement is rejected
by name instead of being silently ignored (a wrong RoPE variant gives plausible garbage).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .errors import UnsupportedModelError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling; `rope_type` 'default' means none."""

    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    family: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    @property
    def max_context(self) -> int:
        """Longest sequence our dense attention reproduces exactly (sliding windows beyond it differ)."""
        if self.sliding_window is not None:
            return min(self.sliding_window, self.max_position_embeddings)
        return self.max_position_embeddings

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of `to_dict` (the manifest's own format)."""
        d = dict(d)
        d["rope_scaling"] = RopeScaling(**d.get("rope_scaling", {}))
        d["eos_token_ids"] = tuple(d.get("eos_token_ids", ()))
        return cls(**d)

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any]) -> "ModelConfig":
        """Parse a Hugging Face `config.json` dict (transformers 4.x or 5.x layout)."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"unsupported architecture: model_type={model_type!r} "
                f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        _require(hf.get("hidden_act", "silu") == "silu", "hidden_act", hf.get("hidden_act"))
        hidden = int(_field(hf, "hidden_size"))
        heads = int(_field(hf, "num_attention_heads"))
        kv_heads = int(hf.get("num_key_value_heads") or heads)
        _require(heads % kv_heads == 0, "num_key_value_heads", kv_heads)
        head_dim = int(hf.get("head_dim") or hidden // heads)

        sliding = hf.get("sliding_window")
        if model_type == "qwen2" and not hf.get("use_sliding_window", False):
            sliding = None
        attention_bias = bool(hf.get("attention_bias", False))
        qkv_bias = attention_bias or model_type == "qwen2"
        return cls(
            family=str(model_type),
            hidden_size=hidden,
            intermediate_size=int(_field(hf, "intermediate_size")),
            num_layers=int(_field(hf, "num_hidden_layers")),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            vocab_size=int(_field(hf, "vocab_size")),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(_rope_params(hf).get("rope_theta", 10000.0)),
            rope_scaling=_rope_scaling(hf),
            qkv_bias=qkv_bias,
            o_bias=attention_bias,
            mlp_bias=bool(hf.get("mlp_bias", False)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
            sliding_window=int(sliding) if sliding else None,
            bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=_as_ids(hf.get("eos_token_id")),
        )


def _field(hf: Mapping[str, Any], name: str) -> Any:
    if name not in hf:
        raise UnsupportedModelError(f"model config lacks required field {name!r}")
    return hf[name]


def _require(ok: bool, name: str, value: Any) -> None:
    if not ok:
        raise UnsupportedModelError(f"unsupported model config: {name}={value!r}")


def _as_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)


def _rope_params(hf: Mapping[str, Any]) -> dict[str, Any]:
    """transformers 5 nests RoPE settings in `rope_parameters`; 4.x uses `rope_theta` + `rope_scaling`."""
    params = dict(hf.get("rope_parameters") or {})
    if "rope_theta" not in params and "rope_theta" in hf:
        params["rope_theta"] = hf["rope_theta"]
    scaling = hf.get("rope_scaling")
    if scaling:
        params.update(scaling)
    return params


def _rope_scaling(hf: Mapping[str, Any]) -> RopeScaling:
    params = _rope_params(hf)
    rope_type = params.get("rope_type") or params.get("type") or "default"
    _require(rope_type in SUPPORTED_ROPE_TYPES, "rope_scaling.rope_type", rope_type)
    if rope_type == "default":
        return RopeScaling()
    kwargs: dict[str, Any] = {"rope_type": rope_type, "factor": float(params["factor"])}
    if rope_type == "llama3":
        kwargs.update(
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_position_embeddings=int(params["original_max_position_embeddings"]),
        )
    return RopeScaling(**kwargs)
