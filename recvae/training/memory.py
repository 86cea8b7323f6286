"""What training will need in memory, checked against what the device has free before anything is allocated."""

from __future__ import annotations

from pathlib import Path

import torch

from recvae.config import Config, ConfigError
from recvae.models.neural import build_module


def training_memory_bytes(config: Config, n_items: int, n_users: int) -> int:
    """A low estimate of what training needs: weights, gradients, Adam's two moments and the best epoch's copy (4 bytes
    each), plus one batch's logits and their gradient; counted on a module built on the meta device (no memory)."""
    with torch.device("meta"):
        module = build_module(n_items, config.model)
    tensors = [*module.parameters(), *module.buffers()]
    n_all = sum(t.numel() for t in tensors)
    n_trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
    batch = min(config.train.batch_size, n_users)
    return 4 * (2 * n_all + 3 * n_trained) + 4 * 2 * batch * n_items


def available_memory(device: torch.device) -> int | None:
    """Bytes free on `device`: the GPU's free memory, or the host's available memory within its cgroup limit."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    found = []
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        found.append(int(meminfo["MemAvailable"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError):
        pass
    try:  # a container's limit (cgroup v2), which /proc/meminfo does not show; its page cache is reclaimable
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
            used = int((cgroup / "memory.current").read_text()) - int(stat.get("inactive_file", 0))
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_memory(config: Config, n_items: int, n_users: int, device: torch.device) -> None:
    """ConfigError, naming the sizes and the estimate, when training would need more memory than `device` has free."""
    need = training_memory_bytes(config, n_items, n_users)
    have = available_memory(device)
    if have is not None and need > have:
        mc = config.model
        raise ConfigError(
            f"model.hidden_dims={list(mc.hidden_dims)}, model.latent_dim={mc.latent_dim} and "
            f"train.batch_size={config.train.batch_size} on {n_items:,} items need about {need / 2**30:,.1f} GiB to "
            f"train (weights, gradients, Adam moments, the best epoch's copy), more than the {have / 2**30:,.1f} GiB "
            f"available on {device.type}"
        )
