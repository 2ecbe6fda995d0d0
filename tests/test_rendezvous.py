"""The pipeline / tp rendezvous store listens only where asked, and a SIGKILLed driver orphans nothing.

Real children (``python -m splitrl pipeline generate`` / ``tp generate`` with tiny models); their
listening sockets are read with psutil from the child's own pid, and the driver is SIGKILLed
through its pid only.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from splitrl.dist import Endpoint, connect_store


def _listening(proc: psutil.Process) -> list[tuple[str, int]]:
    try:
        return [(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback


def _start_driver(argv: list[str], log):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "splitrl", *argv], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, env=env)


def _wait_up(driver: subprocess.Popen, n_children: int, timeout_s: float, log_path, *,
             children_listen: bool = False) -> list[psutil.Process]:
    """Wait until the driver listens and its ``n_children`` workers are started (``children_listen``: and
    listen themselves, i.e. formed their group and run); returns the workers."""
    proc = psutil.Process(driver.pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert driver.poll() is None, f"driver exited early:\n{log_path.read_text()[-2000:]}"
        kids = [k for k in proc.children() if _alive(k)]
        if len(kids) == n_children and _listening(proc) and (not children_listen or all(map(_listening, kids))):
            return kids
        time.sleep(0.1)
    raise AssertionError(f"driver not up after {timeout_s} s:\n{log_path.read_text()[-2000:]}")


def _kill_and_expect_orphans_gone(driver: subprocess.Popen, kids: list[psutil.Process], within_s: float) -> float:
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=10)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < within_s and any(_alive(k) for k in kids):
            time.sleep(0.1)
        left = [k.pid for k in kids if _alive(k)]
        assert not left, f"workers {left} still alive {within_s} s after their driver was SIGKILLed"
        return time.monotonic() - t0
    finally:
        for k in kids:  # never leave anything behind, even when the assertion failed
            if _alive(k):
                k.kill()


def test_a_hosted_store_listens_on_the_asked_host_only():
    store = connect_store(Endpoint("127.0.0.1", 0), host_store=True, timeout_s=5)
    mine = [a for a in _listening(psutil.Process()) if a[1] == store.port]
    assert mine == [("127.0.0.1", store.port)]
    client = connect_store(Endpoint("127.0.0.1", store.port), host_store=False, timeout_s=5)
    client.set("k", "v")
    assert store.get("k") == b"v"


@pytest.mark.timeout(240)
def test_pipeline_store_is_loopback_and_stages_exit_when_the_driver_is_killed(tmp_path):
    log_path = tmp_path / "driver.log"
    with open(log_path, "wb") as log:
        driver = _start_driver(["pipeline", "generate", "--model", "gpt2-tiny", "--cuts", "2,4", "--max-new-tokens",
                                "400", "--prompt", "hi", "--log-dir", str(tmp_path)], log)
    try:
        kids = _wait_up(driver, 3, 180, log_path, children_listen=True)  # killed mid-generation
        addrs = _listening(psutil.Process(driver.pid))
        assert addrs and all(_loopback(ip) for ip, _ in addrs), addrs  # not '*' / 0.0.0.0 / ::
        for k in kids:  # the stages' own (gloo) sockets too, once they listen
            assert all(_loopback(ip) for ip, _ in _listening(k)), _listening(k)
        _kill_and_expect_orphans_gone(driver, kids, within_s=15)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=10)


@pytest.mark.timeout(240)
def test_tp_store_is_loopback_and_workers_exit_when_the_driver_is_killed(tmp_path):
    log_path = tmp_path / "driver.log"
    with open(log_path, "wb") as log:
        driver = _start_driver(["tp", "generate", "--model", "llama-tiny", "--shards", "2", "--max-new-tokens", "400",
                                "--work-dir", str(tmp_path)], log)
    try:
        kids = _wait_up(driver, 2, 180, log_path)  # killed while the workers start up
        addrs = _listening(psutil.Process(driver.pid))
        assert addrs and all(_loopback(ip) for ip, _ in addrs), addrs
        _kill_and_expect_orphans_gone(driver, kids, within_s=15)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=10)
