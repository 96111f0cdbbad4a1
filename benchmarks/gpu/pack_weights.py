"""The default weights small enough to travel to the GPU machine with the tree (64 MiB in all).

    python benchmarks/gpu/pack_weights.py [SOURCE] [--out benchmarks/gpu/weights]

vgg16-hed.safetensors (float32, ~56 MB) becomes vgg16-hed-fp16.safetensors: float16, and only the
convolutions up to the deepest default tap (conv5_1 for relu5_1; conv5_2 and conv5_3 are never
run), about 20 MB. prove.py upcasts it to float32 on the device, so the figures that use real
weights use these float16-rounded values (relative rounding 2^-11, far below what a render shows).
SOURCE defaults to the cached file (`styleforge models` says where).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
#: Convolutions the default taps reach (relu1_1 ... relu5_1): VGG16's first 11 of 13.
KEPT = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2", "conv4_3",
        "conv5_1")


def pack_weights(source: Path, target: Path) -> None:
    state = load_file(str(source))
    kept = {key: tensor.half().contiguous() for key, tensor in state.items() if key.split(".")[0] in KEPT}
    missing = [f"{name}.{field}" for name in KEPT for field in ("weight", "bias") if f"{name}.{field}" not in kept]
    if missing:
        raise SystemExit(f"{source}: no {', '.join(missing)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(kept, str(target), metadata={"packed_from": source.name, "dtype": "float16"})


def unpack_weights(source: Path, target: Path) -> None:
    """Any vgg16-hed file (packed or not) as the float32 file the engine loads."""
    state = {key: tensor.float().contiguous() for key, tensor in load_file(str(source)).items()}
    save_file(state, str(target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, nargs="?",
                        default=Path.home() / ".cache" / "styleforge" / "weights" / "vgg16-hed.safetensors")
    parser.add_argument("--out", type=Path, default=HERE / "weights")
    args = parser.parse_args()
    target = args.out / "vgg16-hed-fp16.safetensors"
    pack_weights(args.source, target)
    print(f"{target}: {target.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
