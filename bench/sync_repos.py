"""Sync N local repositories that have no new commits, next to a bare ``git fetch`` loop over the same ones.

    .venv/bin/python bench/sync_repos.py [--repos 200]

Both loops run sequentially in this process, on the same checkouts, after a first (untimed) sync has
cloned everything; the rounds alternate and the best of each is kept. A peach sync does more than a
fetch on purpose: it also reads the refs it needs and forces the working tree to the commit
(``checkout --force`` + ``clean -ffdx``), so the ratio is the price of "the checkout always equals
the remote head".
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scheduler.config import Repository
from scheduler.repos.sync import RepositorySync

GIT = [
    "git",
    "-c",
    "user.name=bench",
    "-c",
    "user.email=bench@peach.invalid",
    "-c",
    "init.defaultBranch=master",
]
# The same fetch a peach sync runs, minus the supervision, the refs, the checkout and the clean.
FETCH = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head"]
REFSPEC = "+refs/heads/master:refs/remotes/origin/master"
TASKS = "codops: bench\ntasks:\n  hello:\n    notebook: hello.py\n    method: main\n    executor: python\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repos", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
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

        peach, fetch = [], []
        for _round in range(args.rounds):  # interleaved, best of each: other load on the machine hurts both
            started = time.perf_counter()
            results = [sync.sync() for sync in syncs]
            peach.append(time.perf_counter() - started)
            assert all(r.fresh and not r.error for r in results)

            started = time.perf_counter()
            for sync, url in zip(syncs, urls, strict=True):
                subprocess.run(["git", "-C", str(sync.path), *FETCH, url, REFSPEC], check=True, timeout=60)
            fetch.append(time.perf_counter() - started)

    n, best_peach, best_fetch = args.repos, min(peach), min(fetch)
    print(f"{n} repositories, no new commits, best of {args.rounds} rounds")
    print(f"peach sync:          {best_peach:.2f}s ({best_peach / n * 1000:.1f} ms each)")
    print(f"bare git fetch loop: {best_fetch:.2f}s ({best_fetch / n * 1000:.1f} ms each)")
    print(f"ratio peach / bare fetch: {best_peach / best_fetch:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
