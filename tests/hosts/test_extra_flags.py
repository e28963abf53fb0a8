"""Host tier: apiserver.extraFlags go to every master, masters[].extraFlags only to their own master (merged,
the master's value wins); each is set once next to the aggregation flags, and revert takes them out and
restores the values they replaced, byte for byte."""

from __future__ import annotations

import pytest

from tests.hosts.test_rollout import assert_flags_once, assert_only_flag_lines_changed

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(240)]

UID = "--requestheader-uid-headers"
MAXAGE = "--audit-log-maxage"  # 30 in both sample files


def values(host, flag: str) -> list[str]:
    return [a.partition("=")[2] for a in host.config_args() if a.partition("=")[0] == flag]


def test_per_master_extra_flag_lands_only_on_its_master_and_revert_removes_it(lab, make_stack):
    h1, h2 = lab.add_host("m1", "env-file"), lab.add_host("m2", "systemd-unit")
    before = {h.name: h.config_bytes() for h in (h1, h2)}
    assert values(h1, MAXAGE) == values(h2, MAXAGE) == ["30"]
    st = make_stack([h1, h2], apiserver={"readyTimeoutSeconds": 10, "extraFlags": {MAXAGE: 7}})
    st.config["masters"][1]["extraFlags"] = {UID: "X-Remote-Uid", MAXAGE: 14}
    commands = st.commands()
    out = st.runner.up(commands)
    assert out.ok, out.explain()

    f1, f2 = st.flags_for(h1), st.flags_for(h2)
    assert UID not in f1 and f1[MAXAGE] == "7"
    assert f2[UID] == "X-Remote-Uid" and f2[MAXAGE] == "14"
    for h, flags in ((h1, f1), (h2, f2)):
        assert_flags_once(h, flags)
        assert_only_flag_lines_changed(h, before[h.name], flags)
        running = h.running_flags()
        assert {k: running.get(k) for k in flags} == flags, h.name
    assert values(h1, UID) == [] and UID not in h1.running_flags()
    # the pre-existing value was replaced in place, not added a second time
    assert values(h1, MAXAGE) == ["7"] and values(h2, MAXAGE) == ["14"]
    assert f"{MAXAGE}=30 -> {MAXAGE}=14" in out["m2-flags"].stdout

    out = st.runner.destroy(commands)
    assert out.ok, out.explain()
    for h in (h1, h2):
        assert h.config_bytes() == before[h.name], f"{h.name}: revert did not restore the original file"
        running = h.running_flags()
        assert UID not in running and running[MAXAGE] == "30", h.name
        assert "--proxy-client-cert-file" not in running
