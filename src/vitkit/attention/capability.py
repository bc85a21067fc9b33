"""What an attention backend can run, and the question each call asks of it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

HALF_DTYPES = (torch.float16, torch.bfloat16)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class BackendUnavailableError(RuntimeError):
    """An explicitly requested attention backend cannot run these inputs here."""


@dataclass(frozen=True)
class Request:
    """The facts about one attention call that decide which kernels can run it."""

    device_type: str
    dtype: torch.dtype
    head_dim: int
    mask: str | None = None  # None, 'bool' or 'additive'
    dropout: bool = False
    needs_grad: bool = False
    deterministic: bool = False
    compute_capability: tuple[int, int] | None = None  # CUDA (major, minor), else None

    @classmethod
    def of(
        cls,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        deterministic: bool = False,
    ) -> Request:
        mask = None if attn_mask is None else ("bool" if attn_mask.dtype == torch.bool else "additive")
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (q, k, v, attn_mask)  # a learned bias counts too
        )
        return cls(
            device_type=q.device.type,
            dtype=q.dtype,
            head_dim=q.shape[-1],
            mask=mask,
            dropout=dropout_p > 0.0,
            needs_grad=needs_grad,
            deterministic=deterministic,
            compute_capability=cuda_capability(q.device),
        )


def cuda_capability(device: torch.device) -> tuple[int, int] | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Capability:
    """A backend's declared limits; `reason` says which one a request breaks."""

    devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES
    max_head_dim: int | None = None
    masks: frozenset[str] = field(default_factory=lambda: frozenset({"bool", "additive"}))
    dropout: bool = True
    backward_devices: tuple[str, ...] | None = None  # None: same as `devices`
    deterministic_backward: bool = True
    min_compute_capability: tuple[int, int] | None = None

    def reason(self, req: Request) -> str | None:
        """Why this capability cannot serve `req`, or None when it can."""
        if req.device_type not in self.devices:
            return f"needs a {'/'.join(self.devices)} device, and the inputs are on {req.device_type}"
        if req.dtype not in self.dtypes:
            names = ", ".join(_dtype_name(d) for d in self.dtypes)
            return f"takes {names} only, and the inputs are {_dtype_name(req.dtype)}"
        if self.max_head_dim is not None and req.head_dim > self.max_head_dim:
            return f"takes head_dim <= {self.max_head_dim} only, and the inputs have {req.head_dim}"
        if (
            self.min_compute_capability is not None
            and req.compute_capability is not None
            and req.compute_capability < self.min_compute_capability
        ):
            need = ".".join(map(str, self.min_compute_capability))
            have = ".".join(map(str, req.compute_capability))
            return f"needs a GPU of compute capability >= {need}, this one is {have}"
        if req.mask is not None and req.mask not in self.masks:
            return f"takes no {req.mask} attention mask"
        if req.dropout and not self.dropout:
            return "has no attention dropout"
        if req.needs_grad:
            backward = self.devices if self.backward_devices is None else self.backward_devices
            if req.device_type not in backward:
                return f"has no backward pass on {req.device_type} (inference only there)"
            if req.deterministic and not self.deterministic_backward:
                return "has no deterministic backward pass"
        return None
