"""Replication wall time of registry-workers' copy engine against ``skopeo copy``, same registries, same run.

    python bench/replication.py [--repeat N] [--parallel K] [--budget-mib M] [--seed S] [--profile]

The issue's goal: replicating an image set takes at most skopeo's wall time (ratio ≤ 1.0), both
cold (destination empty) and warm (blobs already there), and copying tags that share layers
moves each unique blob once.

Set-up: one source Distribution registry (``tests.support.services.DistributionRegistry``) holding

* the **image set** — ``--images`` (10) single-repository images of 1-8 seeded random layers
  (the first 8-64 MiB, the others 1-16 MiB, log-uniform), the last one a multi-arch OCI index
  of linux/amd64 + linux/arm64 with different layers per platform; the plan is redrawn from the
  seed until its total lies within ``--budget-mib`` (480) and two thirds of it;
* the **shared set** — 20 tags of one repository: two base layers (32 + 16 MiB) in every tag,
  one 4 MiB layer per group of five tags, one 1-2 MiB layer and a config of their own.

Each tool copies into its **own fresh destination registry** (identically configured, started
empty for every block), so both copy cold into an empty registry; they alternate which goes
first from one repetition to the next. Per repetition and per mode (``sequential``: one image
after another; ``K at a time``: ``--parallel`` images concurrently, like the runner's four jobs):

1. cold — every image of the set, tag ``cold``;
2. warm — the same images again under tag ``warm``: new tag, every blob and manifest present;
3. no-op — tag ``cold`` again (the destination tag already points at the digest);
4. shared — the 20 shared-layer tags into another fresh pair of destinations.

registry-workers runs in this process: ``copy_image`` with the production defaults (one
``RegistryClient`` per registry shared by every copy, 8 connections each, 4 blobs at a time per
image, monolithic upload up to 16 MiB, 8 MiB ``PATCH`` chunks above) and a ``MemoryResumeStore``
standing in for the database checkpoint store. skopeo runs as ``skopeo copy --all
--preserve-digests`` per image, one process per image (K at a time in the parallel mode).

After every run each destination is checked: the tag's manifest digest equals the source's, the
index children exist by digest, every blob answers ``HEAD``. Figures per run: wall time, the
tool's CPU (this process's ``process_time``; reaped skopeo children's rusage), the two registries'
CPU (``/proc/PID/stat``) and the bytes the destination registry read (``rchar`` of
``/proc/PID/io``: request bodies, plus a little file I/O), for both tools alike. Medians over
``--repeat`` (5) repetitions; ratio = registry-workers / skopeo.

``--profile`` adds one unmeasured cold copy of the image set per mode under py-spy (this
process, 200 Hz) and puts a summary in the results. Everything runs in temporary directories
and registries started here, stopped by their own PIDs. Results are printed as Markdown and
written to ``bench/results/replication.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import aiohttp

from tests.support import oci
from tests.support.services import DistributionRegistry
from workers.replication.copy import CopyResult, copy_image
from workers.replication.registry import RegistryClient
from workers.replication.resume import MemoryResumeStore

RESULTS = REPO_ROOT / "bench" / "results" / "replication.md"
GOAL_RATIO = 1.0
MiB = 1024 * 1024
CREATED = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so configs (and digests) depend on the seed only
PLATFORMS = (("linux", "amd64"), ("linux", "arm64"))
SHARED_REPO = "shared/app"
SHARED_TAGS = 20
RUN_TIMEOUT_S = 180.0  # a run takes seconds; past this it is stuck, and the tasks say where
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOG_FIELD = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S*)')  # Distribution logs logfmt
TOOLS = ("registry-workers", "skopeo")
SKOPEO = ["skopeo", "copy", "--all", "--preserve-digests", "--quiet", "--src-tls-verify=false",
          "--dest-tls-verify=false", "--src-no-creds", "--dest-no-creds", "--retry-times", "2"]  # fmt: skip


# --------------------------------------------------------------------------------------------- the images


@dataclass(frozen=True)
class ImageSpec:
    """One image to push: ``layers[i]`` are the layer sizes of ``platforms[i]`` (two entries = an index)."""

    repo: str
    tag: str
    platforms: tuple[tuple[str, str], ...]
    layers: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> int:
        return sum(sum(sizes) for sizes in self.layers)


@dataclass(frozen=True)
class SourceImage:
    """What the source holds for one tag: its digest, the index children, every blob with its size."""

    repo: str
    tag: str
    digest: str
    children: tuple[str, ...]
    blobs: dict[str, int]


def log_uniform(rng: random.Random, low_mib: float, high_mib: float) -> int:
    return int(MiB * math.exp(rng.uniform(math.log(low_mib), math.log(high_mib))))


def plan_image_set(rng: random.Random, count: int, budget: int) -> list[ImageSpec]:
    """``count`` images (the last multi-arch), redrawn until the total is within [2/3, 1] x ``budget``.

    The first image's base layer is 64 MiB, so the set always spans the whole 1-64 MiB range.
    """
    for _ in range(100_000):
        specs = []
        for index in range(count):
            platforms = PLATFORMS if index == count - 1 else PLATFORMS[:1]
            layer_count = rng.randint(1, 8)
            layers = tuple(
                (64 * MiB if index == 0 else log_uniform(rng, 8, 64),
                 *(log_uniform(rng, 1, 16) for _ in range(layer_count - 1)))
                for _ in platforms
            )  # fmt: skip
            specs.append(ImageSpec(f"set/image-{index:02d}", "v1", platforms, layers))
        if 2 * budget / 3 <= sum(spec.size for spec in specs) <= budget:
            return specs
    raise SystemExit(f"no image set of {count} images fits in --budget-mib {budget // MiB}; raise it")


def shared_layer_tags(rng: random.Random) -> list[tuple[str, list[bytes]]]:
    """20 tags: two base layers in all, one layer per group of five tags, one layer of their own."""
    base = [rng.randbytes(32 * MiB), rng.randbytes(16 * MiB)]
    groups = [rng.randbytes(4 * MiB) for _ in range(SHARED_TAGS // 5)]
    return [
        (f"v{index + 1:02d}", [*base, groups[index // 5], rng.randbytes(rng.randint(MiB, 2 * MiB))])
        for index in range(SHARED_TAGS)
    ]


def blob_sizes(manifest: bytes) -> dict[str, int]:
    document = json.loads(manifest)
    return {d["digest"]: d["size"] for d in [document["config"], *document["layers"]]}


async def push_spec(url: str, spec: ImageSpec, rng: random.Random, http: aiohttp.ClientSession) -> SourceImage:
    """Push one planned image (an index of per-platform images pushed by digest when multi-arch)."""
    children = []
    for plat, sizes in zip(spec.platforms, spec.layers, strict=True):
        tag = spec.tag if len(spec.platforms) == 1 else None
        layers = [rng.randbytes(size) for size in sizes]
        children.append(await oci.push_image(url, spec.repo, tag, layers=layers, platform=plat, created=CREATED,
                                             session=http))  # fmt: skip
    blobs = {digest: size for child in children for digest, size in blob_sizes(child.manifest).items()}
    if len(children) == 1:
        return SourceImage(spec.repo, spec.tag, children[0].digest, (), blobs)
    entries = [
        {"mediaType": child.media_type, "digest": child.digest, "size": child.size,
         "platform": {"architecture": arch, "os": os_name, **({"variant": "v8"} if arch == "arm64" else {})}}
        for child, (os_name, arch) in zip(children, spec.platforms, strict=True)
    ]  # fmt: skip
    body = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI.index, "manifests": entries}).encode()
    digest = await oci.push_manifest(url, spec.repo, spec.tag, body, oci.OCI.index, session=http)
    return SourceImage(spec.repo, spec.tag, digest, tuple(c.digest for c in children), blobs)


async def populate_source(
    url: str, specs: Sequence[ImageSpec], seed: int
) -> tuple[list[SourceImage], list[SourceImage]]:
    """Push the image set and the shared set; returns both as the source holds them."""
    rng = random.Random(seed)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        image_set = [await push_spec(url, spec, rng, http) for spec in specs]
        shared = []
        for tag, layers in shared_layer_tags(rng):
            pushed = await oci.push_image(url, SHARED_REPO, tag, layers=layers, created=CREATED, session=http)
            shared.append(SourceImage(SHARED_REPO, tag, pushed.digest, (), blob_sizes(pushed.manifest)))
        tiny = await oci.push_image(url, "warmup/tiny", "v1", layers=[1024], created=CREATED, session=http)
    return image_set, [*shared, SourceImage("warmup/tiny", "v1", tiny.digest, (), blob_sizes(tiny.manifest))]


def unique_bytes(images: Sequence[SourceImage]) -> int:
    return sum({d: s for image in images for d, s in image.blobs.items()}.values())


# --------------------------------------------------------------------------------------------- the two tools


@dataclass(frozen=True)
class CopyJob:
    repo: str
    src_ref: str
    dst_tag: str


@dataclass(frozen=True)
class ToolRun:
    seconds: float
    cpu_s: float
    moved: int | None = None  # CopyResult.bytes_transferred, summed (registry-workers only)
    retries: int = 0  # skopeo's "retrying" warnings (registry-workers retries silently)


CopyTool = Callable[[Sequence[CopyJob], DistributionRegistry, DistributionRegistry, int], Awaitable[ToolRun]]


async def with_registry_workers(jobs: Sequence[CopyJob], src: DistributionRegistry, dst: DistributionRegistry,
                                parallel: int) -> ToolRun:  # fmt: skip
    """``copy_image`` per job, ``parallel`` at a time, over one client per registry (as the runner does)."""
    resume = MemoryResumeStore()
    slots = asyncio.Semaphore(parallel)
    async with RegistryClient(src.url) as source, RegistryClient(dst.url) as destination:

        async def copy(job: CopyJob) -> CopyResult:
            async with slots:
                return await copy_image(source, job.repo, job.src_ref, destination, job.repo, job.dst_tag,
                                        override=True, resume=resume)  # fmt: skip

        cpu, started = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(copy(job) for job in jobs))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return ToolRun(seconds, cpu, sum(r.bytes_transferred for r in results))


async def with_skopeo(jobs: Sequence[CopyJob], src: DistributionRegistry, dst: DistributionRegistry,
                      parallel: int) -> ToolRun:  # fmt: skip
    """One ``skopeo copy --all --preserve-digests`` process per job, ``parallel`` at a time."""
    slots = asyncio.Semaphore(parallel)
    retries = 0

    async def copy(job: CopyJob) -> None:
        nonlocal retries
        separator = "@" if ":" in job.src_ref else ":"
        cmd = [*SKOPEO, f"docker://{src.host}/{job.repo}{separator}{job.src_ref}",
               f"docker://{dst.host}/{job.repo}:{job.dst_tag}"]  # fmt: skip
        async with slots:
            proc = await asyncio.create_subprocess_exec(*cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                        stderr=subprocess.PIPE)  # fmt: skip
            _, err = await proc.communicate()
        retries += err.count(b"retrying")
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {err.decode(errors='replace')}\n"
                               f"destination log:\n{dst.log_tail(3000)}")  # fmt: skip

    before, started = children_cpu_s(), time.perf_counter()
    await asyncio.gather(*(copy(job) for job in jobs))
    return ToolRun(time.perf_counter() - started, children_cpu_s() - before, retries=retries)


TOOL_RUNNERS: dict[str, CopyTool] = {"registry-workers": with_registry_workers, "skopeo": with_skopeo}


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int | None) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def bytes_read(pid: int | None) -> int:
    """``rchar`` of ``/proc/PID/io``: every byte the process read, sockets included."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Sample:
    case: str
    tool: str
    seconds: float
    cpu_s: float
    registries_cpu_s: float
    received: int
    moved: int | None
    retries: int
    server_errors: tuple[str, ...]  # the destination's 5xx answers during the run, as it logged them


async def measure(case: str, tool: str, jobs: Sequence[CopyJob], src: DistributionRegistry,
                  dst: DistributionRegistry, parallel: int) -> Sample:  # fmt: skip
    registries = (src.pid, dst.pid)
    cpu_before, read_before = sum(map(process_cpu_s, registries)), bytes_read(dst.pid)
    log_before = dst.log_path.stat().st_size
    copying = asyncio.ensure_future(TOOL_RUNNERS[tool](jobs, src, dst, parallel))
    done, _ = await asyncio.wait([copying], timeout=RUN_TIMEOUT_S)
    if not done:
        print(f"{case}, {tool}: not done after {RUN_TIMEOUT_S:.0f} s; where the tasks wait:", file=sys.stderr)
        print(describe_tasks(), file=sys.stderr)
        copying.cancel()
        raise TimeoutError(f"{case}, {tool}: stuck for {RUN_TIMEOUT_S:.0f} s")
    run = copying.result()
    registries_cpu = sum(map(process_cpu_s, registries)) - cpu_before
    received = bytes_read(dst.pid) - read_before
    errors = server_errors(dst.log_path, log_before)
    return Sample(case, tool, run.seconds, run.cpu_s, registries_cpu, received, run.moved, run.retries, errors)


def server_errors(log_path: Path, offset: int) -> tuple[str, ...]:
    """``METHOD STATUS: err.message`` of every 5xx the registry logged after ``offset`` (logfmt lines)."""
    with log_path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    found = []
    for line in lines:
        fields = {key: value.strip('"') for key, value in LOG_FIELD.findall(line)}
        if fields.get("http.response.status", "").startswith("5"):
            method, status = fields.get("http.request.method", "?"), fields["http.response.status"]
            found.append(f"{method} {status}: {fields.get('err.message', '')} ({fields.get('err.detail', '')})")
    return tuple(found)


async def verify(dst: DistributionRegistry, images: Sequence[SourceImage], tag: str) -> None:
    """Raises ``AssertionError`` unless ``tag`` of every image has the source digest and all it references."""
    async with aiohttp.ClientSession() as http:
        for image in images:
            digest = await oci.get_manifest_digest(dst.url, image.repo, tag, session=http)
            assert digest == image.digest, f"{dst.host}/{image.repo}:{tag} is {digest}, source has {image.digest}"
            for child in image.children:
                found = await oci.get_manifest_digest(dst.url, image.repo, child, session=http)
                assert found == child, f"{dst.host}/{image.repo}@{child} missing"
            for blob in image.blobs:
                async with http.head(f"{dst.url}/v2/{image.repo}/blobs/{blob}") as resp:
                    assert resp.status == 200, f"{dst.host}/{image.repo} blob {blob}: {resp.status}"


def describe_tasks() -> str:
    """Every pending task as its chain of awaits (``Task.print_stack`` shows only the outer frame)."""
    chains: Counter[str] = Counter()
    for task in asyncio.all_tasks():
        frames: list[str] = []
        awaitable: object = task.get_coro()
        while awaitable is not None:
            frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "ag_frame", None)
            if frame is not None:
                frames.append(f"{frame.f_code.co_name} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})")
            awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "ag_await", None)
        chains[" > ".join(frames)] += 1
    return "\n".join(f"{count:4d} x {chain}" for chain, count in chains.most_common())


def jobs_for(images: Sequence[SourceImage], tag: str) -> list[CopyJob]:
    return [CopyJob(image.repo, image.tag, tag) for image in images]


@contextlib.contextmanager
def fresh_destinations() -> Iterator[dict[str, DistributionRegistry]]:
    """One empty, identically configured registry per tool; stopped and removed afterwards."""
    with DistributionRegistry() as first, DistributionRegistry() as second:
        yield dict(zip(TOOLS, (first, second), strict=True))


async def run_block(mode: str, parallel: int, order: Sequence[str], src: DistributionRegistry,
                    image_set: Sequence[SourceImage], shared: Sequence[SourceImage]) -> list[Sample]:  # fmt: skip
    """Cold, warm and no-op copies of the image set, then the shared set, each tool into its own registries."""
    samples = []
    with fresh_destinations() as dsts:
        for case, tag, expected in (("cold", "cold", "cold"), ("warm", "warm", "warm"), ("no-op", "cold", "cold")):
            for tool in order:
                samples.append(await measure(f"{case}, {mode}", tool, jobs_for(image_set, tag), src, dsts[tool],
                                             parallel))  # fmt: skip
                await verify(dsts[tool], image_set, expected)
    with fresh_destinations() as dsts:
        for tool in order:
            jobs = [CopyJob(image.repo, image.tag, image.tag) for image in shared]
            samples.append(await measure(f"shared layers, {mode}", tool, jobs, src, dsts[tool], parallel))
            await verify_tags(dsts[tool], shared)
    return samples


async def verify_tags(dst: DistributionRegistry, images: Sequence[SourceImage]) -> None:
    for image in images:
        await verify(dst, [image], image.tag)


async def warm_up(src: DistributionRegistry, tiny: SourceImage) -> None:
    """One untimed copy per tool (skopeo binary in the page cache, aiohttp code paths warm)."""
    with fresh_destinations() as dsts:
        for tool in TOOLS:
            await TOOL_RUNNERS[tool](jobs_for([tiny], "v1"), src, dsts[tool], 1)


# --------------------------------------------------------------------------------------------- profiling


class Profiler:
    """py-spy sampling this very process (on-CPU samples only) into raw collapsed stacks."""

    def __init__(self, output: Path):
        self.output = output
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        cmd = ["py-spy", "record", "--pid", str(os.getpid()), "--rate", "200", "--format", "raw", "--nonblocking",
               "--output", str(self.output)]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(1.0)  # py-spy attaches before the copy starts
        return self

    def __exit__(self, *_exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def summarise_profile(folded: Path, top: int = 15) -> list[str]:
    """Self time by package and by function, inclusive time by innermost ``workers`` frame."""
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    by_stage: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count, frames = int(count_text), [f for f in stack.split(";") if f.strip()]
        total += count
        leaf = frames[-1] if frames else "(no Python frame)"
        by_package[_package(leaf)] += count
        by_function[leaf] += count
        own = [f for f in frames if "workers/replication/" in f]
        by_stage[_short(own[-1]) if own else "(outside workers.replication)"] += count

    def rows(counter: Counter[str], limit: int) -> list[str]:
        return [f"  {100 * n / max(total, 1):5.1f} %  {name}" for name, n in counter.most_common(limit)]

    return [f"{total} samples at 200 Hz in which py-spy judged the thread busy (its idle detection is a "
            "heuristic: some time in `select` is counted)", "",
            "self time by package:", *rows(by_package, 12), "",
            "inclusive, by innermost workers.replication frame:", *rows(by_stage, 12), "",
            "self time by function:", *rows(by_function, top)]  # fmt: skip


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    path = where.rpartition(":")[0]
    return f"{name} ({path[path.find('workers/') :] if 'workers/' in path else Path(path).name})"


def _package(frame: str) -> str:
    path = frame.rpartition(" (")[2].rpartition(":")[0]
    if "workers/replication/" in path:
        return "workers.replication." + Path(path).stem
    parts = Path(path).parts  # py-spy shortens paths to the package: asyncio/events.py, aiohttp/streams.py
    return parts[0].removesuffix(".py") if parts else "(native / no Python frame)"


async def profile_copies(src: DistributionRegistry, image_set: Sequence[SourceImage], parallel: int,
                         workdir: Path) -> list[str]:  # fmt: skip
    """One unmeasured cold copy of the image set per mode, sampled with py-spy."""
    lines = []
    for mode, width in (("sequential", 1), (f"{parallel} at a time", parallel)):
        folded = workdir / f"profile-{width}.folded"
        with DistributionRegistry() as dst, Profiler(folded):
            run = await with_registry_workers(jobs_for(image_set, "cold"), src, dst, width)
        lines += [f"#### registry-workers, cold, {mode}: {run.seconds:.2f} s wall, {run.cpu_s:.2f} s CPU", "",
                  "```", *summarise_profile(folded), "```", ""]  # fmt: skip
    return lines


# --------------------------------------------------------------------------------------------- report


@dataclass
class Report:
    args: argparse.Namespace
    image_set: list[SourceImage] = field(default_factory=list)
    shared: list[SourceImage] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    engine: str = ""
    load: list[float] = field(default_factory=list)

    def of(self, case: str, tool: str) -> list[Sample]:
        return [s for s in self.samples if s.case == case and s.tool == tool]

    def cases(self) -> list[str]:
        return list(dict.fromkeys(s.case for s in self.samples))


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _mib(n: float) -> str:
    return f"{n / MiB:,.1f} MiB"


def time_table(report: Report) -> list[str]:
    lines = ["| Case | registry-workers, median s | skopeo, median s | ratio rw / skopeo | goal ≤ 1.0x | "
             "runs rw (s) | runs skopeo (s) |",
             "| --- | ---: | ---: | ---: | --- | --- | --- |"]  # fmt: skip
    for case in report.cases():
        rw, sk = (_median([s.seconds for s in report.of(case, tool)]) for tool in TOOLS)
        ratio = rw / sk if sk else float("nan")
        runs = [", ".join(f"{s.seconds:.2f}" for s in report.of(case, tool)) for tool in TOOLS]
        verdict = "met" if ratio <= GOAL_RATIO else "**NOT met**"
        lines.append(f"| {case} | {rw:.3f} | {sk:.3f} | **{ratio:.2f}x** | {verdict} | {runs[0]} | {runs[1]} |")
    return lines


def cost_table(report: Report) -> list[str]:
    lines = ["| Case | tool | CPU of the tool, median s | CPU of both registries, median s | "
             "bytes read by the destination, median | throughput, median | destination 5xx / skopeo retries, "
             "all runs |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for case in report.cases():
        for tool in TOOLS:
            samples = report.of(case, tool)
            received = _median([s.received for s in samples])
            rate = _median([s.received / s.seconds / MiB for s in samples if s.seconds])
            throughput = f"{rate:,.0f} MiB/s" if received >= MiB else "-"
            trouble = f"{sum(len(s.server_errors) for s in samples)} / {sum(s.retries for s in samples)}"
            lines.append(f"| {case} | {tool} | {_median([s.cpu_s for s in samples]):.2f} | "
                         f"{_median([s.registries_cpu_s for s in samples]):.2f} | {_mib(received)} | "
                         f"{throughput} | {trouble} |")  # fmt: skip
    return lines


def error_notes(report: Report) -> list[str]:
    """The destination's 5xx answers, by run, as Distribution logged them (registry-workers retries them)."""
    lines = []
    for sample in report.samples:
        for error, count in Counter(sample.server_errors).most_common():
            lines.append(f"- {sample.case}, {sample.tool}: {count} x `{error}`")
    return ["Server errors logged by the destination during the runs:", "", *lines, ""] if lines else []


def shared_table(report: Report) -> list[str]:
    unique = unique_bytes(report.shared)
    referenced = sum(sum(image.blobs.values()) for image in report.shared)
    lines = [f"{SHARED_TAGS} tags of `{SHARED_REPO}`: {_mib(referenced)} referenced in all, {_mib(unique)} "
             f"({unique:,} bytes) in unique blobs.", "",
             "| Mode | registry-workers `bytes_transferred` (each run) | = unique blobs? | "
             "destination read, rw (median) | destination read, skopeo (median) |",
             "| --- | --- | --- | ---: | ---: |"]  # fmt: skip
    for case in (c for c in report.cases() if c.startswith("shared")):
        rw, sk = report.of(case, TOOLS[0]), report.of(case, TOOLS[1])
        moved = sorted({s.moved or 0 for s in rw})
        equal = "yes" if moved == [unique] else f"**no** (+{_mib(max(moved) - unique)} at most)"
        received = [_mib(_median([s.received for s in samples])) for samples in (rw, sk)]
        lines.append(f"| {case.partition(', ')[2]} | {', '.join(f'{m:,}' for m in moved)} | {equal} | "
                     f"{received[0]} | {received[1]} |")  # fmt: skip
    return lines


def set_description(report: Report) -> str:
    images = report.image_set
    layer_sizes = [s for image in images for d, s in image.blobs.items() if s >= MiB]
    return (f"{len(images)} images in {len(images)} repositories, {len(layer_sizes)} layers of "
            f"{min(layer_sizes) / MiB:.1f}-{max(layer_sizes) / MiB:.1f} MiB ({_mib(unique_bytes(images))} of blobs "
            f"in all); `{images[-1].repo}` is an OCI index of {len(images[-1].children)} platforms.")  # fmt: skip


def render(report: Report) -> str:
    args = report.args
    lines = [
        f"## Replication benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: `nproc` = {os.cpu_count()}, {platform.platform()}, Python {platform.python_version()}, "
        f"{_version(['skopeo', '--version'])}, Distribution {_version(['docker-registry', '--version'])}.",
        f"Parameters: `--repeat {args.repeat} --parallel {args.parallel} --images {args.images} "
        f"--budget-mib {args.budget_mib} --seed {args.seed}`; total run time {report.elapsed_s:.0f} s; "
        f"1-minute load average {' → '.join(f'{x:.1f}' for x in report.load)} (start → end; the machine is "
        "shared, so absolute times move between runs; the ratios pair runs taken seconds apart).",
        f"Engine: {report.engine}.",
        f"Image set: {set_description(report)}",
        "Each tool copies into its own fresh, empty Distribution registry (same config), same source, same "
        "run; the tool going first alternates between repetitions. *warm*: same images under a new tag, every "
        "blob present; *no-op*: the tag copied again, already current. skopeo: `skopeo copy --all "
        "--preserve-digests`, one process per image. Every run is verified (manifest digests, index "
        "children, blobs).",
        "",
        "### Wall time",
        "",
        *time_table(report),
        "",
        "### Shared layers: bytes moved",
        "",
        *shared_table(report),
        "",
        "### Cost",
        "",
        "Medians per run; the destination's `rchar` counts request bodies (blobs, manifests) and a little "
        "file I/O. Throughput = bytes read by the destination / wall time.",
        "",
        *cost_table(report),
        "",
        *error_notes(report),
    ]
    if report.profile:
        lines += ["### Where registry-workers' CPU goes (py-spy, one extra cold copy per mode)", "",
                  *report.profile]  # fmt: skip
    return "\n".join(lines)


def engine_fingerprint() -> str:
    """Which copy engine was measured: a hash of ``workers/replication/*.py`` and their newest change."""
    files = sorted((REPO_ROOT / "workers" / "replication").glob("*.py"))
    digest = hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()[:12]
    newest = datetime.fromtimestamp(max(f.stat().st_mtime for f in files), UTC)
    return f"`workers/replication` sha256 {digest}… (newest file change {newest:%Y-%m-%d %H:%M} UTC)"


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "(unknown version)"
    return out.split("\n")[0].replace("skopeo version", "skopeo").split(" github.com")[0]


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of every measurement (median reported)")
    parser.add_argument("--parallel", type=int, default=4, help="images at a time in the parallel mode")
    parser.add_argument("--images", type=int, default=10, help="images in the set (the last one multi-arch)")
    parser.add_argument("--budget-mib", type=int, default=480, help="upper bound of the image set's layer bytes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="sample an extra cold copy per mode with py-spy")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def check_disk(budget_mib: int, path: str = tempfile.gettempdir()) -> None:
    """Source + shared set + two destinations of each, with a margin; refuse to start otherwise."""
    needed = 6 * (budget_mib + 150) * MiB
    free = shutil.disk_usage(path).free
    if free < needed:
        raise SystemExit(f"{path} has {_mib(free)} free; this run needs about {_mib(needed)}")


async def run(args: argparse.Namespace, report: Report) -> None:
    specs = plan_image_set(random.Random(args.seed), args.images, args.budget_mib * MiB)
    modes = (("sequential", 1), (f"{args.parallel} at a time", args.parallel))
    with DistributionRegistry() as src, tempfile.TemporaryDirectory(prefix="bench-replication-") as workdir:
        started = time.perf_counter()
        report.image_set, shared_and_tiny = await populate_source(src.url, specs, args.seed)
        report.shared, tiny = shared_and_tiny[:-1], shared_and_tiny[-1]
        print(f"source populated in {time.perf_counter() - started:.1f} s: {set_description(report)}", file=sys.stderr)
        await warm_up(src, tiny)
        for rep in range(args.repeat):
            order = TOOLS if rep % 2 == 0 else TOOLS[::-1]
            for mode, width in modes:
                block = await run_block(mode, width, order, src, report.image_set, report.shared)
                report.samples += block
                timings = "; ".join(f"{s.case.partition(',')[0]} {s.tool} {s.seconds:.2f} s" for s in block)
                print(f"repetition {rep + 1}/{args.repeat}, {mode}: {timings}", file=sys.stderr)
        if args.profile:
            if shutil.which("py-spy") is None:
                print("--profile: py-spy is not installed; skipped", file=sys.stderr)
            else:
                report.profile = await profile_copies(src, report.image_set, args.parallel, Path(workdir))


async def run_or_explain(args: argparse.Namespace, report: Report) -> None:
    """``run``; on failure, say why at once and show any task that will not stop when cancelled."""
    try:
        await run(args, report)
    except BaseException:
        traceback.print_exc()
        leftovers = asyncio.all_tasks() - {asyncio.current_task()}
        for task in leftovers:
            task.cancel()
        _, stuck = await asyncio.wait(leftovers, timeout=10) if leftovers else (set(), set())
        if stuck:
            print(f"{len(stuck)} tasks still running 10 s after cancel:\n{describe_tasks()}", file=sys.stderr)
            sys.stderr.flush()
            os._exit(1)  # asyncio.run would wait for them forever; the registries are stopped already
        raise


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_disk(args.budget_mib)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = Report(args, engine=engine_fingerprint(), load=[os.getloadavg()[0]])
    asyncio.run(run_or_explain(args, report))
    report.elapsed_s = time.perf_counter() - started
    report.load.append(os.getloadavg()[0])
    text = render(report)
    print(text)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
