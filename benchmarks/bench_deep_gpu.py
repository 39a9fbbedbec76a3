"""Training throughput of the deep pathway: the full pipeline vs the bare model step, same device, same run.

full: what `train_deep` does per step (crops uploaded once, batch gathered on the device, batched augmentation
      on the device, channels-last, bf16 autocast on CUDA, forward + backward + AdamW), timed including the
      one-off upload of the cohort's crops;
bare: forward + backward + AdamW on batches already made on the device (no gather, no augmentation).
Prints volumes/second of each and full/bare (target >= 80 %). Without a GPU it says so and measures on CPU.

    .venv/bin/python benchmarks/bench_deep_gpu.py [--preset dpet] [--cases 96] [--steps 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from DPETResponseLib.deep.data import BatchAugmenter
from DPETResponseLib.deep.train import DeepConfig, _autocast, resolve_device, train_step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _setup(config: DeepConfig, device: torch.device):
    torch.manual_seed(0)
    net = config.make_net().to(device)
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last_3d)
    net.train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    return net, optimiser, loss_fn


def full_pipeline(config, device, host_crops, labels, steps, warmup):
    net, optimiser, loss_fn = _setup(config, device)
    augment = BatchAugmenter(seed=0)
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(rng.choice(len(host_crops), config.batch_size, replace=False))
               for _ in range(steps + warmup)]
    for idx in batches[:warmup]:
        train_step(net, host_crops.to(device), labels.to(device), None, idx, loss_fn, optimiser, augment, device,
                   config.amp)
    _sync(device)
    start = time.perf_counter()
    crops, y = host_crops.to(device), labels.to(device)  # the one-off upload is part of the pipeline
    for idx in batches[warmup:]:
        train_step(net, crops, y, None, idx, loss_fn, optimiser, augment, device, config.amp)
    _sync(device)
    return steps * config.batch_size / (time.perf_counter() - start)


def bare_step(config, device, steps, warmup):
    net, optimiser, loss_fn = _setup(config, device)
    shape = (config.batch_size, config.crop.channels, config.size, config.size, config.size)
    x = torch.rand(shape, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    y = (torch.rand(config.batch_size, device=device) > 0.5).float()

    def step():
        with _autocast(device, config.amp):
            loss = loss_fn(net(x).float(), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * config.batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", help="deep preset (default: dpet on a GPU, cpu-fast on CPU)")
    parser.add_argument("--cases", type=int, default=96)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (CPU runs)")
    args = parser.parse_args()

    device = resolve_device("auto")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    else:
        torch.set_num_threads(args.threads)
        print(f"no GPU found: measuring on CPU ({args.threads} threads)")
    config = DeepConfig.preset(args.preset or ("dpet" if device.type == "cuda" else "cpu-fast"))
    print(f"preset {args.preset or '(default)'}: {config.arch}, {config.size}^3 at {config.spacing} mm, "
          f"{config.crop.channels} channels, batch {config.batch_size}, amp={config.amp and device.type == 'cuda'}")
    # The crops a cohort gives (uniform noise: throughput does not depend on content).
    host_crops = torch.rand(args.cases, config.crop.channels, config.size, config.size, config.size)
    labels = (torch.arange(args.cases) % 2).float()
    if device.type == "cuda":
        host_crops = host_crops.pin_memory()
    full = full_pipeline(config, device, host_crops, labels, args.steps, args.warmup)
    bare = bare_step(config, device, args.steps, args.warmup)
    print(f"full pipeline (upload, gather, augmentation, step): {full:8.1f} volumes/s")
    print(f"bare model step (tensors already on the device):   {bare:8.1f} volumes/s")
    print(f"full / bare: {100 * full / bare:.0f} % (target >= 80 %)")


if __name__ == "__main__":
    main()
