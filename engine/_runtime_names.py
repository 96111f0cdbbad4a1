"""The devices and precisions a render may name, without torch: RenderConfig checks its
options against them and the command line's help lists them; engine/_device.py resolves them."""

__all__ = ["DEVICES", "PRECISIONS"]

DEVICES = ("auto", "cpu", "cuda")
#: The precisions a backend runs in; the ``precision`` option also takes ``auto`` (its default).
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
