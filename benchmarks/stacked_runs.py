"""Micro-benchmark (issue 24, lever 5): k runs of one model stacked into one batched model
(``torch.func.stack_module_state`` + ``vmap``) against the same k runs' training steps one
after another.

A training step is the runs' step: forward, cross-entropy, backward and AdamW, batch 16 per run,
each run with its own weights, batch-norm statistics and optimizer state. Stacked, one AdamW
updates the stacked parameters: AdamW is elementwise, so that is k runs' AdamW. Under ``vmap``
a convolution with stacked weights becomes one grouped convolution (k groups, or k x 32 for
ResNeXt's), which cuDNN may run slower than k dense ones: the lever is only worth building into
the runs if this shows a gain on the GPU over the runs as the project runs them (the separate
runs in the project's memory format, ``channels_last``; compare also gpu_study's arm C, k runs in
k processes). The stacked arm is NCHW and its batch norm takes fp32 inputs (see
:class:`Stacked`), so its ratio includes vmap's batch-norm and layout overhead, not only grouped
convolutions. bf16 autocast on CUDA.

:func:`equivalence` checks the math on the CPU in float64: after a few steps the stacked runs'
weights and batch-norm buffers equal the separate runs' (a model without dropout; with dropout
the two arms draw other masks).

    python benchmarks/stacked_runs.py [--models test_resnet] [--k 4] [--steps 10] [--tiny]
"""

from __future__ import annotations

import argparse
import copy
import time

import timm
import torch
import torch.nn.functional as F
from bare_loop import sync
from torch.func import functional_call, stack_module_state, vmap


def _networks(model_name: str, k: int, dtype: torch.dtype, device: torch.device) -> list:
    torch.manual_seed(0)
    return [
        timm.create_model(model_name, pretrained=False, num_classes=2).to(device, dtype).train()
        for _ in range(k)
    ]


class Separate:
    """k runs stepping one after another, each with its own AdamW."""

    def __init__(self, networks: list, lr: float = 1e-4) -> None:
        fused = next(networks[0].parameters()).device.type == "cuda"
        self.networks = networks
        self.optimizers = [
            torch.optim.AdamW(n.parameters(), lr=lr, fused=fused or None) for n in networks
        ]

    def step(self, x, y: torch.Tensor, autocast: torch.dtype | None) -> None:
        """``x``: the k runs' batches (a stacked tensor or a list, one per run)."""
        for i, (network, optimizer) in enumerate(zip(self.networks, self.optimizers, strict=True)):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(y.device.type, dtype=autocast, enabled=autocast is not None):
                loss = F.cross_entropy(network(x[i]), y[i])
            loss.backward()
            optimizer.step()


def _float_input(module: torch.nn.Module, args: tuple) -> tuple:
    x = args[0]
    return (x.float() if x.dtype in (torch.bfloat16, torch.float16) else x, *args[1:])


class Stacked:
    """The same k runs as one vmapped model: stacked weights and buffers, one AdamW."""

    def __init__(self, networks: list, lr: float = 1e-4) -> None:
        params, buffers = stack_module_state(networks)
        self.params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        self.buffers = {n: b.clone() for n, b in buffers.items()}
        self.skeleton = copy.deepcopy(networks[0]).to("meta")
        # vmap's batch-norm rule folds the runs into the channels and makes its placeholder
        # weight in the input's dtype: a bf16 input (CUDA autocast runs convolutions in bf16)
        # with fp32 running statistics fails (in the forward pass on the CPU, in the backward pass
        # on CUDA). Batch norm here takes fp32 inputs, a cost separate runs do not pay.
        for module in self.skeleton.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.register_forward_pre_hook(_float_input)
        fused = next(iter(self.params.values())).device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.params.values(), lr=lr, fused=fused or None)

        def loss(params, buffers, x, y):
            return F.cross_entropy(functional_call(self.skeleton, (params, buffers), (x,)), y)

        # each run's batch-norm statistics update its own slice of the stacked buffers
        self.losses = vmap(loss, randomness="different")

    def step(self, x: torch.Tensor, y: torch.Tensor, autocast: torch.dtype | None) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            losses = self.losses(self.params, self.buffers, x, y)
        losses.sum().backward()  # the runs' losses are separate: each gets its own gradient
        self.optimizer.step()

    def run_state(self, i: int) -> dict[str, torch.Tensor]:
        return {
            **{n: p[i].detach() for n, p in self.params.items()},
            **{n: b[i] for n, b in self.buffers.items()},
        }


def _batches(k: int, batch: int, image_size: int, steps: int, dtype, device, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.rand(k, batch, 3, image_size, image_size, generator=generator).to(device, dtype),
            torch.randint(0, 2, (k, batch), generator=generator).to(device),
        )
        for _ in range(steps)
    ]


def equivalence(
    model_name: str, k: int = 3, steps: int = 2, image_size: int = 32, stacked_cls: type = None
) -> float:
    """Largest difference, after ``steps`` float64 steps on the CPU, between a stacked run's
    weights and buffers and the same run trained on its own (``stacked_cls``: another
    implementation of the stacked runs, e.g. a broken one a test expects to be told apart)."""
    networks = _networks(model_name, k, torch.float64, torch.device("cpu"))
    separate = Separate([copy.deepcopy(n) for n in networks])
    stacked = (stacked_cls or Stacked)(networks)
    for x, y in _batches(k, 8, image_size, steps, torch.float64, torch.device("cpu")):
        separate.step(x, y, None)
        stacked.step(x, y, None)
    worst = 0.0
    for i, network in enumerate(separate.networks):
        mine = stacked.run_state(i)
        for name, tensor in network.state_dict().items():
            worst = max(worst, (mine[name].double() - tensor.double()).abs().max().item())
    return worst


def measure(
    model_name: str,
    k: int,
    device: torch.device,
    image_size: int = 224,
    batch: int = 16,
    steps: int = 10,
    warmup: int = 3,
    channels_last: bool = False,
) -> dict:
    """Training images/s of k runs stepping one after another (in the memory format the
    project's runs use: ``channels_last``) and of the k runs stacked (NCHW), the arms interleaved
    (separate, stacked; each warmed up first), and their ratio."""
    autocast = torch.bfloat16 if device.type == "cuda" else None
    batches = _batches(k, batch, image_size, warmup + steps, torch.float32, device)
    networks = _networks(model_name, k, torch.float32, device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    arms = {
        "separate": Separate([copy.deepcopy(n).to(memory_format=layout) for n in networks]),
        "stacked": Stacked(networks),
    }
    del networks
    inputs = {  # each run's batches as the project holds them: in the run's memory format
        "separate": [([xi.contiguous(memory_format=layout) for xi in x], y) for x, y in batches],
        "stacked": batches,
    }
    seconds = {arm: 0.0 for arm in arms}
    for i in range(len(batches)):
        for arm, runner in arms.items():
            x, y = inputs[arm][i]
            sync(device)
            start = time.perf_counter()
            runner.step(x, y, autocast)
            sync(device)
            if i >= warmup:
                seconds[arm] += time.perf_counter() - start
    images = k * batch * steps
    out = {
        "model": model_name,
        "k": k,
        "image_size": image_size,
        "batch_size": batch,
        "steps": steps,
        "separate_channels_last": channels_last,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        **{f"{arm}_images_per_s": images / s for arm, s in seconds.items()},
    }
    out["stacked_over_separate"] = out["stacked_images_per_s"] / out["separate_images_per_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument(
        "--channels-last", action="store_true", help="the separate runs in channels_last"
    )
    parser.add_argument("--tiny", action="store_true", help="timm's test network, 32 px, CPU")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if cuda else "cpu")
    models = args.models or (
        ["test_resnet"] if args.tiny else ["vgg16.tv_in1k", "resnext101_32x16d"]
    )
    image_size = args.image_size or (32 if args.tiny else 224)
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"device: {name}, torch {torch.__version__}")
    for model_name in models:
        if not cuda:
            diff = equivalence(model_name)
            print(f"{model_name}: stacked = separate in float64 to {diff:.1e}")
        row = measure(
            model_name,
            args.k,
            device,
            image_size=image_size,
            steps=args.steps,
            channels_last=args.channels_last,
        )
        print(
            f"{model_name}, k = {row['k']}, {image_size} px: separate "
            f"{row['separate_images_per_s']:.1f} img/s, stacked {row['stacked_images_per_s']:.1f} "
            f"img/s; ratio stacked/separate {row['stacked_over_separate']:.3f}"
        )


if __name__ == "__main__":
    main()
