"""Sync N local repositories that have no new commits, next to a bare ``git fetch`` loop over the same ones.

    .venv/bin/python bench/sync_repos.py [--repos 200]

Both loops run sequentially in this process, on the same checkouts, after a first (untimed) sync has
cloned everything. A peach sync does more than a fetch on purpose: it also forces the working tree to
the commit (``checkout --force`` + ``clean -ffdx``) and reads the refs it needs, so the ratio is the
price of "the checkout always equals the remote head".
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scheduler.config import Repository
from scheduler.repos import RepositorySync

GIT = [
    "git",
    "-c",
    "user.name=bench",
    "-c",
    "user.email=bench@peach.invalid",
    "-c",
    "init.defaultBranch=master",
]
TASKS = "codops: bench\ntasks:\n  hello:\n    notebook: hello.py\n    method: main\n    executor: python\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repos", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peach-bench-") as tmp:
        root = Path(tmp)
        seed = root / "seed"
        subprocess.run([*GIT, "init", "--quiet", str(seed)], check=True, timeout=60)
        (seed / "peach.yaml").write_text(TASKS)
        (seed / "hello.py").write_text("def main():\n    print('hello')\n")
        subprocess.run([*GIT, "-C", str(seed), "add", "--all"], check=True, timeout=60)
        subprocess.run([*GIT, "-C", str(seed), "commit", "--quiet", "-m", "seed"], check=True, timeout=60)
        urls = []
        for i in range(args.repos):
            url = root / "upstream" / f"repo{i:03d}.git"
            subprocess.run([*GIT, "clone", "--quiet", "--bare", str(seed), str(url)], check=True, timeout=60)
            urls.append(str(url))
        syncs = [RepositorySync("bench", Repository(url=url), root / "ws", timeout=60) for url in urls]
        for sync in syncs:  # the clones: not timed
            if sync.sync().error:
                raise SystemExit(f"first sync failed: {sync.sync().error}")

        started = time.perf_counter()
        results = [sync.sync() for sync in syncs]
        peach = time.perf_counter() - started
        assert all(r.fresh and not r.error for r in results)

        started = time.perf_counter()
        for sync, url in zip(syncs, urls, strict=True):
            refspec = "+refs/heads/master:refs/remotes/origin/master"
            subprocess.run(
                ["git", "-C", str(sync.path), "fetch", "--quiet", "--no-tags", url, refspec],
                check=True,
                timeout=60,
            )
        fetch = time.perf_counter() - started

    n = args.repos
    print(f"peach sync, {n} repositories, no new commits: {peach:.2f}s ({peach / n * 1000:.1f} ms each)")
    print(f"bare git fetch loop, same repositories:       {fetch:.2f}s ({fetch / n * 1000:.1f} ms each)")
    print(f"ratio peach / bare fetch: {peach / fetch:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
