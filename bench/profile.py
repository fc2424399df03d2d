"""py-spy around the saturation phase: one collapsed-stack file per process, and a summary.

Sampling slows the processes down, so a profiled run's figures are not reported as
benchmark results; the profile says where the time goes, not how much there is.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections import Counter
from pathlib import Path


class Profiler:
    """``py-spy record --format raw`` on each process until ``stop``."""

    def __init__(self, out_dir: Path, rate: int = 200) -> None:
        self._out = out_dir
        self._rate = rate
        self._running: list[asyncio.subprocess.Process] = []

    async def start(self, label: str, pids: dict[str, int]) -> None:
        """Attach to every process (non-blocking sampling: less distortion)."""
        self._out.mkdir(parents=True, exist_ok=True)
        for role, pid in pids.items():
            self._running.append(await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking",
                "--format", "raw", "--rate", str(self._rate),
                "-o", str(self._out / f"{label}-{role}.txt"), "-p", str(pid),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))

    async def stop(self) -> None:
        """SIGINT makes py-spy write its file and exit."""
        for process in self._running:
            process.send_signal(signal.SIGINT)
        await asyncio.gather(*(p.wait() for p in self._running))
        self._running.clear()


def summary(path: Path, top: int = 25) -> str:
    """Self time and inclusive time of the busiest functions in one collapsed-stack file."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        # "function (file:line)" -> "function (file)": one entry per function.
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{path.name}: {total} samples", "  self:"]
    lines += [f"    {100 * n / total:5.1f}% {f}" for f, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {100 * n / total:5.1f}% {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        print(summary(Path(name)))
