"""Chaos for audiences: `python -m connector sync` subprocesses SIGKILLed at random moments (start-up, between
requests, in flight), against a fake TikTok that fails, throttles, drops and stalls a share of the requests,
while the people table changes between runs (new people, people leaving, changed identifiers). Once the
faults stop, reruns end in success and TikTok's audience is exactly the query's hashes: nothing missing,
nothing extra, one audience created."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

from connector.audience_spec import MAPPING_PATH
from connector.testing.fake_tiktok import FakeTikTok

from audience_cli_helpers import ADVERTISER, AUDIENCE_TOKEN, duckdb_project, expected, membership, people, person
from delivery_helpers import PYTHON, REPO, cli_env

SEED = 20261206
CYCLES = 14
BASE = 2000


def _mutate(rows: dict[str, tuple], rng: random.Random, next_id: int) -> int:
    """New people, people leaving and changed identifiers: about 15 % of the audience per cycle."""
    keys = sorted(rows)
    for key in rng.sample(keys, len(keys) // 20):
        del rows[key]
    for key in rng.sample(sorted(rows), len(rows) // 20):
        _, email, phone, idfa, gaid = rows[key]
        rows[key] = (key, f"moved{rng.randrange(10**6)}@example.org" if email else email, phone, idfa, gaid)
    for n in range(next_id, next_id + BASE // 20):
        row = person(n)
        rows[row[0]] = row
    return next_id + BASE // 20


def test_sigkills_and_faults_converge_exactly(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    rows = {r[0]: r for r in people(0, BASE)}
    next_id = BASE
    with duckdb_project(tmp_path / "project") as project, \
            FakeTikTok(audience_access_token=AUDIENCE_TOKEN, advertiser_ids=[ADVERTISER]) as fake:
        project.configure(batch_size=100, max_reject_rate=1, tiktok={"timeout_seconds": 1, "max_retry_seconds": 30,
                                                                     "max_attempts": 8})
        env = cli_env(fake.base_url, TIKTOK_AUDIENCE_ACCESS_TOKEN=AUDIENCE_TOKEN)
        args = [PYTHON, "-m", "connector", "sync", "--project", str(project.root), "--json"]
        fake.audiences.set_chaos(0.12, seed=SEED, stall_seconds=1.5)
        kills = 0
        for cycle in range(CYCLES):
            if cycle:
                next_id = _mutate(rows, rng, next_id)
            project.load(sorted(rows.values()))
            before = fake.audiences.stats["requests"]
            proc = subprocess.Popen(args, env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if cycle % 4 != 3:  # every 4th run is left to finish
                if rng.random() < 0.3:
                    time.sleep(rng.uniform(0.1, 1.0))  # start-up: lease, state tables, the count pass
                else:
                    deadline = time.monotonic() + 15
                    wanted = before + rng.randint(1, 12)
                    while fake.audiences.stats["requests"] < wanted and proc.poll() is None \
                            and time.monotonic() < deadline:
                        time.sleep(0.003)
                    time.sleep(rng.uniform(0, 0.05))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
            out, err = proc.communicate(timeout=120)
            assert proc.returncode in (0, 1, 3, -signal.SIGKILL), (out, err)
            assert AUDIENCE_TOKEN.encode() not in out + err
        assert kills >= CYCLES // 2
        fake.audiences.set_chaos(0)
        for _ in range(3):
            done = subprocess.run(args, env=env, cwd=str(REPO), capture_output=True, timeout=120)
            if done.returncode in (0, 3):
                break
        assert done.returncode in (0, 3), (done.stdout, done.stderr)
        final = sorted(rows.values())
        got, want = membership(fake), expected(final)
        diff = {t: (len(got.get(t, set()) - want.get(t, set())), len(want.get(t, set()) - got.get(t, set())))
                for t in set(got) | set(want)}
        assert got == want, f"(extra, missing) by id type: {diff}; {done.stdout!r}"
        assert fake.audiences.stats["created"] == 1
        sent = len(fake.audiences.requests(MAPPING_PATH))
        done = subprocess.run(args, env=env, cwd=str(REPO), capture_output=True, timeout=120)
        assert done.returncode in (0, 3) and len(fake.audiences.requests(MAPPING_PATH)) == sent
        assert project.query("select count(*) from tiktok_audience_deletes") == [(0,)]
