"""The Dagster UI as an analyst meets it after a run: `earlyhelp dev` on the run's output folder,
opened in headless Chromium. The run is there under its job's name, with its metadata; no
sign-up dialog; Ctrl-C stops it without a traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests.conftest import MONTH, chromium


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _page(browser: str, flags: list[str], url: str) -> str:
    return subprocess.run(
        [browser, *flags, "--window-size=1400,1600", "--virtual-time-budget=20000", "--dump-dom", url], capture_output=True, text=True, timeout=180,
    ).stdout


def test_the_ui_opens_on_the_run_with_its_metadata_and_stops_cleanly(village, listed, tmp_path):
    """`listed`: the village run by `run_pipeline` for August and September, recorded in its folder's instance."""
    browser, flags = chromium(tmp_path)
    out = listed
    cli = [sys.executable, "-m", "pipelines.cli"]
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    dev = subprocess.Popen(
        [*cli, "dev", "--landing", str(village), "--out", str(out), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise AssertionError("the Dagster UI did not start within two minutes")
        runs = _page(browser, flags, f"{base}/runs")
        assert "monthly_run" in runs and "__ephemeral_asset_job__" not in runs, "the run is the job the schedule knows"
        assert f"partition: {MONTH}" in runs
        asset = _page(browser, flags, f"{base}/assets/locality_lists?view=partitions&partition={MONTH}")
        for entry in ("families_listed", "families_by_locality", "eligible_without_locality"):
            assert entry in asset, f"the run's metadata ({entry}) is shown"
        query = json.dumps({"query": "{ shouldShowNux }"}).encode()
        request = urllib.request.Request(f"{base}/graphql", data=query, headers={"Content-Type": "application/json"})
        assert json.loads(urllib.request.urlopen(request, timeout=30).read())["data"]["shouldShowNux"] is False, "no sign-up dialog"
    finally:
        os.killpg(dev.pid, signal.SIGINT)  # Ctrl-C in the terminal reaches the whole process group
        said, _ = dev.communicate(timeout=90)
    assert "the Dagster UI has stopped" in said and "Traceback" not in said, said[-2000:]
